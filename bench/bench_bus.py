"""Against the physical limit: Modbus requests per poll cycle against the fewest possible, and
RTU bus time per cycle at 9600 and 19200 baud against the bytes that must cross the bus.

Bytes are computed from the plan (drivers.planner), not measured: a read of n registers is an
8-byte request and a (5 + 2n)-byte response, 11 bits per character (8 data, parity or second
stop, start, stop), and a 3.5-character silence after each frame. The lower bound is the fewest
requests the spans allow (gaps free) each with its frame overhead, plus 2 bytes per register
that holds a needed value, and no gap registers at all: no plan can send less. Device
turnaround (the time a device takes to answer, typically 5-50 ms) is shown separately.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bench.bench_planner import Spans, sparse_meter, sungrow, sunspec_103
from bench.table import print_table
from drivers.planner import CostModel, blocks, plan

_REQUEST, _RESPONSE, _SILENCE, _BITS = 8, 5, 3.5, 11
TURNAROUND = 0.020


class _Image:
    """A register reader over a simulated device's image (no sockets: the plan is the point)."""

    def __init__(self, base: int, registers: list[int]) -> None:
        self.base, self.registers = base, registers

    async def read_holding(self, address: int, count: int, *, unit: int) -> list[int]:
        from drivers.errors import DeviceProtocolError

        start = address - self.base
        if start < 0 or start + count > len(self.registers):
            raise DeviceProtocolError("illegal data address", exception_code=2)
        return self.registers[start:start + count]


def mapped(kind: str) -> Callable[[], Spans]:
    """Spans of the points our mapping reads from a simulated SunSpec device, all due."""
    def spans() -> Spans:
        from drivers.sim.devices import DeviceKind
        from drivers.sim.server import SimHome, SimulatedDevice
        from drivers.sunspec.discovery import discover, read_model
        from drivers.sunspec.mapping import map_points

        device = SimulatedDevice(DeviceKind(kind), SimHome())
        reader = _Image(device.image.base, list(device.image.registers))

        async def find() -> Spans:
            found = await discover(reader, unit=1)
            models = {m.start: await read_model(reader, m, unit=1) for m in found.models}
            return [s for p in map_points(found, models) for s in p.spans()]

        return asyncio.run(find())
    return spans


POINT_SETS: dict[str, Callable[[], Spans]] = {
    "simulated inverter, mapped points (103+160)": mapped("inverter"),
    "simulated battery, mapped points (802)": mapped("battery"),
    "simulated meter, mapped points (203)": mapped("meter"),
    "SunSpec 103, every point + SFs": sunspec_103,
    "Sungrow SH profile": sungrow,
    "sparse meter (10 float32)": sparse_meter,
}


def frame_bytes(counts: list[int]) -> int:
    return sum(_REQUEST + _RESPONSE + 2 * n for n in counts)


def wire_seconds(byte_count: int, requests: int, baud: int) -> float:
    """Time on the wire: characters plus the 3.5-character silences after both frames."""
    return (byte_count + 2 * _SILENCE * requests) * _BITS / baud


def bus_rows(label: str, spans: Spans, baud: int) -> list[object]:
    result = plan(spans, CostModel.rtu(baud))
    needed = sum(end - start for start, end in blocks(spans))
    ours_bytes = frame_bytes([r.count for r in result.requests])
    floor_bytes = result.minimum * (_REQUEST + _RESPONSE) + 2 * needed
    ours = wire_seconds(ours_bytes, len(result.requests), baud)
    floor = wire_seconds(floor_bytes, result.minimum, baud)
    naive = wire_seconds(frame_bytes([c for _, c in set(spans)]), result.naive, baud)
    return [label, baud, len(result.requests), result.minimum, result.naive, ours_bytes,
            floor_bytes, f"{ours * 1000:.1f}", f"{floor * 1000:.1f}", f"{ours / floor:.2f}",
            f"{(ours + TURNAROUND * len(result.requests)) * 1000:.0f}",
            f"{(naive + TURNAROUND * result.naive) * 1000:.0f}"]


def main() -> None:
    rows = [bus_rows(label, make(), baud) for label, make in POINT_SETS.items()
            for baud in (9600, 19200)]
    print("RTU poll cycle, all points due, plan from drivers.planner (RTU cost model, 20 ms "
          "turnaround):\n")
    print_table(["point set", "baud", "requests (ours)", "minimum", "one per point",
                 "bus bytes (ours)", "bus bytes (lower bound)", "wire ms (ours)",
                 "wire ms (lower bound)", "ours / bound", "cycle ms with turnaround (ours)",
                 "cycle ms with turnaround (one per point)"], rows)


if __name__ == "__main__":
    main()
