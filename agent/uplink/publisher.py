"""The publisher: drains the outbox to the broker over MQTT (v5 by default) with TLS, QoS 1.

The MQTT session does not reconnect (``agent/uplink/session.py``, the one module that speaks
MQTT), so :meth:`Publisher.run` loops around ``async with connect(...)`` with
capped exponential backoff and jitter. Each connection is a fresh client with a persistent
session (clean start off, session expiry set). Every network await has a deadline: the client
``timeout`` (a few seconds) bounds connect, publish and disconnect. A publish whose PUBACK does
not arrive in time is "unknown, send again": it stays in the outbox and is resent on the next
connection; receivers dedupe by (site, seq). An envelope leaves the outbox only on a PUBACK
that accepts it: on MQTT v5 a PUBACK with a failure reason code (an ACL denying the topic, a
quota) holds that topic back and retries it later (``agent/uplink/acks.py``). Before a batch is
handed to the MQTT client its envelopes are marked in flight in the outbox (committed), so one
removed before its PUBACK, by a purge or the bound, even after a restart, is recorded as
possibly sent: its PUBLISH may have reached the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from agent.errors import UplinkError
from agent.host.metrics import Metrics
from agent.store.outbox import Outbox, OutboxItem
from agent.uplink.acks import FAILURE, Refusals, publish_code
from agent.uplink.session import BrokerConfig, Session, backoff_delay, connect, tls_context

log = logging.getLogger(__name__)

# Envelopes of held topics read past per batch so that other topics behind them still go out
# (the outbox cannot leave topics out of a batch); bounds the read while a topic is held.
MAX_LOOKAHEAD = 4096


class Publisher:
    """Publishes committed outbox envelopes; run :meth:`run` as a long-lived task."""

    def __init__(self, config: BrokerConfig, outbox: Outbox, *, batch: int = 50,
                 idle_wait: float = 1.0, empty_wait: float = 30.0,
                 rng: Callable[[], float] = random.random,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.outbox = outbox
        self.batch = batch
        self.idle_wait = idle_wait
        self.empty_wait = empty_wait
        self.connected = asyncio.Event()
        self.published = 0
        self.reconnects = 0
        self._rng = rng
        self._wake = asyncio.Event()
        self._context = tls_context(config)
        self.refusals = Refusals(initial=config.refusal_backoff_initial,
                                 maximum=config.refusal_backoff_max, rng=rng, metrics=metrics)
        self._lookahead = 0

    def notify(self) -> None:
        """Wake the publisher: the outbox committed new envelopes (use as ``on_commit``)."""
        self._wake.set()

    async def run(self) -> None:
        """Publish forever, reconnecting with backoff; returns only by cancellation."""
        attempt = 0
        while True:
            try:
                async with connect(self.config, self._context) as session:
                    attempt = 0
                    self.connected.set()
                    log.info("uplink connected")
                    await self._drain(session)
            except UplinkError as exc:
                self.connected.clear()
                delay = backoff_delay(attempt, self.config, self._rng)
                attempt += 1
                self.reconnects += 1
                log.warning("uplink: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _drain(self, session: Session) -> None:
        while True:
            items = self._next_items()
            if not items:
                self._wake.clear()
                # Wakes on commit, after idle_wait to pick up paced backlog, or when a held
                # topic may be tried again. With nothing queued at all only a commit brings
                # work, and it wakes us: look again only every empty_wait (an idle gateway
                # otherwise queries the outbox every second for nothing).
                idle = self.idle_wait if self.outbox.unacknowledged() else self.empty_wait
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.refusals.wait(idle)):
                        await self._wake.wait()
                continue
            timeout = self.config.timeout
            # Committed before any PUBLISH: what is purged from now on may have left.
            self.outbox.publishing(items)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(publish_code(session, item.topic, item.payload,
                                                        timeout))
                         for item in items]
            codes = [task.result() for task in tasks]
            acked = [item.id for item, code in zip(items, codes, strict=True)
                     if code is not None and code[0] < FAILURE]
            self.outbox.ack(acked)
            self.published += len(acked)
            self.refusals.record(items, codes)
            lost = codes.count(None)
            if lost:
                raise UplinkError(f"{lost} of {len(items)} publishes not acknowledged; they "
                                  "will be sent again")

    def _next_items(self) -> list[OutboxItem]:
        """The next batch, without the envelopes of held topics (one probe each when due).

        Held envelopes that rank first would fill every batch the outbox hands out, so the read
        goes past them: twice as far as the held ones seen last time, up to MAX_LOOKAHEAD.
        """
        items = self.outbox.next_batch(self.batch + self._lookahead)
        chosen = self.refusals.select(items)
        self._lookahead = min(MAX_LOOKAHEAD, 2 * (len(items) - len(chosen)))
        return chosen[:self.batch]
