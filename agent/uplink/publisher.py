"""The publisher: drains the outbox to the broker over MQTT (v5 by default) with TLS, QoS 1.

aiomqtt does not reconnect, so :meth:`Publisher.run` loops around ``async with client`` with
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
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.errors import UplinkError
from agent.host.metrics import Metrics
from agent.store.outbox import Outbox, OutboxItem
from agent.uplink.acks import FAILURE, AckCodes, Refusals

log = logging.getLogger(__name__)

# Envelopes of held topics read past per batch so that other topics behind them still go out
# (the outbox cannot leave topics out of a batch); bounds the read while a topic is held.
MAX_LOOKAHEAD = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """How to reach the broker. ``ca_file`` is the only CA trusted (pinned)."""

    host: str
    port: int = 8883
    ca_file: Path
    client_id: str
    username: str | None = None
    password: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    timeout: float = 3.0
    keepalive: int = 30
    session_expiry: int = 7 * 24 * 3600
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    # A topic the broker refuses (v5 reason code) is retried after this, doubling to the max.
    refusal_backoff_initial: float = 10.0
    refusal_backoff_max: float = 600.0


def endpoint(url: str) -> tuple[str, int]:
    """Host and port of an ``mqtts://HOST[:PORT]`` URL (port 8883 by default).

    Raises ValueError for any other scheme, a missing host or a bad port.
    """
    parts = urlsplit(url)
    if parts.scheme != "mqtts" or not parts.hostname:
        raise ValueError(f"{url!r}: expected mqtts://HOST[:PORT]")
    return parts.hostname, parts.port or 8883


def read_password(path: Path) -> str:
    """The broker password kept in ``path``, without surrounding whitespace (OSError if it
    cannot be read)."""
    return path.read_text(encoding="utf-8").strip()


def tls_context(config: BrokerConfig) -> ssl.SSLContext:
    """A client TLS context trusting only ``config.ca_file``; TLS 1.2 or newer, hostname checked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(config.ca_file))
        if config.client_cert is not None:
            context.load_cert_chain(str(config.client_cert),
                                    str(config.client_key) if config.client_key else None)
    except (OSError, ssl.SSLError) as exc:
        raise UplinkError(f"cannot load TLS files ({config.ca_file}, {config.client_cert}): "
                          f"{exc}") from exc
    return context


def make_client(config: BrokerConfig, context: ssl.SSLContext) -> aiomqtt.Client:
    """An aiomqtt client for one connection attempt, with a persistent session."""
    if config.protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = config.session_expiry
        return aiomqtt.Client(
            config.host, config.port, identifier=config.client_id, username=config.username,
            password=config.password, protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
            properties=props, tls_context=context, timeout=config.timeout,
            keepalive=config.keepalive)
    return aiomqtt.Client(
        config.host, config.port, identifier=config.client_id, username=config.username,
        password=config.password, protocol=aiomqtt.ProtocolVersion.V311, clean_session=False,
        tls_context=context, timeout=config.timeout, keepalive=config.keepalive)


def backoff_delay(attempt: int, config: BrokerConfig, rng: Callable[[], float]) -> float:
    """Capped exponential backoff with "equal jitter": half fixed, half random."""
    ceiling = min(config.backoff_max, config.backoff_initial * 2 ** min(attempt, 30))
    return float(ceiling / 2 + rng() * ceiling / 2)


@contextlib.asynccontextmanager
async def connect(config: BrokerConfig,
                  context: ssl.SSLContext) -> AsyncIterator[aiomqtt.Client]:
    """Connect with a deadline; yields a connected client. aiomqtt errors become UplinkError."""
    client = make_client(config, context)
    try:
        async with asyncio.timeout(config.timeout * 2):
            await client.__aenter__()
    except (aiomqtt.MqttError, TimeoutError) as exc:
        _drop_socket(client)
        raise UplinkError(f"cannot connect to the broker: {exc or 'timed out'}") from exc
    # aiomqtt warns above this many concurrent calls; a publisher batch is that by design.
    client.pending_calls_threshold = 1000
    try:
        yield client
    finally:
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(config.timeout):
                await client.__aexit__(None, None, None)


def _drop_socket(client: aiomqtt.Client) -> None:
    # A refused CONNACK leaves paho's socket open and aiomqtt offers no public way to close
    # it; without this every failed attempt leaks a file descriptor.
    paho = client._client
    sock = paho.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


class Publisher:
    """Publishes committed outbox envelopes; run :meth:`run` as a long-lived task."""

    def __init__(self, config: BrokerConfig, outbox: Outbox, *, batch: int = 50,
                 idle_wait: float = 1.0, rng: Callable[[], float] = random.random,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.outbox = outbox
        self.batch = batch
        self.idle_wait = idle_wait
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
                async with connect(self.config, self._context) as client:
                    attempt = 0
                    self.connected.set()
                    log.info("uplink connected")
                    await self._drain(client)
            except UplinkError as exc:
                self.connected.clear()
                delay = backoff_delay(attempt, self.config, self._rng)
                attempt += 1
                self.reconnects += 1
                log.warning("uplink: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _drain(self, client: aiomqtt.Client) -> None:
        acks = AckCodes(client)
        while True:
            items = self._next_items()
            if not items:
                self._wake.clear()
                # Wakes on commit, after idle_wait to pick up paced backlog, or when a held
                # topic may be tried again.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.refusals.wait(self.idle_wait)):
                        await self._wake.wait()
                continue
            timeout = self.config.timeout
            # Committed before any PUBLISH: what is purged from now on may have left.
            self.outbox.publishing(items)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(acks.publish(client, item.topic, item.payload,
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
