"""Device pollers: one task per bus, each device on it with its own backoff.

A bus is one TCP connection or one RS-485 line; requests on it are serialised by the transport.
Devices are discovered (SunSpec) or probed (register profile) when first reached and again after
they became unreachable, so a device that comes back with a new identity is read as it now is.
One dead device backs off on its own and never delays the others on its bus; a device on another
bus is not affected at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.config.model import AgentConfig, RtuDevice, SerialBus, TcpDevice
from agent.host.clock import TrustedClock
from agent.host.metrics import Metrics
from agent.host.supervisor import Backoff
from drivers.device import ModbusDevice, probe
from drivers.errors import DeviceUnreachable, DriverError
from drivers.models import PointKind, Reading
from drivers.profiles import builtin
from drivers.registers import RegisterPoint
from drivers.sunspec.discovery import discover, read_model
from drivers.sunspec.mapping import map_points
from drivers.transport import Bus

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[Reading]], None]
DeviceConfig = TcpDevice | RtuDevice
_FAST = 5.0  # mapping intervals at or below this follow the configured poll interval
_HOLD_LIMIT = 100_000  # readings held while the clock is not trusted (about 30 min of a home)


@dataclass(kw_only=True)
class Slot:
    """One configured device and its state on its bus."""

    config: DeviceConfig
    device: ModbusDevice | None = None
    retry_at: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=2.0, cap=300.0))

    def wake_at(self) -> float:
        return self.retry_at if self.device is None else max(self.retry_at,
                                                              self.device.next_due())


@dataclass(kw_only=True)
class BusPlan:
    """A bus and the devices on it."""

    name: str
    make_bus: Callable[[], Bus]
    slots: list[Slot]


def plan_buses(config: AgentConfig) -> list[BusPlan]:
    """One bus per TCP device and one per configured serial line."""
    plans: list[BusPlan] = []
    serial = {b.name: b for b in config.buses}
    for device in config.devices:
        if isinstance(device, TcpDevice):
            plans.append(BusPlan(name=device.name, make_bus=_tcp_factory(device),
                                 slots=[Slot(config=device)]))
    for bus in config.buses:
        slots = [Slot(config=d) for d in config.devices
                 if isinstance(d, RtuDevice) and d.bus == bus.name]
        if slots:
            plans.append(BusPlan(name=bus.name, make_bus=_serial_factory(serial[bus.name],
                                                                         slots), slots=slots))
    return plans


def _tcp_factory(device: TcpDevice) -> Callable[[], Bus]:
    return lambda: Bus.tcp(device.host, device.port, timeout=device.timeout, name=device.name)


def _serial_factory(bus: SerialBus, slots: list[Slot]) -> Callable[[], Bus]:
    timeout = max(s.config.timeout for s in slots)
    return lambda: Bus.serial(bus.port, baudrate=bus.baud, parity=bus.parity,
                              stopbits=bus.stopbits, timeout=timeout, gap=bus.gap_ms / 1000,
                              name=bus.name)


async def build_device(config: DeviceConfig, bus: Bus) -> ModbusDevice:
    """Discover (SunSpec) or probe (profile) a device and build its poller."""
    if config.profile == "sunspec":
        found = await discover(bus, unit=config.unit)
        blocks = {m.start: await read_model(bus, m, unit=config.unit) for m in found.models}
        points = _intervals(map_points(found, blocks), config.poll_interval)
        return ModbusDevice(name=config.name, reader=bus, unit=config.unit, points=points,
                            identity=found.identity, cost=bus.cost_model)
    profiles = builtin()
    profile = profiles.get(config.profile)
    if profile is None:
        raise DriverError(f"device {config.name}: unknown profile {config.profile!r} "
                          f"(known: sunspec, {', '.join(sorted(profiles))})")
    identity = await probe(profile, bus, config.unit)
    if identity is None:
        raise DriverError(f"device {config.name}: does not match profile {config.profile!r}")
    return ModbusDevice(name=config.name, reader=bus, unit=config.unit,
                        points=_intervals(profile.points(), config.poll_interval),
                        identity=identity, cost=bus.cost_model, max_gap=profile.max_gap)


def _intervals(points: Sequence[RegisterPoint], poll: float) -> list[RegisterPoint]:
    def interval(p: RegisterPoint) -> float:
        if p.kind is PointKind.INFO:
            return p.interval
        return poll if p.interval <= _FAST else max(p.interval, poll)

    return [dataclasses.replace(p, interval=interval(p)) for p in points]


class Stamper:
    """Stamps readings on the trusted clock; holds them while the wall clock is not trusted."""

    def __init__(self, clock: TrustedClock, sink: Sink) -> None:
        self._clock = clock
        self._sink = sink
        self._held: list[tuple[float, Sequence[Reading]]] = []
        self._held_count = 0
        self._issued: datetime | None = None
        self.dropped = 0

    def stamp(self) -> datetime:
        """The time for readings about to be handed over (a poller's ``stamp``, called after
        its last read): on the trusted clock, so that :meth:`__call__` passes readings built
        with it on as they are instead of copying each to set its time. While the clock is
        not trusted, the wall clock as a stand-in: :meth:`__call__` then holds the readings
        and stamps them later, as any others."""
        issued = self._clock.stamp(self._clock.monotonic()) if self._clock.check() else None
        self._issued = issued
        return datetime.now(UTC) if issued is None else issued

    def __call__(self, taken: float, readings: Sequence[Reading]) -> None:
        issued, self._issued = self._issued, None
        if not readings:
            return
        # Built with the trusted time :meth:`stamp` just issued (nothing ran in between:
        # the poller hands over right after its last read), so already stamped at hand-over.
        stamped = issued is not None and all(r.ts is issued for r in readings)
        if not stamped and not self._clock.check():
            self._hold(taken, readings)
            return
        if self._held:
            held, self._held, self._held_count = self._held, [], 0
            for at, batch in held:
                self._emit(at, batch)
        if stamped:
            self._sink(readings)
            return
        # Stamped at hand-over, not when the poll began (``taken``): while the poll ran, a
        # tick may have released the window ``taken`` falls in, and a reading stamped there
        # would open that window again and have it released twice. A poll takes well under
        # a second. (Held readings keep their instants: no tick runs before the clock is
        # trusted, so none of their windows was released.)
        self._emit(self._clock.monotonic(), readings)

    def _hold(self, taken: float, readings: Sequence[Reading]) -> None:
        self._held.append((taken, readings))
        self._held_count += len(readings)
        while self._held_count > _HOLD_LIMIT:
            _, oldest = self._held.pop(0)
            self._held_count -= len(oldest)
            self.dropped += len(oldest)

    def _emit(self, taken: float, readings: Sequence[Reading]) -> None:
        ts = self._clock.stamp(taken)
        assert ts is not None
        self._sink([dataclasses.replace(r, ts=ts) for r in readings])


async def run_bus(plan: BusPlan, stamper: Stamper, *, clock: TrustedClock, metrics: Metrics,
                  stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
    """Poll every device on one bus until ``stop`` is set."""
    if started is not None:
        started.set()  # running, whether or not its devices answer yet
    async with plan.make_bus() as bus:
        while not stop.is_set():
            for slot in plan.slots:
                now = clock.monotonic()
                if slot.wake_at() <= now:
                    await _poll_slot(slot, bus, stamper, now, metrics)
            wake = min(slot.wake_at() for slot in plan.slots)
            delay = max(0.0, wake - clock.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()


async def _poll_slot(slot: Slot, bus: Bus, stamper: Stamper, now: float,
                     metrics: Metrics) -> None:
    name = slot.config.name
    try:
        if slot.device is None:
            slot.device = await build_device(slot.config, bus)
            log.info("device %s found: %d points", name, len(slot.device.points))
        readings = await slot.device.poll(now, stamp=stamper.stamp)
    except DriverError as exc:
        _failed(slot, exc, now, metrics)
        return
    slot.backoff.reset()
    metrics.inc("hems_polls_total", device=name, outcome="ok")
    stats = slot.device.stats
    metrics.set("hems_modbus_requests_total", stats.requests, device=name)
    metrics.set("hems_modbus_requests_minimum_total", stats.minimum, device=name)
    stamper(now, readings)


def _failed(slot: Slot, exc: DriverError, now: float, metrics: Metrics) -> None:
    delay = slot.backoff.next_delay()
    slot.retry_at = now + delay
    if isinstance(exc, DeviceUnreachable):
        slot.device = None  # rediscover: it may come back as a different device
    metrics.inc("hems_polls_total", device=slot.config.name, outcome="error")
    log.warning("device %s: %s (%s); next attempt in %.0f s", slot.config.name,
                type(exc).__name__, exc, delay)
