"""Modbus RTU under line noise: three simulated devices (inverter, battery, meter on units 1-3)
on one line, a real pymodbus RTU server on a pty pair, and a relay in the middle that, with
seeded randomness, flips bits, drops bytes, inserts garbage between frames, truncates frames,
stalls a frame mid-way (far past the 3.5-character silence), answers after the client's
deadline, and rewrites answers as if from another unit or of another function (with a valid
CRC, so only the frame's header can give them away).

What must hold, counted over every reading: no crash, no hang; every reading is either the value
the server holds, with quality good, or marked error/missing; never a wrong value accepted as
good. After the noise stops the line is clean again within a bounded number of cycles, and a
unit that stays silent costs the others nothing. Timings are not asserted (see bench rtu).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pymodbus.framer import FramerRTU

from drivers.device import ModbusDevice
from drivers.errors import DeviceUnreachable
from drivers.models import Quality
from drivers.registers import RegisterPoint
from drivers.sim.devices import DeviceKind
from drivers.sim.server import SimHome, SimulatedDevice
from drivers.sunspec.discovery import discover, read_model
from drivers.sunspec.mapping import map_points
from drivers.transport import Bus
from tests.support.rtu_line import Direction, Piece, rtu_line

pytestmark = pytest.mark.proof

SEED = 20260601
TIMEOUT = 0.3  # the client's deadline per request
CYCLES = 80  # noisy poll cycles
RATE = 0.25  # share of frames the relay disturbs while noise is on
RECOVERY = 3  # cycles after the noise stops by which every reading must be clean
HANG = 15.0  # a poll that takes this long is a hang
UNITS = {"inverter": 1, "battery": 2, "meter": 3}

LINE_FAULTS = ("flip", "drop", "truncate", "garbage", "stall")
ANSWER_FAULTS = (*LINE_FAULTS, "late", "wrong_unit", "wrong_function")

Expected = dict[str, tuple[Quality, object]]  # point -> (quality, value) the server holds


class Noise:
    """The relay's hook: disturbs a share of frames, or every answer in one way (``forced``),
    and swallows requests to the ``silent`` units."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.rate = 0.0
        self.forced: str | None = None
        self.silent: set[int] = set()
        self.applied: Counter[str] = Counter()

    def __call__(self, frame: bytes, direction: Direction) -> list[Piece]:
        if direction is Direction.REQUEST and frame[:1] and frame[0] in self.silent:
            self.applied["silenced"] += 1
            return []
        kind = self.forced if direction is Direction.RESPONSE else None
        if kind is None and self.rng.random() < self.rate:
            faults = ANSWER_FAULTS if direction is Direction.RESPONSE else LINE_FAULTS
            kind = self.rng.choice(faults)
        pieces = self._apply(kind, frame) if kind and len(frame) >= 4 else None
        if pieces is None:
            return [(0.0, frame)]
        self.applied[f"{direction} {kind}"] += 1
        return pieces

    def _apply(self, kind: str, frame: bytes) -> list[Piece] | None:
        rng, data = self.rng, bytearray(frame)
        if kind == "flip":
            for _ in range(rng.randint(1, 3)):
                bit = rng.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
            return [(0.0, bytes(data))]
        if kind == "drop":
            del data[rng.randrange(len(data))]
            return [(0.0, bytes(data))]
        if kind == "truncate":
            return [(0.0, frame[:rng.randrange(1, len(frame))])]
        if kind == "garbage":
            return [(0.0, rng.randbytes(rng.randint(1, 8))), (0.0, frame)]
        if kind == "stall":  # a pause of 5-50 ms inside the frame: > 3.5 characters at 9600
            cut = rng.randrange(1, len(frame))
            return [(0.0, frame[:cut]), (rng.uniform(0.005, 0.05), frame[cut:])]
        if kind == "late":
            return [(TIMEOUT + rng.uniform(0.02, 0.2), frame)]
        return self._forged(kind, frame)

    def _forged(self, kind: str, frame: bytes) -> list[Piece] | None:
        """A well-formed answer with a valid CRC but another unit id or function code, and
        other register values: accepted, it would put wrong values in good readings."""
        unit, function, size = frame[0], frame[1], frame[2]
        if function not in (3, 4) or size != len(frame) - 5:
            return None  # an exception answer: leave it
        if kind == "wrong_unit":
            unit = unit % len(UNITS) + 1
        else:
            function ^= 7  # 3 <-> 4
        body = bytes((unit, function, size)) + self.rng.randbytes(size)
        return [(0.0, body + FramerRTU.compute_CRC(body).to_bytes(2, "big"))]


@dataclass
class Tally:
    correct: int = 0
    error: int = 0
    missing: int = 0
    unreachable_polls: int = 0
    wrong: int = 0  # must stay 0

    def clean(self) -> bool:
        return self.error == self.missing == self.unreachable_polls == self.wrong == 0


@dataclass
class Poller:
    """The three devices on one bus, polled in turn like the daemon's bus task does."""

    devices: dict[str, ModbusDevice]
    expected: dict[str, Expected]
    cycle: int = 0

    async def run(self, tally: Tally, only: Callable[[str], bool] = lambda _: True) -> Tally:
        """One cycle, every point due; each reading counted against what the server holds."""
        self.cycle += 1
        now = self.cycle * 1e6
        for name, device in self.devices.items():
            try:
                async with asyncio.timeout(HANG):
                    readings = await device.poll(now)
            except DeviceUnreachable:
                tally.unreachable_polls += only(name)
                continue
            for r in readings:
                if not only(name):
                    continue
                if r.quality is Quality.GOOD:
                    if (r.quality, r.value) != self.expected[name][r.point]:
                        tally.wrong += 1
                        print(f"WRONG: {name} {r.point} = {r.value!r}, "
                              f"server holds {self.expected[name][r.point]}")
                    else:
                        tally.correct += 1
                elif r.quality is Quality.MISSING:
                    tally.missing += self.expected[name][r.point][0] is not Quality.MISSING
                    tally.correct += self.expected[name][r.point][0] is Quality.MISSING
                else:
                    tally.error += 1
        return tally


def held(points: tuple[RegisterPoint, ...], device: SimulatedDevice) -> Expected:
    """What each point decodes to from the server's registers."""
    image = {device.image.base + i: r for i, r in enumerate(device.image.registers)}
    expected: Expected = {}
    for point in points:
        value = point.decode(image)
        expected[point.point] = (Quality.MISSING if value is None else Quality.GOOD, value)
    return expected


async def make_poller(bus: Bus, sims: dict[str, SimulatedDevice]) -> Poller:
    devices, expected = {}, {}
    for name, sim in sims.items():
        found = await discover(bus, unit=sim.unit)
        blocks = {m.start: await read_model(bus, m, unit=sim.unit) for m in found.models}
        points = tuple(map_points(found, blocks))
        devices[name] = ModbusDevice(name=name, reader=bus, unit=sim.unit, points=points,
                                     identity=found.identity, cost=bus.cost_model)
        expected[name] = held(points, sim)
    return Poller(devices, expected)


@pytest.mark.timeout(300)
async def test_rtu_line_noise_never_yields_a_wrong_good_reading() -> None:
    home = SimHome(wall=lambda: 0.0)  # frozen: the server's registers never change
    sims = {name: SimulatedDevice(DeviceKind(name), home, unit=unit)
            for name, unit in UNITS.items()}
    noise = Noise(SEED)
    async with rtu_line(list(sims.values()), noise) as relay, \
            Bus.serial(relay.client_path, baudrate=19200, timeout=TIMEOUT, gap=0.005) as bus:
        poller = await make_poller(bus, sims)
        baseline = await poller.run(Tally())
        assert baseline.clean() and baseline.correct > 30, baseline

        noise.rate = RATE
        noisy = Tally()
        for _ in range(CYCLES):
            await poller.run(noisy)
        noise.rate = 0.0
        assert noisy.wrong == 0, noisy
        assert noisy.correct and noisy.error + noisy.unreachable_polls, noisy
        for fault in (*LINE_FAULTS, "late"):
            assert noise.applied[f"request {fault}"] + noise.applied[f"response {fault}"], fault

        forged = {}
        for kind in ("wrong_unit", "wrong_function"):
            noise.forced = kind
            forged[kind] = tally = Tally()
            for _ in range(2):
                await poller.run(tally)
            noise.forced = None
            assert tally.wrong == tally.correct == 0, (kind, tally)
            assert noise.applied[f"response {kind}"] >= 2, kind

        recovered = await _recovery(poller)

        noise.silent = {UNITS["meter"]}
        others, meter = Tally(), Tally()
        for _ in range(3):
            await poller.run(others, only=lambda name: name != "meter")
        for _ in range(3):
            await poller.run(meter, only=lambda name: name == "meter")
        noise.silent = set()
        assert others.clean() and others.correct, others
        assert meter.unreachable_polls == 3 and meter.correct == meter.wrong == 0, meter
    print(f"\nrtu noise: {CYCLES} cycles at {RATE:.0%} disturbed frames: {noisy}; "
          f"forged answers: {forged}; clean again after {recovered} cycle(s); "
          f"faults applied: {dict(sorted(noise.applied.items()))}; "
          f"relay frames: { {d.value: n for d, n in relay.frames.items()} }")


async def _recovery(poller: Poller) -> int:
    """Cycles until one is wholly clean (at most RECOVERY); the next three must be too."""
    cycles = 1
    while not (await poller.run(Tally())).clean():
        cycles += 1
        assert cycles <= RECOVERY, f"not clean {RECOVERY} cycles after the noise stopped"
    for _ in range(3):
        tally = await poller.run(Tally())
        assert tally.clean(), tally
    return cycles
