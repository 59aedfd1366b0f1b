"""An RS-485 line without hardware: two pty pairs joined by a relay, and a real pymodbus RTU
server on the far end answering for simulated devices on distinct unit ids.

The client opens :attr:`Relay.client_path` (``Bus.serial``); the server sits on the other pty
pair. Every chunk one side writes (one Modbus frame: pymodbus writes a frame in one go) passes
through the relay's ``meddle`` hook, which may change, split, delay or swallow it; that is where
line noise and a silent unit come from. A pty has no baud rate, so frames cross in microseconds:
the relay also counts frames and bytes per direction, from which wire time at a baud rate is
computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator, Callable, Sequence
from enum import StrEnum
from types import TracebackType

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.sim.server import SimulatedDevice


class Direction(StrEnum):
    REQUEST = "request"  # client to server
    RESPONSE = "response"  # server to client


Piece = tuple[float, bytes]
"""Seconds to wait, then bytes to write."""

Meddle = Callable[[bytes, Direction], list[Piece]]
"""What to put on the wire for one frame: pieces in order (an empty list swallows it)."""


def passthrough(frame: bytes, _direction: Direction) -> list[Piece]:
    return [(0.0, frame)]


class Relay:
    """Two pty pairs joined through ``meddle``; ``async with`` opens and closes them."""

    def __init__(self, meddle: Meddle = passthrough) -> None:
        self.meddle = meddle
        self.frames = dict.fromkeys(Direction, 0)
        self.bytes = dict.fromkeys(Direction, 0)
        self.client_path = self.server_path = ""
        self._ends: list[tuple[int, int]] = []
        self._queues = {d: asyncio.Queue[bytes]() for d in Direction}
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Relay:
        loop = asyncio.get_running_loop()
        self._ends = [os.openpty() for _ in range(2)]
        for _master, slave in self._ends:  # held open, so a closed client port loses no data
            tty.setraw(slave)
        (client, client_slave), (server, server_slave) = self._ends
        self.client_path, self.server_path = os.ttyname(client_slave), os.ttyname(server_slave)
        loop.add_reader(client, self._read, client, Direction.REQUEST)
        loop.add_reader(server, self._read, server, Direction.RESPONSE)
        self._tasks = [asyncio.create_task(self._pump(Direction.REQUEST, server)),
                       asyncio.create_task(self._pump(Direction.RESPONSE, client))]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        loop = asyncio.get_running_loop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for master, slave in self._ends:
            loop.remove_reader(master)
            os.close(master)
            os.close(slave)

    def _read(self, fd: int, direction: Direction) -> None:
        with contextlib.suppress(OSError):  # the other end closed
            self._queues[direction].put_nowait(os.read(fd, 4096))

    async def _pump(self, direction: Direction, destination: int) -> None:
        """Frames leave in the order they came, each after its own delays (a delay holds up
        the frames behind it, as on a wire)."""
        queue = self._queues[direction]
        while True:
            frame = await queue.get()
            self.frames[direction] += 1
            self.bytes[direction] += len(frame)
            for delay, piece in self.meddle(frame, direction):
                if delay > 0:
                    await asyncio.sleep(delay)
                with contextlib.suppress(OSError):
                    os.write(destination, piece)


def server_device(device: SimulatedDevice) -> SimDevice:
    """The device's register image as it is now, served read-only (what the server holds is
    then exactly ``device.image.registers``)."""
    data = SimData(address=device.image.base, values=list(device.image.registers),
                   datatype=DataType.REGISTERS, readonly=True)
    return SimDevice(id=device.unit, simdata=[data])


@contextlib.asynccontextmanager
async def rtu_line(devices: Sequence[SimulatedDevice],
                   meddle: Meddle = passthrough) -> AsyncIterator[Relay]:
    """A pymodbus RTU server for ``devices`` behind a relay; yields the relay (the client
    opens ``relay.client_path``)."""
    async with Relay(meddle) as relay:
        server = ModbusSerialServer([server_device(d) for d in devices],
                                    port=relay.server_path, baudrate=19200)
        await server.serve_forever(background=True)
        try:
            yield relay
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]
            await asyncio.sleep(0)  # let the closed transport run its callbacks
