"""The daemon: one TaskGroup owns pollers, the policy pipeline, the outbox, uplink and page.

Start-up opens the state (consent ledger, outbox) and keys; any failure there is fatal with a
clear message. While running, a failing device poller, or the command downlink, is restarted
with backoff and never takes the daemon down; a failure of the outbox's storage is fatal (exit
1, systemd restarts).
SIGTERM/SIGINT set the stop event: pollers stop, the pipeline commits what it holds to the outbox,
the minimiser's open windows are saved, the MQTT session is closed, and the daemon exits 0 within
``shutdown_timeout``. Those windows are also saved every ``snapshot_interval`` while running, and
restored at start once the clock is trusted (``agent/store/snapshots.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import resource
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.config.model import AgentConfig
from agent.daemon.state import State, open_state
from agent.host import memory
from agent.host.clock import SimulatedClock, TrustedClock, make_sync_check
from agent.host.metrics import Metrics, serve_metrics
from agent.host.sdnotify import Notifier, watchdog_interval
from agent.host.supervisor import Backoff, cancel_and_wait, supervise
from agent.sources.modbus import Stamper, plan_buses, run_bus
from agent.store.outbox import OutboxStats
from drivers.models import Reading

log = logging.getLogger(__name__)
_SIMULATED_TICK_FLOOR = 0.2  # seconds between ticks at most simulated speeds
_SNAPSHOT_FLOOR = 1.0  # real seconds between minimiser snapshots at most, at any speed


@dataclass(kw_only=True)
class DaemonOptions:
    """Knobs that are not configuration: timings, and hooks for the demo and tests."""

    tick_interval: float = 5.0
    shutdown_timeout: float = 20.0
    drain_on_stop: float = 2.0
    """While stopping, how long the uplink may go on sending what is queued (if connected)."""
    snapshot_interval: float = 60.0
    """Seconds of the daemon's time between minimiser snapshots: what a SIGKILL may lose."""
    speed: float = 1.0
    """Simulated time (demos, tests): stamps run this many times faster than real time."""
    start: datetime | None = None
    """Simulated start time; with ``speed``, the clock is simulated and trusted at once."""
    extra_tasks: list[Callable[[State, asyncio.Event], Coroutine[Any, Any, None]]] = field(
        default_factory=list)


class Daemon:
    """Runs the agent for one configuration until stopped."""

    def __init__(self, config: AgentConfig, options: DaemonOptions | None = None, *,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.options = options or DaemonOptions()
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.stop = asyncio.Event()
        self.clock: TrustedClock
        if self.options.speed != 1.0 or self.options.start is not None:
            start = self.options.start or datetime.now(UTC)
            self.clock = SimulatedClock(start, self.options.speed)
        else:
            self.clock = TrustedClock(make_sync_check(config.clock.sync_check))
        self._last_upload: float | None = None
        self._published = 0

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or :attr:`stop`); returns the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        raise_open_files_limit()
        state = open_state(self.config, self.metrics, now=self._now())
        state.snapshots.interval = max(_SNAPSHOT_FLOOR,
                                       self.options.snapshot_interval / self.options.speed)
        try:
            await self._run(state)
        finally:
            state.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 0

    async def _run(self, state: State) -> None:
        publisher = state.publisher
        ready: list[asyncio.Event] = []
        async with asyncio.TaskGroup() as group:
            pollers = self._start_pollers(group, state, ready)
            uplink = group.create_task(publisher.run(), name="uplink")
            flusher = group.create_task(state.outbox.run_flusher(), name="outbox-flusher")
            side = self._start_side_tasks(group, state, ready)
            ticker = group.create_task(self._tick_loop(state, ready), name="pipeline")
            await self.stop.wait()
            self.notifier.stopping()
            log.info("stopping: polling ends, the outbox is committed, the session closed")
            await self._shut_down(state, pollers=pollers, ticker=ticker, flusher=flusher,
                                  side=side, uplink=uplink)

    async def _shut_down(self, state: State, *, pollers: list[asyncio.Task[None]],
                         ticker: asyncio.Task[None], flusher: asyncio.Task[None],
                         side: list[asyncio.Task[None]], uplink: asyncio.Task[None]) -> None:
        """Stop in order within ``shutdown_timeout``: each step gets what is left of it; a
        task still running when its share ends is logged ("did not stop in time") and the
        next steps run all the same, so the outbox is committed and the session closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.shutdown_timeout

        def left() -> float:
            return max(0.0, deadline - loop.time())

        await cancel_and_wait(pollers, grace=left())
        await cancel_and_wait([ticker], grace=left())
        if self.clock.synchronised:  # windows that ended are still released
            now = self._now()
            state.snapshots.restore_once(now)
            state.pipeline.tick(now)
            state.snapshots.save(now)  # what is still open, for the next start
        await cancel_and_wait([flusher], grace=left())  # commits what is pending
        await cancel_and_wait(side, grace=left())
        await self._last_uploads(state, min(self.options.drain_on_stop, left()))
        # Leaves `async with client`: DISCONNECT is sent.
        await cancel_and_wait([uplink], grace=left())

    async def _last_uploads(self, state: State, drain: float) -> None:
        """Give a connected uplink a moment to send the windows released while stopping."""
        if not state.publisher.connected.is_set():
            return
        state.publisher.notify()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain):
                while state.outbox.unacknowledged() > 0:  # noqa: ASYNC110 (bounded, 50 ms)
                    await asyncio.sleep(0.05)

    def _start_pollers(self, group: asyncio.TaskGroup, state: State,
                       ready: list[asyncio.Event]) -> list[asyncio.Task[None]]:
        def submit(readings: Sequence[Reading]) -> None:
            # Readings flow only once the clock is trusted: restore before the first one.
            state.snapshots.restore_once(self._now())
            state.pipeline.submit(readings)

        stamper = Stamper(self.clock, submit)
        tasks = []
        for plan in plan_buses(self.config):
            started = asyncio.Event()
            ready.append(started)

            def run(plan: Any = plan, started: asyncio.Event = started) -> Awaitable[None]:
                return run_bus(plan, stamper, clock=self.clock, metrics=self.metrics,
                               stop=self.stop, started=started)

            tasks.append(group.create_task(
                supervise(f"bus {plan.name}", run, stop=self.stop,
                          backoff=Backoff(initial=2.0, cap=120.0)), name=f"bus-{plan.name}"))
        if self.config.echonet_devices or self.config.broute is not None:
            # lazy: the ECHONET Lite and B-route drivers (+1.1 MB RSS, 12 modules), loaded only
            # when the configuration has such a source
            from agent.sources.echonet import start_echonet_pollers

            tasks += start_echonet_pollers(group, self.config, stamper, clock=self.clock,
                                           metrics=self.metrics, stop=self.stop, ready=ready)
        return tasks

    def _start_side_tasks(self, group: asyncio.TaskGroup, state: State,
                          ready: list[asyncio.Event]) -> list[asyncio.Task[None]]:
        tasks = []
        if self.config.metrics_listen:
            host, _, port = self.config.metrics_listen.rpartition(":")
            started = asyncio.Event()
            ready.append(started)
            tasks.append(group.create_task(
                serve_metrics(self.metrics, host.strip("[]"), int(port), started),
                name="metrics"))
        if self.config.web.pairing_hash_file is not None:
            started = asyncio.Event()
            ready.append(started)
            tasks.append(group.create_task(self._serve_page(state, started), name="page"))
        if self.config.operator_keys:
            tasks.append(group.create_task(self._supervised_downlink(state), name="downlink"))
        for make in self.options.extra_tasks:  # named, so a late one is reported by name
            tasks.append(group.create_task(make(state, self.stop),
                                           name=getattr(make, "__name__", "extra")))
        return tasks

    async def _supervised_downlink(self, state: State) -> None:
        """The downlink, restarted with backoff when it fails, like a poller: a message that
        breaks it (even a retained one, delivered again at every connection) must not stop
        the daemon. Configuration and storage failures still do (exit 1, systemd restarts)."""
        # lazy: +0.8 MB, 5 modules, loaded only when operator keys are configured
        from agent.daemon.downlink import FATAL_ERRORS, run_downlink

        await supervise("downlink", lambda: run_downlink(state, self.stop, now=self._now),
                        stop=self.stop, backoff=Backoff(initial=1.0, cap=60.0),
                        fatal=FATAL_ERRORS)

    async def _serve_page(self, state: State, started: asyncio.Event) -> None:
        """The household page, in this event loop (imported only when configured)."""
        # lazy: the page with starlette and uvicorn (+7.4 MB, 144 modules), only when configured
        from agent.web import HouseholdService, WebSettings, create_app, serve

        web = self.config.web
        settings = dataclasses.replace(WebSettings.from_config(web, hostnames=web.hostnames),
                                       clock=lambda: datetime.now(UTC))
        household = HouseholdService(
            ledger=state.ledger, release_log=state.release_log, outbox=state.outbox,
            apply_consent=state.pipeline.apply_changes,
            on_deletion=state.pipeline.queue_deletion, minimiser=state.minimiser,
            recipient_names={r.id: r.display_name for r in self.config.recipients
                             if r.display_name},
            clock=self._now, state_dir=state.config.state_dir,
            receivers=frozenset(state.pipeline.recipients))
        state.pipeline.observers.extend((household.energy.feed, household.readings.feed))
        state.pipeline.on_release.append(household.held.keep)
        state.household = household
        await serve(create_app(household, settings), settings.bind_host, settings.port,
                    ssl_certfile=str(web.tls_cert) if web.tls_cert else None,
                    ssl_keyfile=str(web.tls_key) if web.tls_key else None,
                    started=started, stop=self.stop)

    async def _tick_loop(self, state: State, ready: list[asyncio.Event]) -> None:
        """The loop that proves progress: pipeline ticks, metrics, status and watchdog."""
        async with asyncio.timeout(60):
            await asyncio.gather(*(event.wait() for event in ready))
        self.notifier.ready(self._status(state, state.outbox.stats()))
        memory.trim()  # the heap pages start-up freed go back to the system
        log.info("ready: %d tasks started, %d recipients", len(ready), len(state.recipients))
        interval = self.options.tick_interval
        if self.options.speed > 1.0:
            # Tick on simulated time's scale: at 1440x a 5 s tick spans two simulated hours,
            # so a one-hour grant would expire between two ticks and never be served.
            interval = max(_SIMULATED_TICK_FLOOR, interval / self.options.speed)
        watchdog = watchdog_interval()
        if watchdog is not None:
            interval = min(interval, watchdog)
        while True:
            self.clock.check()
            if self.clock.synchronised:
                now = self._now()
                state.snapshots.restore_once(now)
                queued = state.pipeline.tick(now)
                state.snapshots.after_tick(now, released=queued > 0)
            stats = state.outbox.stats()  # one query a tick, for the metrics and the status
            self._update_metrics(state, stats)
            self.notifier.status(self._status(state, stats))
            if watchdog is not None:
                self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _now(self) -> datetime:
        stamp = self.clock.stamp(self.clock.monotonic())
        return stamp if stamp is not None else datetime.now(UTC)

    def _update_metrics(self, state: State, stats: OutboxStats) -> None:
        m = self.metrics
        m.set("hems_outbox_depth", stats.depth)
        m.set("hems_outbox_bytes", stats.bytes)
        m.set("hems_outbox_oldest_age_seconds", stats.oldest_age or 0.0)
        for purpose, count in stats.drops.items():
            m.set("hems_outbox_dropped_total", count, purpose=purpose)
        published = state.publisher.published
        if published != self._published:
            self._published = published
            self._last_upload = time.time()
        m.set("hems_published_total", published)
        m.set("hems_uplink_connected", 1.0 if state.publisher.connected.is_set() else 0.0)
        if self._last_upload is not None:
            m.set("hems_last_upload_timestamp_seconds", self._last_upload)
        m.set("hems_clock_synchronised", 1.0 if self.clock.synchronised else 0.0)

    def _status(self, state: State, stats: OutboxStats) -> str:
        devices = (len(self.config.devices) + len(self.config.echonet_devices)
                   + (self.config.broute is not None))
        return status_line(devices=devices, queued=stats.depth,
                           connected=state.publisher.connected.is_set(),
                           refused=len(state.publisher.refusals.held),
                           synchronised=self.clock.synchronised)


def raise_open_files_limit(ceiling: int = 65536) -> int:
    """Raise the soft open-files limit to the hard one (at most ``ceiling``); the soft limit
    in force. The household page keeps its connections well under it
    (``agent.web.connections.connection_budget``). Under the systemd unit ``LimitNOFILE=``
    sets both and setrlimit is filtered out: then nothing is changed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.info("open-files limit stays at %d (%s)", soft, exc)
        return soft
    return target


def status_line(*, devices: int, queued: int, connected: bool, refused: int,
                synchronised: bool) -> str:
    """systemd's one-line STATUS=: what an installer sees in ``systemctl status``."""
    up = "connected" if connected else "offline"
    held = (f", {refused} topic{'s' if refused != 1 else ''} refused by the broker"
            if refused else "")
    clock = "" if synchronised else ", waiting for clock sync"
    return f"{devices} devices, outbox {queued} queued, uplink {up}{held}{clock}"
