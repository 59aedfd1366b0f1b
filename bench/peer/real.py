"""The two subjects of the peer bench that are not the ThingsBoard gateway: the real daemon and
a bare pymodbus client.

- ``daemon``: ``hems-agent run`` (the installed console script) with a configuration provisioned
  here as the tests provision one (tests/support/site.py: device key, recipient keys, broker
  password; a TLS mosquitto with passwords and ACL from tests/support/mosquitto.py), the
  household page on, the factory grants, every device polled every second. The bench listens on
  a NOTIFY_SOCKET for READY=1 (time from spawn), then logs in to the page over HTTP and makes
  one consent change before anything is measured. Readings and releases come from its
  /metrics.
- ``bare``: one plain pymodbus client per device reading, every second, the very register
  blocks the daemon's planner reads (bench/bench_daemon.py ``baseline``); nothing decoded. Its
  readings are counted as the daemon's points for the same requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.peer.measure import CpuMeter, memory_mb
from drivers.sim.server import SimulatorServer

SITE = "s-bench-peer"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _until(check: Callable[[], Awaitable[bool]], proc: subprocess.Popen[Any],
                 limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        if proc.poll() is not None:
            raise RuntimeError(f"the subject exited with {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {limit:.0f} s")
        await asyncio.sleep(0.2)


async def _metrics(port: int) -> dict[str, float]:
    """Every unlabelled series of the daemon's /metrics, labelled ones summed by name."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    body = (await reader.read()).decode()
    writer.close()
    values: dict[str, float] = {}
    for line in body.partition("\r\n\r\n")[2].splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            name = series.partition("{")[0]
            with contextlib.suppress(ValueError):
                values[name] = values.get(name, 0.0) + float(value)
    return values


async def _ready(sock: socket.socket, proc: subprocess.Popen[Any], limit: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + limit
    while True:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.5)
        except TimeoutError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited with {proc.returncode} before READY=1") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"no READY=1 within {limit:.0f} s") from None
            continue
        if b"READY=1" in data.split(b"\n"):
            return


async def _drain(sock: socket.socket) -> None:
    """Keep reading the notify socket, as systemd does (a STATUS line comes every tick)."""
    loop = asyncio.get_running_loop()
    while True:
        await loop.sock_recv(sock, 4096)


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a subject, its output to ``log`` (Popen returns at once; nothing blocks)."""
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def _daemon_command(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("hems-agent")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]
    return [*head, "run", "--config", str(config), "--log-level", "warning"]


async def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
    except TimeoutError:
        proc.kill()
        proc.wait()


async def _window(args: argparse.Namespace, pid: int, servers: list[SimulatorServer],
                  counts: Callable[[], Awaitable[tuple[float, float]]]) -> dict[str, Any]:
    """CPU, Modbus requests, readings and messages over the measured window."""
    async def sample() -> dict[str, float]:
        readings, messages = await counts()
        return {"requests": sum(s.requests for s in servers), "readings": readings,
                "messages": messages}

    before, meter, t0 = await sample(), CpuMeter(pid), time.monotonic()
    await asyncio.sleep(args.seconds)
    cpu, after, elapsed = meter.read(), await sample(), time.monotonic() - t0
    result: dict[str, Any] = {k: after[k] - before[k] for k in after}
    return result | cpu | {"seconds": elapsed} | memory_mb(pid)


async def measure_daemon(args: argparse.Namespace, work: Path,
                         servers: list[SimulatorServer]) -> dict[str, Any]:
    from tests.e2e.daemon_helpers import Page, page_toml, set_metrics_listen
    from tests.support.mosquitto import Mosquitto
    from tests.support.site import broker_users, make_site

    broker = Mosquitto(work / "broker", broker_users(SITE))
    broker.start()
    proc: subprocess.Popen[bytes] | None = None
    drain: asyncio.Task[None] | None = None
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        devices: list[dict[str, object]] = [
            {"name": f"inverter-{n}", "host": "127.0.0.1", "port": s.port, "unit": 1,
             "poll_interval": 1.0, "timeout": 1.0} for n, s in enumerate(servers)]
        page_port, metrics_port = _free_port(), _free_port()
        files = make_site(work / "site", broker, site_id=SITE, devices=devices,
                          extra=page_toml(work / "site", page_port))
        set_metrics_listen(files, metrics_port)
        notify.bind(str(work / "notify"))
        notify.setblocking(False)
        started = time.monotonic()
        proc = spawn(_daemon_command(files.config), work / "subject.log",
                     env={**os.environ, "NOTIFY_SOCKET": str(work / "notify")})
        await _ready(notify, proc, args.startup)
        ready_s = time.monotonic() - started
        drain = asyncio.create_task(_drain(notify))

        async def counts() -> tuple[float, float]:
            found = await _metrics(metrics_port)
            return found.get("hems_readings_total", 0.0), found.get("hems_releases_total", 0.0)

        async def flowing() -> bool:
            return not servers or (await counts())[0] > 0

        await _until(flowing, proc, args.startup, "readings")
        before_login = memory_mb(proc.pid)
        async with Page(page_port) as page:  # a household login and a consent change
            await page.login()
            await page.grant("improvement", "company", "off")
        consent = (await _metrics(metrics_port)).get("hems_consent_changes_total", 0.0)
        await asyncio.sleep(args.settle)
        if args.profile:
            return await _profiled(args, proc.pid)
        result = await _window(args, proc.pid, servers, counts)
        return result | {"ready_s": ready_s, "consent_changes": consent,
                         "hwm_before_login_mb": before_login["hwm_mb"],
                         "rss_before_login_mb": before_login["rss_mb"]}
    finally:
        if drain is not None:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
        if proc is not None:
            await _stop(proc)
        notify.close()
        broker.stop()


async def _profiled(args: argparse.Namespace, pid: int) -> dict[str, Any]:
    """py-spy samples of the daemon over the window, written to ``args.profile``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    done = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
        "--rate", str(args.profile_rate), "--format", "raw", "--output", str(args.profile),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await done.communicate()
    return {"profile": str(args.profile), "py_spy_exit": done.returncode,
            "py_spy_stderr": err.decode(errors="replace")[-300:]}


async def measure_bare(args: argparse.Namespace, work: Path,
                       servers: list[SimulatorServer]) -> dict[str, Any]:
    from bench.bench_daemon import _blocks

    blocks = await _blocks([s.port for s in servers])
    per_cycle = sum(len(b["requests"]) for b in blocks)
    points = sum(b["points"] for b in blocks)
    lifetime = args.startup + args.settle + args.seconds + 30
    proc = spawn([sys.executable, "-m", "bench.bench_daemon", "baseline", str(lifetime),
                  json.dumps(blocks)], work / "subject.log")
    try:
        begin = sum(s.requests for s in servers)

        async def flowing() -> bool:
            return sum(s.requests for s in servers) > begin

        await _until(flowing, proc, args.startup, "requests")
        await asyncio.sleep(args.settle)

        async def counts() -> tuple[float, float]:
            return sum(s.requests for s in servers) / per_cycle * points, 0.0

        return await _window(args, proc.pid, servers, counts)
    finally:
        await _stop(proc)
