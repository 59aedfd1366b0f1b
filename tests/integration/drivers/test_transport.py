"""The Modbus transport against real pymodbus servers on loopback (TCP and RTU framing)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import tty
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.errors import DeviceProtocolError, DeviceUnreachable
from drivers.transport import Bus
from tests.conftest import free_port

REGISTERS = list(range(1000, 1200))  # holding registers 0..199 of unit 1


@dataclass
class Recorder:
    """Server-side log of the requests a simulated device received: (function, address, count,
    loop time)."""

    requests: list[tuple[int, int, int, float]] = field(default_factory=list)
    fail_with: ExcCodes | None = None

    async def action(self, function_code: int, _start: int, address: int, count: int,
                     _regs: list[int], _values: list[int] | list[bool] | None) -> ExcCodes | None:
        self.requests.append((function_code, address, count, asyncio.get_running_loop().time()))
        return self.fail_with


def device(unit: int = 1, values: list[int] | None = None,
           recorder: Recorder | None = None, start: int = 0) -> SimDevice:
    data = SimData(start, values=values or REGISTERS, datatype=DataType.REGISTERS)
    return SimDevice(id=unit, simdata=[data], action=recorder.action if recorder else None)


@contextlib.asynccontextmanager
async def serve(devices: SimDevice | list[SimDevice], *, rtu: bool = False,
                port: int | None = None) -> AsyncIterator[int]:
    """Run a pymodbus TCP server (optionally with RTU framing) in this loop; yield its port."""
    port = port or free_port()
    server = ModbusTcpServer(devices, address=("127.0.0.1", port),
                             framer=FramerType.RTU if rtu else FramerType.SOCKET)
    await server.serve_forever(background=True)
    try:
        yield port
    finally:
        await server.shutdown()
        await asyncio.sleep(0)  # let the closed transports run their callbacks


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def pty_cable() -> AsyncIterator[tuple[str, str]]:
    """Two pseudo-terminals joined like a null-modem cable; yields their device paths."""
    loop = asyncio.get_running_loop()
    ends = [os.openpty() for _ in range(2)]
    for _master, slave in ends:
        tty.setraw(slave)
    (master_a, _), (master_b, _) = ends

    def pump(src: int, dst: int) -> None:
        with contextlib.suppress(OSError):  # the other end closed
            os.write(dst, os.read(src, 4096))

    loop.add_reader(master_a, pump, master_a, master_b)
    loop.add_reader(master_b, pump, master_b, master_a)
    try:
        yield os.ttyname(ends[0][1]), os.ttyname(ends[1][1])
    finally:
        for master, slave in ends:
            loop.remove_reader(master)
            os.close(master)
            os.close(slave)


async def test_serial_rtu_over_a_pty_pair() -> None:
    recorder = Recorder()
    async with pty_cable() as (client_path, server_path):
        server = ModbusSerialServer(device(recorder=recorder), port=server_path, baudrate=19200)
        await server.serve_forever(background=True)
        try:
            async with Bus.serial(client_path, baudrate=19200, timeout=2.0, gap=0.03) as bus:
                assert await bus.read_holding(0, 10, unit=1) == REGISTERS[:10]
                assert await bus.read_input(120, 5, unit=1) == REGISTERS[120:125]
                with pytest.raises(DeviceProtocolError) as info:
                    await bus.read_holding(500, 2, unit=1)
                assert info.value.exception_code == 2
                assert bus.requests == 3 and bus.cost_model.name == "rtu-19200"
        finally:
            await server.shutdown()
            await asyncio.sleep(0)
    arrivals = [t for *_, t in recorder.requests]
    assert all(b - a >= 0.03 * 0.9 for a, b in itertools.pairwise(arrivals))


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu-over-tcp"])
async def test_reads_holding_and_input_registers(rtu: bool) -> None:
    async with serve(device(), rtu=rtu) as port, Bus.tcp("127.0.0.1", port,
                                                          rtu_framing=rtu) as bus:
        assert await bus.read_holding(10, 5, unit=1) == REGISTERS[10:15]
        assert await bus.read_input(0, 125, unit=1) == REGISTERS[:125]
        assert bus.requests == 2 and bus.failures == 0
        assert bus.connected
    assert not bus.connected


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu-over-tcp"])
async def test_exception_response_becomes_protocol_error(rtu: bool) -> None:
    recorder = Recorder()
    async with serve(device(recorder=recorder), rtu=rtu) as port, \
            Bus.tcp("127.0.0.1", port, rtu_framing=rtu) as bus:
        with pytest.raises(DeviceProtocolError, match="exception code 2") as info:
            await bus.read_holding(1000, 2, unit=1)  # not implemented by the device
        assert info.value.exception_code == 2
        recorder.fail_with = ExcCodes.DEVICE_BUSY
        with pytest.raises(DeviceProtocolError) as info:
            await bus.read_holding(0, 2, unit=1)
        assert info.value.exception_code == 6
        recorder.fail_with = None
        assert await bus.read_holding(0, 2, unit=1) == REGISTERS[:2]  # same link, still fine
        assert bus.requests == 3 and bus.failures == 2


async def test_silent_device_is_unreachable_within_the_deadline() -> None:
    async with silent_server() as port, Bus.tcp("127.0.0.1", port, timeout=0.3) as bus:
        async with asyncio.timeout(2.0):  # the bus's own deadline must fire well before this
            with pytest.raises(DeviceUnreachable, match=r"no answer within 0\.3 s") as info:
                await bus.read_holding(0, 1, unit=1)
        assert isinstance(info.value.__cause__, TimeoutError)
        assert not bus.connected  # dropped, so a late answer cannot be mistaken for the next


async def test_a_device_that_hangs_up_on_a_request_fails_it_at_once() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the request arrives...
        writer.close()  # ...and the device drops the connection instead of answering

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Bus.tcp("127.0.0.1", port, timeout=30.0) as bus:
            for _ in range(2):  # the second on a new connection
                async with asyncio.timeout(5.0):  # not the bus's 30 s deadline
                    with pytest.raises(DeviceUnreachable, match="connection lost while waiting"):
                        await bus.read_holding(0, 1, unit=1)
            assert (bus.requests, bus.failures) == (2, 2)
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0  # nothing left to cancel us
    finally:
        server.close()
        await server.wait_closed()


async def test_a_read_cancelled_from_outside_is_cancelled_not_failed() -> None:
    async with silent_server() as port, Bus.tcp("127.0.0.1", port, timeout=30.0) as bus:
        read = asyncio.create_task(bus.read_holding(0, 1, unit=1))
        await asyncio.sleep(0.2)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        assert bus.failures == 0


async def test_refused_connection_is_unreachable() -> None:
    async with Bus.tcp("127.0.0.1", free_port(), timeout=1.0) as bus:
        with pytest.raises(DeviceUnreachable, match="link failed"):
            await bus.read_holding(0, 1, unit=1)
        assert bus.failures == 1


async def test_missing_serial_port_is_unreachable() -> None:
    async with Bus.serial("/dev/does-not-exist-hems", timeout=1.0) as bus:
        with pytest.raises(DeviceUnreachable):
            await bus.read_holding(0, 1, unit=1)


async def test_reconnects_on_the_next_request_after_the_link_is_lost() -> None:
    port = free_port()
    async with Bus.tcp("127.0.0.1", port, timeout=1.0) as bus:
        async with serve(device(), port=port):
            assert await bus.read_holding(0, 1, unit=1) == REGISTERS[:1]
        with pytest.raises(DeviceUnreachable):
            await bus.read_holding(0, 1, unit=1)  # server gone
        async with serve(device(), port=port):
            assert await bus.read_holding(1, 1, unit=1) == REGISTERS[1:2]
        assert bus.requests == 3 and bus.failures == 1


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu-over-tcp"])
async def test_requests_on_one_bus_are_serialised_with_a_gap(rtu: bool) -> None:
    gap = 0.05
    recorders = [Recorder(), Recorder()]
    devices = [device(unit=u + 1, recorder=r) for u, r in enumerate(recorders)]
    async with serve(devices, rtu=rtu) as port, \
            Bus.tcp("127.0.0.1", port, rtu_framing=rtu, gap=gap) as bus:
        results = await asyncio.gather(
            *(bus.read_holding(i, 1, unit=1 + i % 2) for i in range(6)))
    assert results == [[REGISTERS[i]] for i in range(6)]
    arrivals = sorted(t for r in recorders for *_, t in r.requests)
    assert len(arrivals) == 6 == bus.requests
    # each request reached the device at least one gap after the previous one
    assert all(b - a >= gap * 0.9 for a, b in itertools.pairwise(arrivals))


async def test_dead_device_does_not_delay_another_bus() -> None:
    async with silent_server() as dead_port, serve(device()) as live_port, \
            Bus.tcp("127.0.0.1", dead_port, timeout=5.0) as dead, \
            Bus.tcp("127.0.0.1", live_port) as live:
        stuck = asyncio.create_task(dead.read_holding(0, 1, unit=1))
        await asyncio.sleep(0.05)  # the dead bus's request is in flight
        for i in range(3):
            assert await live.read_holding(i, 1, unit=1) == [REGISTERS[i]]
        assert not stuck.done()
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"address": 0, "count": 0}, "count must be 1..125"),
     ({"address": 0, "count": 126}, "count must be 1..125"),
     ({"address": 65535, "count": 2}, "outside 0..65535"),
     ({"address": 0, "count": 1, "unit": 256}, "unit must be 0..255")],
)
async def test_bad_requests_are_refused_before_the_wire(kwargs: dict[str, int],
                                                        message: str) -> None:
    kwargs.setdefault("unit", 1)
    async with Bus.tcp("127.0.0.1", free_port()) as bus:
        with pytest.raises(ValueError, match=message):
            await bus.read_holding(**kwargs)
        assert bus.requests == 0


def test_bad_bus_settings_are_named() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        Bus.tcp("127.0.0.1", 502, timeout=0)
    with pytest.raises(ValueError, match="parity"):
        Bus.serial("/dev/null", parity="X")
