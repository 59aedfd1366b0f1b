"""ECHONET Lite and B-route pollers, feeding the same :class:`~agent.sources.modbus.Stamper`.

All LAN objects share one :class:`EchonetClient` (one UDP socket; requests matched by TID), and
each object runs in its own task on its own schedule with its own backoff, so a slow or silent
node never delays another. An object is located when first needed and again after it went
silent (its address may have changed): fixed address and EOJ, a unicast Get of the node's
instance list at its address, or multicast discovery (shared, at most once per
``_FRESH`` seconds). INF/INFC pushes from an object wake its task at once.

The B-route meter has a task of its own: scan and join can take minutes and must never hold up
anything else. The driver re-joins after EVENT 29 by itself; repeated failures reopen the
module (keeping the PAN found by the last scan). Readings carry the configured device name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from agent.config.echonet import BrouteConfig, EchonetDeviceConfig, EchonetSettings
from agent.config.model import AgentConfig
from agent.host.clock import TrustedClock
from agent.host.metrics import Metrics
from agent.host.supervisor import Backoff, supervise
from drivers.broute.meter import BrouteMeter, BrouteSettings, Pan, read_secret
from drivers.echonet.client import MULTICAST_GROUP, EchonetClient
from drivers.echonet.codec import Eoj, Frame
from drivers.echonet.device import EchonetDevice
from drivers.echonet.discovery import Node, describe, find_nodes
from drivers.errors import DeviceUnreachable, DiscoveryError, DriverError
from drivers.models import DeviceIdentity, PointKind, Quality, Reading

log = logging.getLogger(__name__)

Stamp = Callable[[float, Sequence[Reading]], None]
"""Where readings go with their monotonic instant: an :class:`agent.sources.modbus.Stamper`."""

_FAST = 10.0  # table intervals at or below this are the "fast" points (poll_interval)
_FRESH = 30.0  # seconds a multicast discovery result is reused by other objects
_IDENTITY_EVERY = 3600.0  # equipment information is sent again this often
_BROUTE_FAILURES = 3  # failed polls in a row before the module is reopened


def identity_readings(name: str, identity: DeviceIdentity) -> list[Reading]:
    """Equipment information as ``device.*`` INFO readings (stamped by the caller)."""
    now = datetime.now(UTC)
    fields = (("manufacturer", identity.manufacturer), ("model", identity.model),
              ("serial", identity.serial), ("version", identity.version))
    return [Reading(device=name, point=f"device.{field}", kind=PointKind.INFO, value=value,
                    unit="", ts=now, quality=Quality.GOOD)
            for field, value in fields if value is not None]


async def _pause(event: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds or until ``event`` is set."""
    if delay <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await event.wait()


class Finder:
    """Where configured objects are; multicast results are shared between objects."""

    def __init__(self, client: EchonetClient, settings: EchonetSettings) -> None:
        self._client, self._settings = client, settings
        self._lock = asyncio.Lock()
        self._nodes: list[Node] = []
        self._at = -math.inf

    async def locate(self, config: EchonetDeviceConfig) -> tuple[str, Eoj]:
        """The address and EOJ of a configured object."""
        if config.address is not None and config.instance is not None:
            return config.address, Eoj(class_code=config.class_code, instance=config.instance)
        nodes = await self._nodes_for(config.address)
        found = [(n.address, e) for n in nodes for e in n.objects
                 if e.class_code == config.class_code
                 and config.instance in (None, e.instance)]
        if len(found) != 1:
            where = "at its address" if config.address else "on the LAN"
            raise DiscoveryError(f"device {config.name}: {len(found)} objects of class "
                                 f"{config.eoj} {where}; one is needed (set address and a "
                                 "full eoj such as 027D01)")
        return found[0]

    async def _nodes_for(self, address: str | None) -> list[Node]:
        if address is not None:
            return await find_nodes(self._client, wait=self._settings.timeout,
                                    addresses=[address])
        async with self._lock:
            loop = asyncio.get_running_loop()
            if loop.time() - self._at > _FRESH:
                self._nodes = await find_nodes(self._client,
                                               wait=self._settings.discovery_wait)
                self._at = loop.time()
            return self._nodes


class ObjectPoller:
    """One configured ECHONET Lite object: locate, open, poll on its schedule, back off."""

    def __init__(self, config: EchonetDeviceConfig, client: EchonetClient, finder: Finder,
                 stamper: Stamp, *, clock: TrustedClock, metrics: Metrics) -> None:
        self.config, self.client, self.finder = config, client, finder
        self.stamper, self.clock, self.metrics = stamper, clock, metrics
        self.device: EchonetDevice | None = None
        self.wake = asyncio.Event()
        self.backoff = Backoff(initial=2.0, cap=300.0)
        self._identity_due = 0.0

    def notified(self, address: str, frame: Frame) -> None:
        """Client subscriber: a push from this object is delivered at once."""
        if self.device is not None and (address, frame.seoj) == (self.device.address,
                                                                  self.device.eoj):
            self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set (which also sets :attr:`wake`)."""
        unsubscribe = self.client.subscribe(self.notified)
        try:
            while not stop.is_set():
                self.wake.clear()
                delay = await self._cycle()
                await _pause(self.wake, min(delay, 3600.0))
        finally:
            unsubscribe()
            if self.device is not None:
                self.device.close()

    async def _cycle(self) -> float:
        """One poll (opening the object first if needed); the seconds until the next."""
        name, now = self.config.name, self.clock.monotonic()
        try:
            if self.device is None:
                self.device = await self._open()
                log.info("device %s found: %d points", name, len(self.device.properties))
            readings = await self.device.poll(now)
        except DriverError as exc:
            delay = self.backoff.next_delay()
            if isinstance(exc, DeviceUnreachable) and self.device is not None:
                self.device.close()
                self.device = None  # locate it again: its address may have changed
            self.metrics.inc("hems_polls_total", device=name, outcome="error")
            log.warning("device %s: %s (%s); next attempt in %.0f s", name,
                        type(exc).__name__, exc, delay)
            return delay
        self.backoff.reset()
        if now >= self._identity_due:
            self._identity_due = now + _IDENTITY_EVERY
            readings = identity_readings(name, self.device.identity) + readings
        self.metrics.inc("hems_polls_total", device=name, outcome="ok")
        self.metrics.set("hems_echonet_requests_total", self.device.stats.requests, device=name)
        self.stamper(now, readings)
        return self.device.next_due() - self.clock.monotonic()

    async def _open(self) -> EchonetDevice:
        address, eoj = await self.finder.locate(self.config)
        info = await describe(self.client, address, eoj)
        if info.table is not None:
            table = info.table.model_copy(update={"properties": tuple(
                p.model_copy(update={"interval": self._interval(p.interval)})
                for p in info.table.properties)})
            info = type(info)(address=info.address, eoj=info.eoj, get_map=info.get_map,
                              identity=info.identity, table=table)
        return await EchonetDevice.open(self.client, name=self.config.name, address=address,
                                        eoj=eoj, info=info)

    def _interval(self, table: float | None) -> float | None:
        if table is None:
            return None  # pushed or on demand, never polled
        fast, slow = self.config.poll_interval, self.config.slow_interval
        if table <= _FAST:
            return fast or table
        return slow or table


async def run_echonet(settings: EchonetSettings, devices: Sequence[EchonetDeviceConfig],
                      stamper: Stamp, *, clock: TrustedClock, metrics: Metrics,
                      stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
    """Poll every configured ECHONET Lite object through one client until ``stop``."""
    if started is not None:
        started.set()  # running, whether or not the objects answer yet
    async with EchonetClient(interface=settings.interface, port=settings.port,
                             group=MULTICAST_GROUP if settings.discovery else None,
                             timeout=settings.timeout, retries=settings.retries) as client:
        finder = Finder(client, settings)
        pollers = [ObjectPoller(d, client, finder, stamper, clock=clock, metrics=metrics)
                   for d in devices]

        async def wake_on_stop() -> None:
            await stop.wait()
            for poller in pollers:
                poller.wake.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(wake_on_stop())
            for poller in pollers:
                group.create_task(poller.run(stop), name=f"echonet-{poller.config.name}")


class BroutePoller:
    """The smart meter on the B-route; one task, supervised. Keeps the PAN across restarts."""

    def __init__(self, config: BrouteConfig, stamper: Stamp, *, clock: TrustedClock,
                 metrics: Metrics) -> None:
        self.config, self.stamper, self.clock, self.metrics = config, stamper, clock, metrics
        self.pan: Pan | None = None  # from the last successful scan: no rescan on restart

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        """Open the module, join, and poll until ``stop``; failures go to the supervisor."""
        if started is not None:
            started.set()  # a join takes minutes: never hold up READY
        c = self.config
        async with BrouteMeter(self._settings(), name=c.name, pan=self.pan) as meter:
            self.pan = meter.pan
            log.info("device %s: B-route session up", c.name)
            now = self.clock.monotonic()
            self.stamper(now, identity_readings(c.name, meter.identity))
            failures = 0
            while not stop.is_set():
                now = self.clock.monotonic()
                try:
                    readings = await meter.poll(now)
                except DriverError as exc:
                    failures += 1
                    self.metrics.inc("hems_polls_total", device=c.name, outcome="error")
                    if failures >= _BROUTE_FAILURES:
                        raise
                    log.warning("device %s: %s (%s)", c.name, type(exc).__name__, exc)
                    await _pause(stop, c.power_interval)
                    continue
                failures = 0
                self.metrics.inc("hems_polls_total", device=c.name, outcome="ok")
                self.metrics.set("hems_broute_joins_total", meter.joins, device=c.name)
                self.stamper(now, readings)
                await _pause(stop, meter.next_due() - self.clock.monotonic())

    def _settings(self) -> BrouteSettings:
        c = self.config  # the secrets are read at every (re)start: a replaced file counts
        return BrouteSettings(
            device=c.device, route_b_id=read_secret(c.id_file, "B-route ID"),
            password=read_secret(c.password_file, "B-route password"), module=c.module,
            scan_attempts=c.scan_attempts, scan_timeout=c.scan_timeout,
            join_timeout=c.join_timeout, request_timeout=c.request_timeout,
            retries=c.retries, power_interval=c.power_interval,
            energy_interval=c.energy_interval)


def start_echonet_pollers(group: asyncio.TaskGroup, config: AgentConfig, stamper: Stamp, *,
                          clock: TrustedClock, metrics: Metrics, stop: asyncio.Event,
                          ready: list[asyncio.Event]) -> list[asyncio.Task[None]]:
    """Start the supervised ECHONET Lite and B-route tasks the configuration asks for; each
    appends an event to ``ready`` that it sets once running."""
    tasks: list[asyncio.Task[None]] = []
    if config.echonet_devices:
        started = asyncio.Event()
        ready.append(started)
        tasks.append(group.create_task(supervise(
            "echonet", lambda: run_echonet(config.echonet, config.echonet_devices, stamper,
                                           clock=clock, metrics=metrics, stop=stop,
                                           started=started),
            stop=stop, backoff=Backoff(initial=2.0, cap=120.0)), name="echonet"))
    if config.broute is not None:
        poller = BroutePoller(config.broute, stamper, clock=clock, metrics=metrics)
        b_started = asyncio.Event()
        ready.append(b_started)
        tasks.append(group.create_task(supervise(
            f"B-route {config.broute.name}", lambda: poller.run(stop, b_started), stop=stop,
            backoff=Backoff(initial=10.0, cap=600.0, reset_after=300.0)), name="broute"))
    return tasks

