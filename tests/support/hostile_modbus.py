"""A Modbus TCP device that lies: an asyncio server speaking raw MBAP on loopback.

Each unit it serves has a register image (holding and input alike) and a :class:`Fault`. A
request the fault spares (``spoils(address, count)`` false) gets an honest answer; the others get
the same registers in a frame broken in one way: transaction id 0 (pymodbus takes 0 as "any"),
another transaction id, another unit id, a byte count longer than the frame, or the register
bytes with no MBAP header at all. The broken frames still carry the registers, so a client that
logs what it refuses leaks them.

pymodbus's own server cannot be made to send these frames; this one is built for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Fault(StrEnum):
    NONE = "none"
    TID_ZERO = "tid-zero"  # the reply's transaction id is 0
    WRONG_TID = "wrong-tid"  # the reply's transaction id is the request's + 1
    WRONG_UNIT = "wrong-unit"  # the reply comes from unit 200
    LONG_BYTE_COUNT = "long-byte-count"  # byte count 255, fewer bytes follow
    GARBAGE = "garbage"  # the register bytes without an MBAP header


def every_read(_address: int, _count: int) -> bool:
    return True


@dataclass
class HostileUnit:
    """One unit id: its registers (address -> value) and how it breaks its replies."""

    registers: Mapping[int, int]
    fault: Fault = Fault.NONE
    spoils: Callable[[int, int], bool] = every_read
    requests: int = 0
    spoiled: int = 0


def text_registers(text: str, length: int) -> list[int]:
    """``text`` as ``length`` registers, two ASCII bytes each, NUL padded (SunSpec strings)."""
    data = text.encode("ascii").ljust(2 * length, b"\0")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2 * length, 2)]


def frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def answer(units: Mapping[int, HostileUnit], request: bytes) -> bytes | None:
    """The bytes to send for one request frame (``None``: stay silent)."""
    tid, _pid, _length, unit_id = struct.unpack(">HHHB", request[:7])
    function = request[7]
    unit = units.get(unit_id)
    if unit is None or function not in (3, 4) or len(request) < 12:
        return None
    address, count = struct.unpack(">HH", request[8:12])
    unit.requests += 1
    values = [unit.registers.get(a) for a in range(address, address + count)]
    if any(v is None for v in values):
        return frame(tid, unit_id, bytes((function | 0x80, 2)))  # illegal data address
    payload = b"".join(v.to_bytes(2, "big") for v in values if v is not None)
    fault = unit.fault if unit.spoils(address, count) else Fault.NONE
    if fault is not Fault.NONE:
        unit.spoiled += 1
    match fault:
        case Fault.NONE:
            return frame(tid, unit_id, bytes((function, len(payload))) + payload)
        case Fault.TID_ZERO:
            return frame(0, unit_id, bytes((function, len(payload))) + payload)
        case Fault.WRONG_TID:
            return frame(tid % 65535 + 1, unit_id, bytes((function, len(payload))) + payload)
        case Fault.WRONG_UNIT:
            return frame(tid, 200, bytes((function, len(payload))) + payload)
        case Fault.LONG_BYTE_COUNT:
            return frame(tid, unit_id, bytes((function, 255)) + payload)
        case Fault.GARBAGE:
            return b"\xde\xad" + payload
    raise AssertionError(fault)


@dataclass
class HostileServer:
    units: dict[int, HostileUnit]
    port: int = 0
    connections: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _tasks: list[asyncio.Task[object]] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.append(task)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await reader.readexactly(7)
                length = struct.unpack(">H", header[4:6])[0]
                request = header + await reader.readexactly(length - 1)
                reply = answer(self.units, request)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def hostile_server(units: dict[int, HostileUnit]) -> AsyncIterator[HostileServer]:
    """Serve ``units`` on a free loopback port; ``.port`` says which."""
    state = HostileServer(units)
    server = await asyncio.start_server(state._serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        for writer in state._writers:
            writer.close()  # each handler then sees the end of its stream and returns
        await asyncio.gather(*state._tasks, return_exceptions=True)
        server.close()
        await server.wait_closed()
