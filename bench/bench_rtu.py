"""RTU bus time per poll cycle, measured over a pty pair against the wire time it stands for.

The simulated inverter, battery and meter sit on units 1-3 of one line: a real pymodbus RTU
server on a pty, ``Bus.serial`` on the other end, a relay between them counting every byte
(tests/support/rtu_line.py). Each device is read the way the daemon reads it (discovery,
mapping, ``ModbusDevice.poll`` with every point due, the bus gap of 25 ms between requests).

A pty has no baud rate: the bytes cross at once. So the table puts the measured wall time (our
software and the simulator's, at both ends, plus the bus gaps) next to the time those bytes
take on a real line at 9600 and 19200 baud: bytes × 11 bits / baud plus a 3.5-character
silence after every frame (bench_bus.wire_seconds). The baud rate also reaches the read planner
(``CostModel.rtu``), so requests per cycle are counted at each rate.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

from bench.bench_bus import wire_seconds
from bench.table import print_table

CYCLES = 40
GAP = 0.025  # the configuration's default gap_ms
UNITS = {"inverter": 1, "battery": 2, "meter": 3}


async def _measure(baud: int) -> list[list[object]]:
    from drivers.device import ModbusDevice
    from drivers.sim.devices import DeviceKind
    from drivers.sim.server import SimHome, SimulatedDevice
    from drivers.sunspec.discovery import discover, read_model
    from drivers.sunspec.mapping import map_points
    from drivers.transport import Bus
    from tests.support.rtu_line import rtu_line

    home = SimHome(wall=lambda: 0.0)
    sims = [SimulatedDevice(DeviceKind(name), home, unit=unit) for name, unit in UNITS.items()]
    async with rtu_line(sims) as relay, \
            Bus.serial(relay.client_path, baudrate=baud, timeout=2.0, gap=GAP) as bus:
        devices = []
        for name, sim in zip(UNITS, sims, strict=True):
            found = await discover(bus, unit=sim.unit)
            blocks = {m.start: await read_model(bus, m, unit=sim.unit) for m in found.models}
            devices.append(ModbusDevice(name=name, reader=bus, unit=sim.unit,
                                        points=map_points(found, blocks),
                                        identity=found.identity, cost=bus.cost_model))

        clock = itertools.count(1)

        async def cycles(polled: list[ModbusDevice], label: str) -> list[object]:
            times, requests, moved = [], bus.requests, sum(relay.bytes.values())
            for _ in range(CYCLES):
                await asyncio.sleep(GAP)  # a line at rest: the first request waits no gap
                now = next(clock) * 1e6  # every point due
                started = time.perf_counter()
                for device in polled:
                    await device.poll(now)
                times.append(time.perf_counter() - started)
            per_cycle = (bus.requests - requests) / CYCLES
            size = (sum(relay.bytes.values()) - moved) / CYCLES
            wire = wire_seconds(round(size), round(per_cycle), baud)
            gaps = GAP * (per_cycle - 1)
            median = statistics.median(times)
            return [label, baud, f"{per_cycle:g}", round(size), f"{wire * 1000:.1f}",
                    f"{gaps * 1000:.0f}", f"{median * 1000:.1f}",
                    f"{statistics.quantiles(times, n=20)[18] * 1000:.1f}",
                    f"{(median - gaps) * 1000:.1f}", f"{(wire + median) * 1000:.0f}"]

        rows = [await cycles([d], d.name) for d in devices]
        rows.append(await cycles(devices, "whole line (all three)"))
        return rows


def main() -> None:
    rows = [row for baud in (9600, 19200) for row in asyncio.run(_measure(baud))]
    print(f"RTU poll cycle over a pty pair, every point due, {CYCLES} cycles, bus gap "
          f"{GAP * 1000:.0f} ms; wire time is what the bytes take at the baud rate:\n")
    print_table(["device", "baud", "requests / cycle", "bytes / cycle", "wire ms at baud",
                 "bus gaps ms", "pty cycle ms (median)", "pty cycle ms (p95)",
                 "pty ms less gaps (software, both ends)",
                 "real line ms (wire + pty median)"], rows)


if __name__ == "__main__":
    main()
