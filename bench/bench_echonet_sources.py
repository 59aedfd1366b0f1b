"""The daemon's ECHONET Lite pollers against the loopback emulator (PV, battery, meter).

Time from start to each object's first reading (multicast discovery for the PV, a Get of the
node's instance list at the meter's address, the battery by full EOJ), and the gaps between
the battery's polls (interval 0.5 s) while the meter's node answers promptly, and while it
takes 2 s per reply (a slow gateway): one shared client, so the slow node must not stretch them.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Sequence

from bench.table import print_table

RUN_S = 6.0
INTERVAL = 0.5


async def _run(slow_meter: bool) -> tuple[dict[str, float], list[float], int]:
    from agent.config.echonet import EchonetDeviceConfig, EchonetSettings
    from agent.demo.echonet import start_echonet_site
    from agent.host.clock import TrustedClock
    from agent.host.metrics import Metrics
    from agent.sources.echonet import run_echonet
    from drivers.models import Reading

    site, _ = await start_echonet_site()
    site.meter.delay = 2.0 if slow_meter else 0.0
    first: dict[str, float] = {}
    battery: list[float] = []
    meter_reads = 0
    start = time.monotonic()

    def stamp(taken: float, readings: Sequence[Reading]) -> None:
        nonlocal meter_reads
        for r in readings:
            first.setdefault(r.device, time.monotonic() - start)
        if any(r.device == "battery" and r.point == "battery.power" for r in readings):
            battery.append(time.monotonic())
        meter_reads += any(r.point == "grid.power" for r in readings)

    devices = [EchonetDeviceConfig(name="pv", eoj="0279", poll_interval=INTERVAL),
               EchonetDeviceConfig(name="battery", eoj="027D02", address=site.gateway.address,
                                   poll_interval=INTERVAL),
               EchonetDeviceConfig(name="meter", eoj="0288", address=site.meter.address,
                                   poll_interval=INTERVAL)]
    settings = EchonetSettings(interface=site.interface, port=site.port, discovery_wait=0.3,
                               timeout=3.0, retries=0)
    stop = asyncio.Event()
    task = asyncio.create_task(run_echonet(settings, devices, stamp,
                                           clock=TrustedClock(lambda: True),
                                           metrics=Metrics(), stop=stop))
    await asyncio.sleep(RUN_S)
    stop.set()
    await task
    await site.aclose()
    gaps = [b - a for a, b in itertools.pairwise(battery)]
    return first, gaps, meter_reads


def _q(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    rows: list[list[object]] = []
    for slow in (False, True):
        first, gaps, meter_reads = asyncio.run(_run(slow))
        rows.append(["2 s per reply" if slow else "prompt", first.get("pv", float("nan")),
                     first.get("battery", float("nan")), first.get("meter", float("nan")),
                     len(gaps), _q(gaps, 50), _q(gaps, 95), meter_reads])
    print(f"ECHONET Lite pollers, {RUN_S:.0f} s run, power points every {INTERVAL} s "
          "(times in seconds)\n")
    print_table(["meter node", "first pv", "first battery", "first meter", "battery polls",
                 "battery gap p50", "battery gap p95", "meter power reads"], rows)


if __name__ == "__main__":
    main()
