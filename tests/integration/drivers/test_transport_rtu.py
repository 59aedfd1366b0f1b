"""RTU frames that are intact (valid CRC) but not the answer to our request: another function's
or another unit's. RTU has no transaction id, so the frame header is all there is to tell."""

from __future__ import annotations

import pytest
from pymodbus.framer import FramerRTU

from drivers.errors import DeviceProtocolError, DeviceUnreachable
from drivers.sim.devices import DeviceKind
from drivers.sim.server import SimHome, SimulatedDevice
from drivers.transport import Bus
from tests.support.rtu_line import Direction, Piece, rtu_line

SUNS = [0x5375, 0x6E53]


class Forge:
    """Rewrites the next answer's unit id or function code, with other data and a valid CRC."""

    def __init__(self) -> None:
        self.unit_delta = self.function_xor = 0

    def __call__(self, frame: bytes, direction: Direction) -> list[Piece]:
        if direction is Direction.REQUEST or not (self.unit_delta or self.function_xor):
            return [(0.0, frame)]
        size = frame[2]
        body = bytes((frame[0] + self.unit_delta, frame[1] ^ self.function_xor, size))
        body += bytes(range(size))
        self.unit_delta = self.function_xor = 0
        return [(0.0, body + FramerRTU.compute_CRC(body).to_bytes(2, "big"))]


def meter() -> SimulatedDevice:
    return SimulatedDevice(DeviceKind.METER, SimHome(wall=lambda: 0.0), unit=1)


async def test_an_answer_of_another_function_is_a_protocol_error() -> None:
    forge = Forge()
    async with rtu_line([meter()], forge) as relay, \
            Bus.serial(relay.client_path, timeout=1.0, gap=0.0) as bus:
        forge.function_xor = 0x07  # read holding (3) answered as read input (4)
        with pytest.raises(DeviceProtocolError, match="answer to function 4") as info:
            await bus.read_holding(40000, 2, unit=1)
        assert info.value.exception_code is None
        assert await bus.read_holding(40000, 2, unit=1) == SUNS  # and the line goes on


async def test_an_answer_from_another_unit_is_not_taken() -> None:
    forge = Forge()
    async with rtu_line([meter()], forge) as relay, \
            Bus.serial(relay.client_path, timeout=0.3, gap=0.0) as bus:
        forge.unit_delta = 1
        with pytest.raises(DeviceUnreachable):  # skipped: as if nothing came
            await bus.read_holding(40000, 2, unit=1)
        assert await bus.read_holding(40000, 2, unit=1) == SUNS
