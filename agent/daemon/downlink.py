"""The downlink: signed operator commands in, signed results out.

A second MQTT connection (client id ``hems-<site>-control``, persistent session, QoS 1)
subscribes to ``hems/v1/<site>/control/#``. Each message is, in order: rate limited (a token
bucket, so a burst costs nothing but a counter), checked (size, layout, pinned key id,
signature, site, validity window: :func:`agent.wire.commands.verify_command`), checked for replay
(its id is committed to ``command-ids.sqlite`` *before* it is applied: at most once), applied
(:class:`agent.daemon.actions.Actions`) and answered: the result is sealed to the company's
key and queued in the outbox as an ``event`` of purpose ``service``, ahead of data.

Rejected messages get no answer (an unauthenticated sender must not be able to make the
gateway talk); each is logged with its reason and counted in
``hems_commands_rejected_total{reason=...}``, which remote diagnostics report. Each message is
contained on its own: hostile bytes (deep nesting, duplicate keys: ``policy.strict_json``) are
``malformed``, and an unexpected exception while checking one is ``internal_error``; the next
message is handled as usual. The daemon restarts the downlink with backoff if it fails as a
whole; only configuration and storage failures (:data:`FATAL_ERRORS`) stop the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config.model import AgentConfig
from agent.daemon.actions import Actions, Outcome
from agent.daemon.seen_ids import SEEN_FILE, SeenIds, SeenIdsError
from agent.daemon.state import State, broker_config
from agent.errors import ConfigError, KeyFileError, OutboxError, UplinkError
from agent.failures import raised_at
from agent.store.outbox import CONTROL_PRIORITY
from agent.uplink.session import BrokerConfig, Session, backoff_delay, connect, tls_context
from agent.wire.commands import MAX_COMMAND, Command, CommandError, verify_command
from agent.wire.envelope import DEFAULT_LIMITS, Header, seal
from agent.wire.keys import device_key_id, load_device_public
from agent.wire.topics import PREFIX, topic_for

log = logging.getLogger(__name__)

FATAL_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, KeyFileError, SeenIdsError, OutboxError, OSError, sqlite3.Error)
"""What the downlink does not survive: configuration and storage failures (the daemon stops
and systemd restarts it). Anything else fails one message, or restarts the downlink alone."""
RESULT_PURPOSE = "service"
RESULT_RECIPIENT = "company"


@dataclass(frozen=True, slots=True, kw_only=True)
class DownlinkSettings:
    """Limits for the command path; the defaults suit a support centre's pace."""

    burst: int = 10
    refill_per_second: float = 1 / 6
    """Sustained rate: one command every six seconds once the burst is spent."""
    max_size: int = MAX_COMMAND
    prune_interval: float = 3600.0


class TokenBucket:
    """``burst`` tokens, refilled continuously at ``rate`` per second."""

    def __init__(self, burst: int, rate: float, clock: Callable[[], float]) -> None:
        self._burst, self._rate, self._clock = float(burst), rate, clock
        self._tokens, self._last = float(burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def control_filter(site_id: str) -> str:
    """The topic filter a gateway subscribes to for its commands."""
    return f"{PREFIX}/{site_id}/control/#"


def load_operator_keys(config: AgentConfig) -> dict[str, ed25519.Ed25519PublicKey]:
    """Key id -> pinned operator public key (SPKI PEM or 32 raw bytes per file)."""
    keys: dict[str, ed25519.Ed25519PublicKey] = {}
    for entry in config.operator_keys:
        if entry.id in keys:
            raise ConfigError(f"operator_keys: id {entry.id!r} appears twice")
        try:
            data = Path(entry.key_file).read_bytes()
        except OSError as exc:
            raise KeyFileError(f"{entry.key_file}: cannot read operator key "
                               f"({exc.strerror})") from exc
        keys[entry.id] = load_device_public(data, str(entry.key_file))
    return keys


class CommandHandler:
    """Everything that happens to one received command; synchronous and never raises for
    bad input (storage failures do raise: the daemon stops and systemd restarts it)."""

    def __init__(self, state: State, *, keys: Mapping[str, ed25519.Ed25519PublicKey],
                 seen: SeenIds, now: Callable[[], datetime], wall: Callable[[], float],
                 settings: DownlinkSettings = DownlinkSettings(),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.state, self.keys, self.seen, self.settings = state, keys, seen, settings
        self.actions = Actions(state, now=now)
        self.actions.diagnostics_extra = self._diagnostics_extra
        self._wall = wall
        self._bucket = TokenBucket(settings.burst, settings.refill_per_second, monotonic)
        self._limited = 0
        self._metrics = state.pipeline.metrics
        self._metrics.describe("hems_commands_total", "counter",
                               "Operator commands applied, per type and outcome")
        self._metrics.describe("hems_commands_rejected_total", "counter",
                               "Operator commands refused before applying, per reason")

    def handle(self, payload: bytes) -> Outcome | None:
        """Process one message; its outcome, or None if it was rejected (and logged).

        Each message is contained on its own: anything but a :data:`FATAL_ERRORS` failure
        raised while checking it rejects it (``internal_error``), while applying it makes an
        ``error`` outcome. Either way the next message is handled as usual.
        """
        if not self._bucket.take():
            self._reject("rate_limited", "too many commands; this one is dropped",
                         quiet=self._limited > 0)
            self._limited += 1
            return None
        self._limited = 0
        try:
            command = self._verify(payload)
        except FATAL_ERRORS:
            raise
        except Exception as exc:  # one message's failure, contained; logged once below
            self._reject("internal_error",
                         f"unexpected {type(exc).__name__} at {raised_at(exc)}")
            return None
        if command is None:
            return None
        log.info("command %s (%s) accepted", command.id, command.type.value)
        outcome = self._apply(command)
        self._metrics.inc("hems_commands_total", type=command.type.value,
                          status=outcome.status)
        if outcome.reason:
            log.warning("command %s (%s) %s: %s", command.id, command.type.value,
                        outcome.status, outcome.reason)
        self._reply(command, outcome)
        return outcome

    def _verify(self, payload: bytes) -> Command | None:
        try:
            command = verify_command(payload, keys=self.keys, site=self.state.config.site_id,
                                     now=self._wall(), max_size=self.settings.max_size)
        except CommandError as exc:
            self._reject(exc.reason, str(exc))
            return None
        if not self.seen.add(command.id, command.expires):
            self._reject("replayed", f"command {command.id} was already accepted")
            return None
        return command

    def _apply(self, command: Command) -> Outcome:
        try:
            return self.actions.apply(command)
        except FATAL_ERRORS:
            raise
        except Exception as exc:  # one command's failure, contained and answered as an error
            log.error("command %s (%s) failed: unexpected %s at %s", command.id,
                      command.type.value, type(exc).__name__, raised_at(exc))
            return Outcome(status="error", reason=f"internal error ({type(exc).__name__})")

    def prune(self) -> int:
        """Forget command ids that have expired."""
        return self.seen.prune(self._wall())

    def _reject(self, reason: str, detail: str, *, quiet: bool = False) -> None:
        self._metrics.inc("hems_commands_rejected_total", reason=reason)
        if not quiet:  # one line per burst, not per message
            log.warning("command rejected (%s): %s", reason, detail)

    def _diagnostics_extra(self) -> dict[str, Any]:
        pinned = {key_id: device_key_id(key) for key_id, key in sorted(self.keys.items())}
        return {"commands": {"seen_ids": len(self.seen), "operator_keys": pinned}}

    def _reply(self, command: Command, outcome: Outcome) -> None:
        body = {"type": "command_result", "v": 1, "command_id": command.id,
                "command_type": command.type.value, "status": outcome.status,
                "reason": outcome.reason, "result": outcome.result,
                "completed_at": datetime.fromtimestamp(self._wall(), UTC).isoformat()}
        payload = self._seal(body)
        if payload is None:
            return
        if len(payload) > DEFAULT_LIMITS.max_envelope:
            body.update(status="error", result={},
                        reason=f"the result of {len(payload)} bytes exceeds the envelope limit")
            payload = self._seal(body)
            if payload is None:
                return
        outbox = self.state.outbox
        outbox.enqueue(payload, topic=topic_for(self.state.config.site_id, RESULT_PURPOSE,
                                                "event"),
                       purpose=RESULT_PURPOSE, recipient=RESULT_RECIPIENT, tier="events",
                       kind="event", priority=CONTROL_PRIORITY)
        outbox.flush()

    def _seal(self, body: Mapping[str, Any]) -> bytes | None:
        state = self.state
        key = state.recipients.get(RESULT_RECIPIENT)
        if key is None:
            log.warning("no key configured for recipient %s: command results are not sent",
                        RESULT_RECIPIENT)
            return None
        count, head = state.ledger.head()
        header = Header(
            site=state.config.site_id, purpose=RESULT_PURPOSE, tier="events", kind="event",
            recipient_key=key.key_id, device_key=device_key_id(state.device_key.public_key()),
            kem=key.kem, catalogue=state.ledger.catalogue.version, consent_id=f"ledger-{count}",
            consent_hash=head, seq=state.outbox.next_sequence(), window_start=None,
            window_end=None, created=int(self._wall() * 1000))
        return seal(header, body, recipient=key, device_key=state.device_key)


async def run_downlink(state: State, stop: asyncio.Event, *,
                       now: Callable[[], datetime] | None = None,
                       wall: Callable[[], float] = time.time,
                       settings: DownlinkSettings = DownlinkSettings(),
                       broker: BrokerConfig | None = None) -> None:
    """Receive and apply commands until ``stop`` is set or the task is cancelled.

    ``now`` stamps ledger records (the daemon's trusted clock); ``wall`` checks command
    validity (Unix seconds). ``broker`` defaults to the uplink's broker with its own client id.
    """
    keys = load_operator_keys(state.config)
    seen = SeenIds(state.config.state_dir / SEEN_FILE)
    handler = CommandHandler(state, keys=keys, seen=seen, wall=wall, settings=settings,
                             now=now or (lambda: datetime.now(UTC)))
    site = state.config.site_id
    config = broker or dataclasses.replace(broker_config(state.config),
                                           client_id=f"hems-{site}-control")
    waiter = asyncio.ensure_future(stop.wait())
    tasks = [asyncio.create_task(_receive(handler, config, site), name="downlink-receive"),
             asyncio.create_task(_prune(handler, settings.prune_interval, stop)), waiter]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a storage failure inside is fatal: re-raised here
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        seen.close()


async def _receive(handler: CommandHandler, config: BrokerConfig, site: str) -> None:
    context, attempt = tls_context(config), 0
    while True:
        try:
            async with connect(config, context) as session:
                await _subscribe(session, site)
                attempt = 0
                log.info("downlink connected")
                async for message in session.messages:
                    handler.handle(message.payload)
        except UplinkError as exc:
            delay = backoff_delay(attempt, config, lambda: 0.5)
            attempt += 1
            log.warning("downlink: %s; retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)


async def _subscribe(session: Session, site: str) -> None:
    granted = await session.subscribe(control_filter(site), qos=1)
    if any(code >= 0x80 for code in granted):
        raise UplinkError(f"the broker refused the control subscription: {granted}")


async def _prune(handler: CommandHandler, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        pruned = handler.prune()
        if pruned:
            log.info("forgot %d expired command ids", pruned)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()

