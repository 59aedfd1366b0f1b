"""pymodbus servers that play SunSpec devices of a simulated home, with run-time fault injection.

Typical use (tests and the demo)::

    async with run_site(speed=60) as site:          # inverter, battery, meter on free ports
        site.meter.set_fault(Fault(kind=FaultKind.TIMEOUT, requests=1))
        await site.inverter.vanish(0.5)             # gone for 0.5 s, back with a new serial

Registers are refreshed from the home on each request (no timer, so an idle simulator costs no
CPU); all devices of a home read the same simulated instant. The datastore is pymodbus'
``SimDevice`` with its ``action`` hook; faults that need the connection itself (no reply, a
dropped link) live in a request-handler subclass.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.models import DeviceIdentity
from drivers.sim.curves import HomeConfig, HomeModel, SimClock, Snapshot
from drivers.sim.devices import DEFINITIONS, DeviceKind, build_image, identity_for
from drivers.sim.sunspec_image import ImageError, SunSpecImage

logger = logging.getLogger(__name__)
MAX_STEPS_PER_READ = 2000  # ~75 ms of integration on a desktop CPU (37 us per step)


class Framing(StrEnum):
    """How frames travel: Modbus TCP (MBAP header) or RTU frames (CRC) over a TCP socket."""

    TCP = "tcp"
    RTU = "rtu"


class FaultKind(StrEnum):
    """What a faulty simulator does instead of answering normally."""

    EXCEPTION = "exception"  # reply with a Modbus exception code
    TIMEOUT = "timeout"  # read the request, never reply
    DROP = "drop"  # close the connection on the request
    GARBAGE = "garbage"  # reply with random registers; scale factors out of range


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """A fault for requests that match: by unit, by overlap with a register span, for a while."""

    kind: FaultKind
    exception_code: int = int(ExcCodes.DEVICE_FAILURE)
    span: tuple[int, int] | None = None  # (first address, count); None: every address
    unit: int | None = None  # None: every unit
    requests: int | None = None  # only the next N matching requests; None: until cleared

    def __post_init__(self) -> None:
        if not 1 <= self.exception_code <= 0x7F:
            raise ValueError(f"Fault.exception_code must be 1..127, got {self.exception_code}")
        if self.span is not None and self.span[1] < 1:
            raise ValueError(f"Fault.span count must be positive, got {self.span}")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"Fault.requests must be positive, got {self.requests}")

    def matches(self, unit: int, address: int, count: int) -> bool:
        """Whether a read of ``count`` registers at ``address`` on ``unit`` is affected."""
        if self.unit is not None and unit != self.unit:
            return False
        if self.span is None:
            return True
        first, span_count = self.span
        return address < first + span_count and first < address + max(count, 1)


class SimHome:
    """One home shared by its devices: a simulated clock and the model it drives.

    ``start`` (timezone-aware) defaults to now; pass any instant to start there. ``speed`` is
    simulated seconds per wall-clock second.
    """

    def __init__(self, config: HomeConfig | None = None, *, start: datetime | None = None,
                 speed: float = 1.0, wall: Callable[[], float] = time.monotonic) -> None:
        self.config = config or HomeConfig()
        begin = start or datetime.now(UTC)
        self.clock = SimClock(begin, speed, wall=wall)
        self.model = HomeModel(self.config, begin)
        self._start = self.model.snapshot.ts

    def set_speed(self, speed: float) -> None:
        """Accelerate (or slow) simulated time from now on."""
        self.clock.set_speed(speed)

    def snapshot(self) -> Snapshot:
        """The home at the latest whole integration step before the simulated now."""
        step = self.config.step_s
        elapsed = (self.clock.now() - self._start).total_seconds()
        steps_done = (self.model.snapshot.ts - self._start).total_seconds() / step
        pending = int(elapsed // step) - round(steps_done)
        # at high speeds after a long pause, coarser steps keep one request from stalling
        # the loop; counters stay exact because each step integrates its own dt
        stride = max(1, -(-pending // MAX_STEPS_PER_READ))
        for _ in range(max(0, pending) // stride):
            self.model.step(step * stride)
        for _ in range(max(0, pending) % stride):
            self.model.step(step)
        return self.model.snapshot


class SimulatedDevice:
    """One SunSpec device (inverter, battery or meter) of a home, on one unit id."""

    def __init__(self, kind: DeviceKind, home: SimHome, *, unit: int = 1) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit must be 1..247, got {unit}")
        self.kind = kind
        self.home = home
        self.unit = unit
        self.generation = 0
        self.version = 0  # bumped whenever the image changes
        self.identity = identity_for(kind, home.config.seed)
        self._shown: datetime | None = None
        snap = home.snapshot()
        self.image: SunSpecImage = build_image(kind, home.config, self.identity, unit, snap)

    def refresh(self) -> bool:
        """Bring the image up to the home's current step; True if it changed."""
        snap = self.home.snapshot()
        if snap.ts == self._shown:
            return False
        DEFINITIONS[self.kind].update(self.image, snap)
        self._shown = snap.ts
        self.version += 1
        return True

    def replace(self) -> DeviceIdentity:
        """The device is swapped for an identical one: a new serial in model 1."""
        self.generation += 1
        self.identity = identity_for(self.kind, self.home.config.seed, self.generation)
        self.image.set_raw(1, "SN", self.identity.serial)
        self.version += 1
        return self.identity


class _Handler(ServerRequestHandler):
    """Applies the owning simulator's fault to each request before the datastore sees it."""

    async def handle_request(self) -> None:
        pdu, sim = self.last_pdu, self.server.sim
        if pdu is None:
            return
        fault = sim.take_fault(pdu)
        if fault is None and sim.answers(pdu.dev_id):
            await super().handle_request()  # type: ignore[no-untyped-call]
            return
        reply = sim.faulty_reply(pdu, fault)
        if fault is not None and fault.kind is FaultKind.DROP:
            self.close()
        elif reply is not None:
            reply.transaction_id, reply.dev_id = pdu.transaction_id, pdu.dev_id
            self.server_send(reply, self.last_addr)  # type: ignore[no-untyped-call]


class _ModbusServer(ModbusTcpServer):
    def __init__(self, sim: SimulatorServer, devices: list[SimDevice], *,
                 address: tuple[str, int], framer: FramerType) -> None:
        super().__init__(devices, address=address, framer=framer)
        self.sim = sim

    def callback_new_connection(self) -> ServerRequestHandler:
        return _Handler(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )


class SimulatorServer:
    """A pymodbus server on one loopback port answering for one or more simulated devices.

    With :attr:`Framing.RTU` several devices on one port behave like an RS-485 line: a unit
    nobody answers for gets silence. Over Modbus TCP it gets exception 0x0B.
    """

    def __init__(self, devices: Sequence[SimulatedDevice], *, host: str = "127.0.0.1",
                 port: int = 0, framing: Framing = Framing.TCP, seed: int = 0) -> None:
        units = [d.unit for d in devices]
        if not devices or len(set(units)) != len(units):
            raise ValueError(f"devices need distinct unit ids, got {units}")
        self.devices = {d.unit: d for d in devices}
        self.host, self.port, self.framing = host, port, framing
        self.requests = 0  # requests received, faulty or not
        self._fault: Fault | None = None
        self._left: int | None = None
        self._server: _ModbusServer | None = None
        self._rng = random.Random(seed)

    @property
    def device(self) -> SimulatedDevice:
        """The first (usually the only) device."""
        return next(iter(self.devices.values()))

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one; :attr:`port` tells which)."""
        framer = FramerType.RTU if self.framing is Framing.RTU else FramerType.SOCKET
        sim_devices = [self._sim_device(d) for d in self.devices.values()]
        server = _ModbusServer(self, sim_devices, address=(self.host, self.port), framer=framer)
        await server.serve_forever(background=True)
        self.port = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._server = server
        logger.debug("simulator listening on %s:%d (%s)", self.host, self.port, self.framing)

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def fault(self) -> Fault | None:
        """The active fault, if any."""
        return self._fault

    def set_fault(self, fault: Fault | None) -> None:
        """Inject ``fault`` from the next request on (``None`` clears it)."""
        self._fault = fault
        self._left = None if fault is None else fault.requests

    def clear_fault(self) -> None:
        """Answer normally again."""
        self.set_fault(None)

    async def vanish(self, downtime: float, *, new_serial: bool = True) -> None:
        """Disappear (connections refused) for ``downtime`` seconds, then come back on the same
        port, by default as a replacement device with a new serial number."""
        await self.stop()
        await asyncio.sleep(downtime)
        if new_serial:
            for device in self.devices.values():
                device.replace()
        await self.start()

    def answers(self, unit: int) -> bool:
        """Whether some device here answers for ``unit``."""
        return unit in self.devices

    def take_fault(self, pdu: ModbusPDU) -> Fault | None:
        """The fault that applies to this request, counting it against a request budget."""
        self.requests += 1
        fault = self._fault
        if fault is None or not fault.matches(pdu.dev_id, pdu.address, pdu.count):
            return None
        if self._left is not None:
            self._left -= 1
            if self._left <= 0:
                self.clear_fault()
        return fault

    def faulty_reply(self, pdu: ModbusPDU, fault: Fault | None) -> ModbusPDU | None:
        """What to send instead of the normal answer (``None``: nothing at all)."""
        if fault is None:  # nobody answers for this unit
            if self.framing is Framing.RTU:
                return None
            return ExceptionResponse(pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        if fault.kind is FaultKind.EXCEPTION:
            return ExceptionResponse(pdu.function_code, fault.exception_code)
        if fault.kind is FaultKind.GARBAGE:
            return self._garbage(pdu)
        return None

    def _garbage(self, pdu: ModbusPDU) -> ModbusPDU:
        device = self.devices.get(pdu.dev_id, self.device)
        try:
            device.image.read(pdu.address, pdu.count)
        except ImageError:
            return ExceptionResponse(pdu.function_code, ExcCodes.ILLEGAL_ADDRESS)
        values = [self._rng.randrange(0x10000) for _ in range(pdu.count)]
        for loc in device.image.points():
            offset = loc.address - pdu.address
            if loc.type == "sunssf" and 0 <= offset < pdu.count:
                # outside SunSpec's -10..10, and never the 0x8000 "not implemented" sentinel
                values[offset] = self._rng.choice((self._rng.randrange(11, 0x7FFF),
                                                   self._rng.randrange(0x8001, 0xFFF6)))
        return ReadHoldingRegistersResponse(registers=values)

    def _sim_device(self, device: SimulatedDevice) -> SimDevice:
        shown = [device.version]

        async def action(function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], values: Any) -> ExcCodes | None:
            device.refresh()
            if device.version != shown[0]:  # copy only when something changed
                registers[: len(device.image.registers)] = device.image.registers
                shown[0] = device.version
            return None

        data = SimData(address=device.image.base, values=list(device.image.registers),
                       datatype=DataType.REGISTERS, readonly=True)
        return SimDevice(id=device.unit, simdata=[data], action=action)


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """A simulated home with its three SunSpec devices, each on its own port, unit 1."""

    home: SimHome
    inverter: SimulatorServer
    battery: SimulatorServer
    meter: SimulatorServer

    @property
    def servers(self) -> tuple[SimulatorServer, SimulatorServer, SimulatorServer]:
        return (self.inverter, self.battery, self.meter)


@asynccontextmanager
async def run_site(*, config: HomeConfig | None = None, start: datetime | None = None,
                   speed: float = 1.0, host: str = "127.0.0.1", framing: Framing = Framing.TCP,
                   home: SimHome | None = None) -> AsyncIterator[Site]:
    """Start an inverter, a battery and a meter of one home on free ports; stop them on exit.

    Pass ``home`` to share one (e.g. with an injected wall clock); otherwise one is made from
    ``config``, ``start`` and ``speed``.
    """
    home = home or SimHome(config, start=start, speed=speed)
    servers = [SimulatorServer([SimulatedDevice(kind, home)], host=host, framing=framing,
                               seed=home.config.seed + n)
               for n, kind in enumerate((DeviceKind.INVERTER, DeviceKind.BATTERY,
                                         DeviceKind.METER))]
    try:
        for server in servers:
            await server.start()
        yield Site(home=home, inverter=servers[0], battery=servers[1], meter=servers[2])
    finally:
        for server in servers:
            await server.stop()
