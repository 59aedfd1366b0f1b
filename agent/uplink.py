"""The publisher: drains the outbox to the broker over MQTT (v5 by default) with TLS, QoS 1.

aiomqtt does not reconnect, so :meth:`Publisher.run` loops around ``async with client`` with
capped exponential backoff and jitter. Each connection is a fresh client with a persistent
session (clean start off, session expiry set). Every network await has a deadline: the client
``timeout`` (a few seconds) bounds connect, publish and disconnect. A publish whose PUBACK does
not arrive in time is "unknown, send again": it stays in the outbox and is resent on the next
connection; receivers dedupe by (site, seq). An envelope leaves the outbox only on its PUBACK.
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
from agent.outbox import Outbox, OutboxItem

log = logging.getLogger(__name__)


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
                 idle_wait: float = 1.0, rng: Callable[[], float] = random.random) -> None:
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
        while True:
            items = self.outbox.next_batch(self.batch)
            if not items:
                self._wake.clear()
                # Wakes on commit, or after idle_wait to pick up paced backlog.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_wait):
                        await self._wake.wait()
                continue
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._publish(client, item)) for item in items]
            acked = [item.id for item, task in zip(items, tasks, strict=True) if task.result()]
            self.outbox.ack(acked)
            self.published += len(acked)
            if len(acked) < len(items):
                raise UplinkError(f"{len(items) - len(acked)} of {len(items)} publishes not "
                                  "acknowledged; they will be sent again")

    async def _publish(self, client: aiomqtt.Client, item: OutboxItem) -> bool:
        try:
            await client.publish(item.topic, item.payload, qos=1, timeout=self.config.timeout)
        except aiomqtt.MqttError:
            return False
        return True
