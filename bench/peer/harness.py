"""One measured run: simulated SunSpec inverters and one subject as a child process: the real
daemon (``hems-agent run``), a bare pymodbus client (both in bench/peer/real.py), or the
ThingsBoard IoT Gateway with a plain-TCP mosquitto and a ThingsBoard stand-in on it.

Run by bench/bench_peer.py inside ``unshare -n`` (loopback only: the peer's update check at
start-up goes nowhere). Prints one JSON object on its last line of output.

The stand-in answers the gateway's ``getSessionLimits`` RPC with empty rate limits (without an
answer the gateway publishes nothing) and counts what is published: messages, and readings
(values in telemetry messages).
"""

from __future__ import annotations

import argparse
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

import aiomqtt

from bench.peer.measure import CpuMeter, memory_mb
from bench.peer.real import measure_bare, measure_daemon, spawn
from bench.peer.tb_config import write_config
from drivers.sim.devices import DeviceKind
from drivers.sim.server import SimHome, SimulatedDevice, SimulatorServer

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mosquitto(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "log_type error\n", encoding="utf-8")
    binary = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else "mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


class StandIn:
    """Answers getSessionLimits; counts messages and telemetry values published by the peer."""

    def __init__(self) -> None:
        self.messages = 0
        self.values = 0
        self.rpc_answered = 0

    async def run(self, port: int, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="tb-stand-in") as client:
            await client.subscribe("v1/#", qos=1)
            ready.set()
            async for message in client.messages:
                await self._on(client, message.topic.value, message.payload)

    async def _on(self, client: aiomqtt.Client, topic: str, payload: Any) -> None:
        if topic.startswith("v1/devices/me/rpc/response/"):
            return  # our own answer
        self.messages += 1
        if topic.startswith("v1/devices/me/rpc/request/"):
            request_id = topic.rsplit("/", 1)[1]
            await client.publish(f"v1/devices/me/rpc/response/{request_id}",
                                 json.dumps({"rateLimits": {}}), qos=1)
            self.rpc_answered += 1
        elif topic == "v1/gateway/telemetry":
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                body = json.loads(bytes(payload))
                self.values += sum(len(entry.get("values", {})) for entries in body.values()
                                   for entry in entries)


def tb_command(args: argparse.Namespace, work: Path, mqtt: int,
               ports: list[int]) -> tuple[list[str], Path, dict[str, str]]:
    conf = write_config(work / "tb", mqtt_port=mqtt, ports=ports, layout=args.layout,
                        max_registers=args.max_registers)
    env = dict(os.environ) | {"TB_GW_CONFIG_DIR": str(conf)}
    code = "from thingsboard_gateway.tb_gateway import daemon; daemon()"
    return [args.tb_python, "-c", code], conf, env


def counters(servers: list[SimulatorServer], standin: StandIn) -> dict[str, float]:
    return {"requests": sum(s.requests for s in servers), "readings": standin.values,
            "messages": standin.messages}


async def started(args: argparse.Namespace, standin: StandIn,
                  proc: subprocess.Popen[bytes]) -> float:
    """Wait until the gateway publishes readings (or the start-up limit passes)."""
    begin = time.monotonic()
    while time.monotonic() - begin < args.startup:
        if proc.poll() is not None:
            raise RuntimeError(f"the subject exited with {proc.returncode} during start-up")
        if standin.values or not args.devices:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(args.settle)
    return time.monotonic() - begin


async def measure_tb(args: argparse.Namespace, work: Path,
                     servers: list[SimulatorServer]) -> dict[str, Any]:
    broker, mqtt = start_mosquitto(work)
    standin, ready = StandIn(), asyncio.Event()
    standin_task = asyncio.create_task(standin.run(mqtt, ready))
    proc: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.wait_for(ready.wait(), 10)
        command, cwd, env = tb_command(args, work, mqtt, [s.port for s in servers])
        proc = spawn(command, work / "subject.log", env=env, cwd=cwd)
        startup = await started(args, standin, proc)
        before, meter, t0 = counters(servers, standin), CpuMeter(proc.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu, after, elapsed = meter.read(), counters(servers, standin), time.monotonic() - t0
        result: dict[str, Any] = {k: after[k] - before[k] for k in after}
        return result | cpu | {"seconds": elapsed, "startup_s": startup,
                         "rpc_answered": standin.rpc_answered} | memory_mb(proc.pid)
    finally:
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        standin_task.cancel()
        await asyncio.gather(standin_task, return_exceptions=True)
        broker.terminate()
        broker.wait(5)


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    home = SimHome()
    servers = [SimulatorServer([SimulatedDevice(DeviceKind.INVERTER, home)], seed=n)
               for n in range(args.devices)]
    for server in servers:
        await server.start()
    subject = {"daemon": measure_daemon, "bare": measure_bare, "tb": measure_tb}[args.subject]
    try:
        return await subject(args, work, servers)
    finally:
        for server in servers:
            await server.stop()


def main() -> int:
    p = argparse.ArgumentParser(prog="bench.peer.harness")
    p.add_argument("--subject", choices=["daemon", "bare", "tb"], required=True)
    p.add_argument("--layout", choices=["per-point", "range"], default="per-point")
    p.add_argument("--max-registers", type=int, default=16)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--startup", type=float, default=60.0)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--tb-python", default=str(ROOT / ".bench-venvs/tb/bin/python"))
    p.add_argument("--keep", type=Path, help="keep the work directory here (for the logs)")
    p.add_argument("--profile", type=Path,
                   help="daemon only: py-spy samples over the window to this file, raw format")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            result = asyncio.run(measure(args, work))
        except Exception as exc:
            log = work / "subject.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            result = {"error": f"{type(exc).__name__}: {exc}", "log": tail}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
