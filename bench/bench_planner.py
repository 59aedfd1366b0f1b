"""Read planning: requests per poll cycle (ours vs the lower bound vs one per point), registers
transferred and estimated bus time under the TCP and RTU cost models; then measured poll-cycle
time against a pymodbus server on loopback."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

from bench.table import print_table
from drivers.device import ModbusDevice
from drivers.models import DeviceIdentity, PointKind
from drivers.planner import CostModel, plan
from drivers.profiles import builtin
from drivers.registers import RegisterImage, RegisterPoint
from drivers.transport import Bus

Spans = list[tuple[int, int]]

# SunSpec model 103 (three-phase inverter) at 40070: (offset, count, scale-factor offset) of
# each point after the 2-register model header; None where the point has no scale factor.
_M103 = [(0, 1, 4), (1, 1, 4), (2, 1, 4), (3, 1, 4), (5, 1, 11), (6, 1, 11), (7, 1, 11),
         (8, 1, 11), (9, 1, 11), (10, 1, 11), (12, 1, 13), (14, 1, 15), (16, 1, 17),
         (18, 1, 19), (20, 1, 21), (22, 2, 24), (25, 1, 26), (27, 1, 28), (29, 1, 30),
         (31, 1, 35), (32, 1, 35), (33, 1, 35), (34, 1, 35), (36, 1, None), (37, 1, None),
         (38, 2, None), (40, 2, None), (42, 2, None), (44, 2, None), (46, 2, None),
         (48, 2, None)]


def sunspec_103() -> Spans:
    base = 40072
    spans: Spans = []
    for offset, count, sf in _M103:
        spans.append((base + offset, count))
        if sf is not None:
            spans.append((base + sf, 1))
    return spans


def sungrow(max_interval: float = float("inf")) -> Spans:
    return [s for p in builtin()["sungrow_sh"].points() if p.interval <= max_interval
            for s in p.spans()]


def sparse_meter() -> Spans:
    """A meter whose values are scattered 40 to 200 registers apart (float32 pairs)."""
    return [(a, 2) for a in (0, 40, 80, 120, 160, 200, 400, 600, 800, 1000)]


POINT_SETS: dict[str, Callable[[], Spans]] = {
    "SunSpec 103 (31 points + SFs)": sunspec_103,
    "Sungrow SH profile (21 points)": sungrow,
    "Sungrow SH, 5 s points only": lambda: sungrow(5),
    "sparse meter (10 float32)": sparse_meter,
}
MODELS = [CostModel.tcp(), CostModel.rtu(9600), CostModel.rtu(19200)]


def planning_table() -> None:
    rows = []
    for label, make in POINT_SETS.items():
        spans = make()
        for model in MODELS:
            result = plan(spans, model)
            naive_cost = sum(model.cost(c) for _, c in set(spans))
            rows.append([label, model.name, len(result.requests), result.minimum, result.naive,
                         result.registers, result.cost * 1000, naive_cost * 1000])
    print_table(["point set", "link", "requests (ours)", "minimum", "one per point",
                 "registers read", "est. bus ms (ours)", "est. bus ms (one per span)"], rows)


def _image_decoder(address: int) -> Callable[[RegisterImage], float]:
    return lambda image: float(image[address])


async def _measure(spans: Spans, *, rtu: bool, cycles: int) -> tuple[float, float, int, int]:
    """Median ms per poll cycle with our plan and with one request per span; requests each."""
    from pymodbus import FramerType
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    low, high = min(a for a, _ in spans), max(a + c for a, c in spans)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ModbusTcpServer(
        SimDevice(id=1, simdata=[SimData(low, values=list(range(high - low)),
                                         datatype=DataType.REGISTERS)]),
        address=("127.0.0.1", port), framer=FramerType.RTU if rtu else FramerType.SOCKET)
    await server.serve_forever(background=True)
    points = tuple(RegisterPoint(point="pv.power", kind=PointKind.POWER, unit="W", address=a,
                                 count=c, interval=1.0, decode=_image_decoder(a))
                   for a, c in sorted(set(spans)))
    try:
        async with Bus.tcp("127.0.0.1", port, rtu_framing=rtu) as bus:
            dev = ModbusDevice(name="bench", reader=bus, unit=1, points=points,
                               identity=DeviceIdentity(manufacturer=None, model=None,
                                                       serial=None))
            ours = await _time(lambda n: dev.poll(float(n)), cycles)
            ours_requests = dev.stats.requests // cycles

            async def naive(_n: int) -> None:
                for a, c in sorted(set(spans)):
                    await bus.read_holding(a, c, unit=1)

            one_per_point = await _time(naive, cycles)
    finally:
        await server.shutdown()
    return ours, one_per_point, ours_requests, len(set(spans))


async def _time(cycle: Callable[[int], Awaitable[object]], cycles: int) -> float:
    samples = []
    for n in range(cycles):
        started = time.perf_counter()
        await cycle(n)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measured_table(cycles: int = 50) -> None:
    rows = []
    for label in ("SunSpec 103 (31 points + SFs)", "sparse meter (10 float32)"):
        for rtu in (False, True):
            ours, naive, requests, naive_requests = asyncio.run(
                _measure(POINT_SETS[label](), rtu=rtu, cycles=cycles))
            rows.append([label, "rtu framing" if rtu else "tcp", requests, naive_requests,
                         ours, naive])
    print_table(["point set", "framing (loopback)", "requests (ours)", "one per point",
                 "cycle ms (ours, median)", "cycle ms (one per point)"], rows)


def main() -> None:
    print("Planned requests per poll cycle (all points due):\n")
    planning_table()
    print("\nMeasured poll cycle against a pymodbus server on loopback "
          "(no wire time: RTU bus time is the estimate above):\n")
    measured_table()


if __name__ == "__main__":
    main()
