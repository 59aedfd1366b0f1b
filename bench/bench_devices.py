"""Poll cycles of the three simulated SunSpec devices, read the way the daemon reads them.

For each device (inverter 1+103+120+160, battery 1+802, meter 1+203): the canonical points
after discovery and mapping, Modbus requests per full cycle (ours, the lower bound, one request
per point), and the measured cycle time on loopback (median and 95th percentile of many
cycles, counted at the simulator too).
"""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.table import print_table

CYCLES = 200


async def _measure() -> list[list[object]]:
    from drivers.device import ModbusDevice
    from drivers.planner import CostModel, plan
    from drivers.sim.server import run_site
    from drivers.sunspec.discovery import discover, read_model
    from drivers.sunspec.mapping import map_points
    from drivers.transport import Bus

    rows: list[list[object]] = []
    async with run_site(speed=60.0) as site:
        for name, server in (("inverter", site.inverter), ("battery", site.battery),
                             ("meter", site.meter)):
            async with Bus.tcp("127.0.0.1", server.port, timeout=2.0, name=name) as bus:
                found = await discover(bus, unit=1)
                blocks = {m.start: await read_model(bus, m, unit=1) for m in found.models}
                points = map_points(found, blocks)
                full = plan([s for p in points for s in p.spans()], CostModel.tcp())
                times = []
                before = server.requests
                for _ in range(CYCLES):
                    device = ModbusDevice(name=name, reader=bus, unit=1, points=points,
                                          identity=found.identity, cost=bus.cost_model)
                    started = time.perf_counter()
                    await device.poll(time.monotonic())
                    times.append(time.perf_counter() - started)
                served = (server.requests - before) / CYCLES
                rows.append([name, "+".join(str(m.id) for m in found.models), len(points),
                             len(full.requests), full.minimum, full.naive, served,
                             statistics.median(times) * 1000,
                             statistics.quantiles(times, n=20)[18] * 1000])
    return rows


def main() -> None:
    rows = asyncio.run(_measure())
    print(f"Full poll cycle (every point due), {CYCLES} cycles per device, Modbus TCP on "
          "loopback:\n")
    print_table(["device", "models", "points", "requests (ours)", "minimum", "one per point",
                 "requests seen by simulator", "cycle ms (median)", "cycle ms (p95)"], rows)
