"""Async Modbus transport over pymodbus: one :class:`Bus` per serial line or TCP connection.

A bus serialises its requests (an RS-485 line carries one frame at a time; a TCP gateway in
front of one is no better), keeps a configurable quiet gap between them, puts a deadline on each
request, and never retries: backoff belongs to the supervisor in ``agent``. A lost or timed-out
connection is closed and reopened by the next request.

Every pymodbus and OS error is translated here, once, into :mod:`drivers.errors`:
an exception response becomes :class:`DeviceProtocolError` (with its ``exception_code``); no
answer, a refused or lost connection become :class:`DeviceUnreachable`.

Received bytes reach pymodbus's decoder only through the framers below. On Modbus TCP a reply
must carry the request's transaction id (pymodbus takes 0 as "any") and unit id, protocol id 0
and a length that fits; else the pending request fails with :class:`DeviceProtocolError` and the
connection is dropped. An exception raised while decoding a frame is contained the same way
instead of escaping into asyncio. Frames hold serial numbers and live values, so nothing of them
is logged: pymodbus's logger (which dumps frames in hex at ERROR) is cut off from the log, and
asyncio's report of an exception raised inside pymodbus is reduced to the exception's type.

This module and :mod:`drivers.framing` import ``pymodbus.client``, ``.framer`` and ``.pdu``, never
``pymodbus.server`` (which pulls in aiohttp).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, Self

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import ModbusPDU

from drivers.errors import DeviceProtocolError, DeviceUnreachable
from drivers.framing import ContainedRtuFramer, StrictSocketFramer, contain_library_logs
from drivers.planner import MAX_REGISTERS, CostModel

log = logging.getLogger(__name__)

# Here, not in the agent's log set-up: every command that reads a device (run, scan, doctor,
# provision, demo) comes through this module, whether or not it configures logging.
contain_library_logs()

Function = Literal["holding", "input"]
_FUNCTION_CODES = {"holding": 0x03, "input": 0x04}

# pymodbus runs its own response timer; ours (asyncio.timeout) must always fire first so that
# one deadline governs connect + request, hence the margin.
_LIBRARY_TIMEOUT_MARGIN = 5.0

ClientFactory = Callable[[float, Callable[[bool], None]], ModbusBaseClient]
"""Builds a pymodbus client from (its response timeout, a connect/disconnect callback)."""


class Bus:
    """One Modbus link (a serial line, or one TCP connection) shared by the units on it.

    Use :meth:`tcp` or :meth:`serial` to build one, then ``async with bus:``. Implements
    :class:`drivers.registers.RegisterReader` for every unit on the link, plus :meth:`read_input`.
    """

    def __init__(self, name: str, factory: ClientFactory, *, timeout: float, gap: float,
                 cost_model: CostModel) -> None:
        if timeout <= 0 or gap < 0:
            raise ValueError(f"bus {name!r}: timeout must be > 0 and gap >= 0, "
                             f"got {timeout}, {gap}")
        self.name = name
        self.timeout = timeout
        self.gap = gap
        self.cost_model = cost_model  # for the read planner of the devices on this bus
        self.requests = 0  # requests put on the wire (or attempted), for metrics and bench
        self.failures = 0  # of which failed (unreachable or protocol error)
        self._factory = factory
        self._client: ModbusBaseClient | None = None
        self._link = _Link()  # what the open connection's callbacks reported
        self._lock = asyncio.Lock()
        self._quiet_until = 0.0  # loop time before which the next request must not start

    @classmethod
    def tcp(cls, host: str, port: int = 502, *, rtu_framing: bool = False,
            timeout: float = 3.0, gap: float = 0.0, name: str | None = None) -> Bus:
        """Modbus TCP to ``host:port``; ``rtu_framing`` sends RTU frames over the socket
        (serial-to-Ethernet converters in transparent mode)."""
        framer = FramerType.RTU if rtu_framing else FramerType.SOCKET

        def factory(library_timeout: float, on_connect: Callable[[bool], None]) -> ModbusBaseClient:
            return AsyncModbusTcpClient(host, port=port, framer=framer, timeout=library_timeout,
                                        retries=0, reconnect_delay=0, trace_connect=on_connect)

        return cls(name or f"tcp:{host}:{port}", factory, timeout=timeout, gap=gap,
                   cost_model=CostModel.tcp())

    @classmethod
    def serial(cls, port: str, *, baudrate: int = 9600, parity: str = "N", stopbits: int = 1,
               bytesize: int = 8, timeout: float = 1.0, gap: float = 0.025,
               name: str | None = None) -> Bus:
        """Modbus RTU on a serial line such as ``/dev/ttyAMA0`` (an RS-485 HAT)."""
        if parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be 'N', 'E' or 'O', got {parity!r}")

        def factory(library_timeout: float, on_connect: Callable[[bool], None]) -> ModbusBaseClient:
            return AsyncModbusSerialClient(port, framer=FramerType.RTU, baudrate=baudrate,
                                           parity=parity, stopbits=stopbits, bytesize=bytesize,
                                           timeout=library_timeout, retries=0, reconnect_delay=0,
                                           trace_connect=on_connect)

        return cls(name or f"rtu:{port}", factory, timeout=timeout, gap=gap,
                   cost_model=CostModel.rtu(baudrate, gap=gap))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the link; the next request opens it again."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def connected(self) -> bool:
        """Whether the link is open right now."""
        return self._client is not None and self._client.connected

    async def read_holding(self, address: int, count: int, *, unit: int) -> list[int]:
        """Read ``count`` holding registers (function 0x03) from ``unit``."""
        return await self.read("holding", address, count, unit=unit)

    async def read_input(self, address: int, count: int, *, unit: int) -> list[int]:
        """Read ``count`` input registers (function 0x04) from ``unit``."""
        return await self.read("input", address, count, unit=unit)

    async def read(self, function: Function, address: int, count: int, *,
                   unit: int) -> list[int]:
        """Read registers of either table; waits its turn on the bus, then at most
        ``timeout`` seconds for connecting and answering together."""
        _check_request(function, address, count, unit)
        what = f"{self.name} unit {unit}: read {function} {address}+{count}"
        async with self._lock:
            loop = asyncio.get_running_loop()
            quiet = self._quiet_until - loop.time()
            if quiet > 0:
                await asyncio.sleep(quiet)
            self.requests += 1
            try:
                return await self._read_locked(function, address, count, unit, what)
            except (DeviceUnreachable, DeviceProtocolError):
                self.failures += 1
                raise
            finally:
                self._quiet_until = loop.time() + self.gap

    async def _read_locked(self, function: Function, address: int, count: int, unit: int,
                           what: str) -> list[int]:
        try:
            async with asyncio.timeout(self.timeout):
                client = await self._connect()
                call = (client.read_holding_registers if function == "holding"
                        else client.read_input_registers)
                response = await self._unless_lost(call(address, count=count, device_id=unit))
        except TimeoutError as exc:
            # A late answer must not be taken for the next request's: start afresh.
            self.close()
            raise DeviceUnreachable(f"{what}: no answer within {self.timeout} s") from exc
        except _Refused as exc:  # the stream is not trusted past a broken frame: start afresh
            self.close()
            raise DeviceProtocolError(f"{what}: {exc}") from exc
        except (ConnectionException, OSError) as exc:
            self.close()
            raise DeviceUnreachable(f"{what}: link failed: {exc}") from exc
        except ModbusIOException as exc:  # pymodbus's own id checks: the stream is garbled
            self.close()
            raise DeviceProtocolError(f"{what}: garbled reply: {exc}") from exc
        except ModbusException as exc:
            raise DeviceProtocolError(f"{what}: {exc}") from exc
        if response.function_code & 0x7F != _FUNCTION_CODES[function]:
            # RTU carries no transaction id: an intact frame of another function (crosstalk,
            # a stray reply) has the right unit and a valid CRC, but not our registers
            self.close()
            raise DeviceProtocolError(f"{what}: answer to function {response.function_code}")
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise DeviceProtocolError(f"{what}: exception code {code}", exception_code=code)
        registers = list(response.registers)
        if len(registers) != count:
            raise DeviceProtocolError(f"{what}: got {len(registers)} registers")
        return registers

    async def _unless_lost(self, request: Awaitable[ModbusPDU]) -> ModbusPDU:
        """Await ``request``, but fail at once if the link goes down or a framer refuses the
        reply meanwhile (pymodbus would otherwise wait out its own timeout for an answer that
        cannot come).

        The request runs in this task; the link going down cancels it the way
        ``asyncio.timeout`` does, so an outer cancellation or deadline still wins."""
        link = self._link
        down = link.down()
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        watch = _Watch(task)
        down.add_done_callback(watch.fire)
        taken_back = False
        try:
            return await request
        except asyncio.CancelledError:
            if watch.fired:
                taken_back = True
                if task.uncancel() <= cancelling:  # only ours: the link went down
                    if link.refusal is not None:
                        raise _Refused(link.refusal) from None
                    raise ConnectionException("connection lost while waiting for the "
                                              "answer") from None
            raise
        finally:
            watch.active = False
            down.remove_done_callback(watch.fire)
            if watch.fired and not taken_back:
                # pymodbus ended otherwise (asyncio.wait_for keeps an answer that came with
                # the cancellation): the cancellation asked for is void, take it back
                task.uncancel()

    async def _connect(self) -> ModbusBaseClient:
        if (self._client is not None and self._client.connected
                and self._link.refusal is None):
            return self._client
        self.close()
        link = self._link = _Link()
        client = self._factory(self.timeout + _LIBRARY_TIMEOUT_MARGIN, link.connection)
        _guard(client, link.refuse)
        try:
            connected = await client.connect()
        except BaseException:  # cancelled by the deadline: do not leak a half-open socket
            client.close()
            raise
        if not connected:
            client.close()
            raise ConnectionException(f"cannot connect to {self.name}")
        log.debug("connected to %s", self.name)
        self._client = client
        return client


class _Refused(Exception):
    """A framer refused the reply; the message says why (no frame contents)."""


class _Watch:
    """Cancels ``task`` when fired while active (a link that went down during a request)."""

    __slots__ = ("active", "fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.active = True
        self.fired = False

    def fire(self, _down: object) -> None:
        if self.active and not self.fired:
            self.fired = True
            self.task.cancel()


class _Link:
    """What the callbacks of one connection report: that it went down, or a refused reply."""

    def __init__(self) -> None:
        self.refusal: str | None = None
        self._went_down = False
        self._down: asyncio.Future[None] | None = None

    def down(self) -> asyncio.Future[None]:
        """Done once the connection went down or a reply was refused: one future for all the
        requests on this connection (never cancelled by them)."""
        if self._down is None:
            self._down = asyncio.get_running_loop().create_future()
            if self._went_down:
                self._down.set_result(None)
        return self._down

    def connection(self, up: bool) -> None:
        if not up:
            self._set_down()

    def refuse(self, reason: str) -> None:
        if self.refusal is None:
            self.refusal = reason
        self._set_down()

    def _set_down(self) -> None:
        self._went_down = True
        if self._down is not None and not self._down.done():
            self._down.set_result(None)


def _guard(client: ModbusBaseClient, refuse: Callable[[str], None]) -> None:
    """Put the strict (TCP) or contained (RTU) framer in front of ``client``'s decoder."""
    framer = client.ctx.framer
    if isinstance(framer, FramerSocket):
        client.ctx.framer = StrictSocketFramer(framer.decoder, refuse)
    elif isinstance(framer, FramerRTU):
        client.ctx.framer = ContainedRtuFramer(framer.decoder, refuse)
    else:
        raise TypeError(f"no guarded framer for {type(framer).__name__}")


def _check_request(function: str, address: int, count: int, unit: int) -> None:
    if function not in ("holding", "input"):
        raise ValueError(f"function must be 'holding' or 'input', got {function!r}")
    if not 1 <= count <= MAX_REGISTERS:
        raise ValueError(f"count must be 1..{MAX_REGISTERS}, got {count}")
    if not (address >= 0 and address + count <= 0x10000):
        raise ValueError(f"registers {address}+{count} are outside 0..65535")
    if not 0 <= unit <= 255:
        raise ValueError(f"unit must be 0..255, got {unit}")
