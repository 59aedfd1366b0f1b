"""The whole daemon's cost: CPU seconds per minute and RSS of `hems-agent run` polling ten
simulated SunSpec inverters every second with its household page running, side by side with a
bare pymodbus client reading the same register blocks (the floor for Python), an idle daemon
with no devices, and the time from exec to systemd's READY=1.

Processes: this one runs the ten simulator servers and a real mosquitto (neither is counted);
the daemon, the idle daemon and the bare client are subprocesses measured from /proc.
``python -m bench.bench_daemon baseline SECONDS JSON`` is the bare client itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.peer.measure import cpu_seconds, rss_mb
from bench.table import print_table

DEVICES = 10
WARM_UP = 15.0
MEASURE = 60.0
SITE = "s-bench-daemon"


def _private_mb(pid: int) -> float:
    """Memory only this process holds (USS): RSS less the shared library pages it maps."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


async def _blocks(ports: list[int]) -> list[dict[str, Any]]:
    """Per device, the register blocks the daemon reads every second (its own planner)."""
    from agent.config.model import TcpDevice
    from agent.sources.modbus import build_device
    from drivers.planner import plan
    from drivers.transport import Bus

    found = []
    for n, port in enumerate(ports):
        config = TcpDevice(name=f"inv{n}", host="127.0.0.1", port=port, poll_interval=1.0)
        async with Bus.tcp("127.0.0.1", port, timeout=2.0) as bus:
            device = await build_device(config, bus)
            fast = [p for p in device.points if p.interval <= 1.0]
            requests = []
            for function in sorted({p.function for p in fast}):
                spans = [s for p in fast if p.function == function for s in p.spans()]
                requests += [(function, r.address, r.count)
                             for r in plan(spans, bus.cost_model).requests]
        found.append({"port": port, "requests": requests, "points": len(fast)})
    return found


def _notify_socket(directory: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "notify"))
    sock.setblocking(False)
    return sock


async def _ready(sock: socket.socket, started: float, limit: float = 60.0) -> float:
    """Seconds from ``started`` to READY=1 on ``sock``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(limit):
        while True:
            data = await loop.sock_recv(sock, 4096)
            if b"READY=1" in data.split(b"\n"):
                return time.monotonic() - started


async def _drain(sock: socket.socket) -> None:
    """Keep reading, as systemd does (STATUS lines come every tick)."""
    loop = asyncio.get_running_loop()
    while True:
        await loop.sock_recv(sock, 4096)


def _site(work: Path, broker: Any, name: str, ports: list[int]) -> tuple[Path, int]:
    from tests.conftest import free_port
    from tests.e2e.daemon_helpers import page_toml, set_metrics_listen
    from tests.support.site import make_site

    devices: list[dict[str, object]] = [
        {"name": f"inv{n}", "host": "127.0.0.1", "port": port, "unit": 1,
         "poll_interval": 1.0, "timeout": 1.0} for n, port in enumerate(ports)]
    files = make_site(work / name, broker, site_id=SITE, devices=devices,
                      extra=page_toml(work / name, free_port()))
    metrics_port = free_port()
    set_metrics_listen(files, metrics_port)
    return files.config, metrics_port


def _spawn_daemon(config: Path, notify: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config),
             "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "NOTIFY_SOCKET": str(notify)})


def _spawn_bare(blocks: list[dict[str, Any]]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.bench_daemon", "baseline",
                             str(WARM_UP + MEASURE + 5), json.dumps(blocks)])


async def _readings(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
    body = (await reader.read()).decode()
    writer.close()
    for line in body.splitlines():
        if line.startswith("hems_readings_total "):
            return float(line.split()[1])
    return 0.0


async def _run(work: Path) -> list[list[object]]:
    from drivers.sim.devices import DeviceKind
    from drivers.sim.server import SimHome, SimulatedDevice, SimulatorServer
    from tests.support.mosquitto import Mosquitto

    broker = Mosquitto(work / "broker", {SITE: f"pw-{SITE}", "receiver": "pw-receiver"})
    broker.start()
    home = SimHome()
    servers = [SimulatorServer([SimulatedDevice(DeviceKind.INVERTER, home)], seed=n)
               for n in range(DEVICES)]
    procs: list[subprocess.Popen[bytes]] = []
    drains: list[asyncio.Task[None]] = []
    try:
        for server in servers:
            await server.start()
        ports = [s.port for s in servers]
        blocks = await _blocks(ports)
        busy, busy_metrics = _site(work, broker, "busy", ports)
        idle, _ = _site(work, broker, "idle", [])
        sockets = {n: _notify_socket(work / n) for n in ("busy", "idle")}
        t0 = time.monotonic()
        daemon = _spawn_daemon(busy, work / "busy" / "notify", work / "busy.log")
        quiet = _spawn_daemon(idle, work / "idle" / "notify", work / "idle.log")
        procs += [daemon, quiet]
        startup = await asyncio.gather(_ready(sockets["busy"], t0), _ready(sockets["idle"], t0))
        drains += [asyncio.create_task(_drain(sock)) for sock in sockets.values()]
        bare = _spawn_bare(blocks)
        procs.append(bare)
        await asyncio.sleep(WARM_UP)
        pids = (daemon.pid, bare.pid, quiet.pid)
        cpu0, read0, w0 = [cpu_seconds(p) for p in pids], await _readings(busy_metrics), \
            time.monotonic()
        await asyncio.sleep(MEASURE)
        cpu1, read1, minutes = [cpu_seconds(p) for p in pids], await _readings(busy_metrics), \
            (time.monotonic() - w0) / 60
        rss = [rss_mb(p) for p in pids]
        private = [_private_mb(p) for p in pids]
        per_cycle = sum(b["points"] for b in blocks)
        readings = [read1 - read0, per_cycle * 60 * minutes, 0.0]
        requests = sum(len(b["requests"]) for b in blocks)
    finally:
        for task in drains:
            task.cancel()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        for server in servers:
            await server.stop()
        broker.stop()
    cpu = [(b - a) / minutes for a, b in zip(cpu0, cpu1, strict=True)]
    labels = (f"hems-agent run, {DEVICES} devices, page on",
              f"bare pymodbus client, same {requests} requests/s", "hems-agent run, no devices")
    rows: list[list[object]] = []
    for i, label in enumerate(labels):
        per_reading = f"{cpu[i] * minutes / readings[i] * 1e6:,.0f}" if readings[i] else "-"
        rows.append([label, f"{cpu[i]:.3f}", f"{cpu[i] / cpu[1]:.1f}x",
                     f"{readings[i] / minutes:,.0f}", per_reading, f"{rss[i]:.1f}",
                     f"{private[i]:.1f}", f"{startup[0]:.2f}" if i == 0 else
                     f"{startup[1]:.2f}" if i == 2 else "-"])
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hems-bench-", dir="/tmp") as name:
        rows = asyncio.run(_run(Path(name)))
    print(f"Steady state over {MEASURE:.0f} s after {WARM_UP:.0f} s of warm-up; each device "
          "polled every second. Goal: < 0.6 CPU s/min and < 60 MB RSS with the page on.\n")
    print_table(["process", "CPU s/min", "vs bare", "readings/min", "CPU µs/reading",
                 "RSS MB", "private MB", "start to READY s"], rows)


async def _baseline(seconds: float, blocks: list[dict[str, Any]]) -> None:
    """The floor: one plain pymodbus client per device reading its blocks every second."""
    from pymodbus.client import AsyncModbusTcpClient

    clients = [AsyncModbusTcpClient("127.0.0.1", port=b["port"], timeout=1.0, retries=0)
               for b in blocks]
    for client in clients:
        await client.connect()
    loop = asyncio.get_running_loop()
    end, tick = loop.time() + seconds, loop.time()
    while loop.time() < end:
        for client, device in zip(clients, blocks, strict=True):
            for function, address, count in device["requests"]:
                read = (client.read_holding_registers if function == "holding"
                        else client.read_input_registers)
                await read(address, count=count, device_id=1)
        tick += 1.0
        await asyncio.sleep(max(0.0, tick - loop.time()))
    for client in clients:
        client.close()


if __name__ == "__main__" and sys.argv[1:2] == ["baseline"]:
    asyncio.run(_baseline(float(sys.argv[2]), json.loads(sys.argv[3])))
