"""The MQTT edge: the only module that imports aiomqtt and paho.

Everything else that speaks to a broker (the publisher, the downlink, doctor, the receiver,
the operator tool, the demo) connects through :func:`connect` and uses the :class:`Session` it
yields: publish (with the PUBACK's MQTT v5 reason code), subscribe, the messages that arrive
(with ``ack()`` for a session opened with ``manual_ack``) and disconnect. Every aiomqtt or paho
error, and every deadline that passes, becomes :class:`~agent.errors.UplinkError` here, once,
``raise ... from exc``; :class:`ConnectRefused` says the broker answered and refused the login.

aiomqtt does not reconnect and nothing here retries: the caller owns backoff
(:func:`backoff_delay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.client import CallbackOnPublish_v2
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import UplinkError

ACCEPTED = (0x00, "Success")
"""What a PUBACK without a reason code (MQTT 3.1.1, or v5 success) reads as."""

# aiomqtt warns above this many concurrent calls; a publisher batch is that by design.
_PENDING_CALLS = 1000

# The message id of the publish the current task is making (one list per publish call).
_MID: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("mid", default=None)


class ConnectRefused(UplinkError):
    """The broker answered CONNECT with a refusal (bad credentials, not authorised): retrying
    helps only once the broker or this side's login changes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """How to reach the broker. ``ca_file`` is the only CA trusted (pinned).

    ``persistent`` sessions (the default) start with clean start off and keep
    ``session_expiry``; a one-shot check (doctor) asks for a clean session instead.
    """

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
    persistent: bool = True
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


def make_client(config: BrokerConfig, context: ssl.SSLContext | None) -> aiomqtt.Client:
    """An aiomqtt client for one connection attempt (TLS unless ``context`` is None)."""
    common: dict[str, Any] = dict(
        identifier=config.client_id, username=config.username, password=config.password,
        tls_context=context, timeout=config.timeout, keepalive=config.keepalive)
    if config.protocol == "5":
        if not config.persistent:
            return aiomqtt.Client(config.host, config.port, protocol=aiomqtt.ProtocolVersion.V5,
                                  **common)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = config.session_expiry
        return aiomqtt.Client(config.host, config.port, protocol=aiomqtt.ProtocolVersion.V5,
                              clean_start=False, properties=props, **common)
    return aiomqtt.Client(config.host, config.port, protocol=aiomqtt.ProtocolVersion.V311,
                          clean_session=not config.persistent, **common)


def backoff_delay(attempt: int, config: BrokerConfig, rng: Callable[[], float]) -> float:
    """Capped exponential backoff with "equal jitter": half fixed, half random."""
    ceiling = min(config.backoff_max, config.backoff_initial * 2 ** min(attempt, 30))
    return float(ceiling / 2 + rng() * ceiling / 2)


def reason_name(code: int) -> str:
    """The MQTT v5 name of a PUBACK reason code, e.g. ``Not authorized`` for 0x87."""
    try:
        return str(ReasonCode(PacketTypes.PUBACK, identifier=code).getName())
    except ValueError:
        return "unknown reason code"


@contextlib.asynccontextmanager
async def connect(config: BrokerConfig, context: ssl.SSLContext | None, *,
                  manual_ack: bool = False) -> AsyncIterator[Session]:
    """Connect within ``2 × config.timeout``; yields the connected :class:`Session` and
    disconnects (within ``config.timeout``) when the block ends.

    With ``manual_ack`` a QoS 1 message is acknowledged only when its ``ack()`` is called; it
    is set before CONNECT, since a persistent session's pending messages arrive right after
    CONNACK. Raises :class:`ConnectRefused` for a refused login, UplinkError for the rest.
    """
    client = make_client(config, context)
    session = Session(client, config.timeout, manual_ack=manual_ack)
    try:
        async with asyncio.timeout(config.timeout * 2):
            await client.__aenter__()
    except MqttConnectError as exc:
        _drop_socket(client)
        raise ConnectRefused(f"cannot connect to the broker, it refused the login: {exc}") from exc
    except (aiomqtt.MqttError, TimeoutError) as exc:
        _drop_socket(client)
        raise UplinkError(f"cannot connect to the broker: {exc or 'timed out'}") from exc
    client.pending_calls_threshold = _PENDING_CALLS
    try:
        yield session
    finally:
        await session.disconnect()


def _drop_socket(client: aiomqtt.Client) -> None:
    # A refused CONNACK leaves paho's socket open and aiomqtt offers no public way to close
    # it; without this every failed attempt leaks a file descriptor.
    sock = client._client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


@dataclass(frozen=True, slots=True)
class Message:
    """One message received: topic, payload bytes, retain flag and QoS."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    _ack: Callable[[], None]

    def ack(self) -> None:
        """Acknowledge it to the broker (PUBACK), on a ``manual_ack`` session; otherwise the
        session did so on arrival and this does nothing."""
        self._ack()


class Messages:
    """The messages a session receives, in order; ``len()`` is how many wait unread.

    Iteration ends with UplinkError when the connection is lost.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._inner = session._client.messages

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> Message:
        try:
            message = await anext(self._inner)
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"connection lost: {exc}") from exc
        return self._session._wrap(message)

    def __len__(self) -> int:
        return len(self._inner)


class Session:
    """An MQTT client, connected by :func:`connect` (which makes it; never made directly).

    aiomqtt returns nothing from ``publish``, and drops the PUBACK's reason code that paho hands
    to ``on_publish``. Two wrappers on its paho client fill the gap: ``publish`` notes the mid
    paho chose (in a context variable, so concurrent publishes, each in its own task, never mix
    them up) and ``on_publish`` stores the code before aiomqtt wakes the waiting publish.
    """

    def __init__(self, client: aiomqtt.Client, timeout: float, *, manual_ack: bool) -> None:
        self._client = client
        self._timeout = timeout
        self._manual_ack = manual_ack
        self._codes: dict[int, tuple[int, str]] = {}
        self._closed = False
        client._client.manual_ack_set(manual_ack)
        self._hook_pubacks()
        self.messages = Messages(self)
        """The messages that arrive on this session's subscriptions."""

    def _hook_pubacks(self) -> None:
        paho = self._client._client
        inner_publish = paho.publish
        if paho.on_publish is None:
            raise RuntimeError("aiomqtt installed no on_publish callback; cannot read PUBACKs")
        # aiomqtt creates its paho client with CallbackAPIVersion.VERSION2 (five arguments).
        inner_on_publish = cast(CallbackOnPublish_v2, paho.on_publish)
        codes = self._codes

        def publish(*args: Any, **kwargs: Any) -> Any:
            info = inner_publish(*args, **kwargs)
            # A code left over from an earlier use of this mid (a publish that timed out and
            # was answered late) must not answer this one. Its PUBACK cannot have arrived yet:
            # paho reads the socket only from the event loop, never inside publish().
            codes.pop(info.mid, None)
            holder = _MID.get()
            if holder is not None:
                holder.append(info.mid)
            return info

        def on_publish(paho_client: Any, userdata: Any, mid: int, reason_code: ReasonCode,
                       properties: Any) -> None:
            # paho re-raises what a callback raises; this only stores two plain values.
            codes[mid] = (int(reason_code.value), str(reason_code.getName()))
            inner_on_publish(paho_client, userdata, mid, reason_code, properties)

        paho.publish = publish  # type: ignore[method-assign]
        paho.on_publish = on_publish

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      wait: float | None = None) -> tuple[int, str]:
        """Publish and wait (``wait`` seconds, else the session's timeout) for the broker's
        answer: the PUBACK's (reason code, name) at QoS 1 (codes of 0x80 and up are refusals;
        MQTT 3.1.1 always reads 0x00). UplinkError if no answer came: the outcome is unknown."""
        holder: list[int] = []
        token = _MID.set(holder)
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain,
                                       timeout=self._timeout if wait is None else wait)
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"publish not acknowledged: {exc}") from exc
        finally:
            _MID.reset(token)
        # aiomqtt returned, so its on_publish ran, and ours stored the code just before it.
        # (Were aiomqtt to stop calling these wrappers, every PUBACK would read as a success,
        # the old behaviour: tests/integration/uplink/test_uplink_refusals.py would fail.)
        return self._codes.pop(holder[0], ACCEPTED) if holder else ACCEPTED

    async def subscribe(self, topic: str, *, qos: int = 1) -> list[int]:
        """Subscribe; the broker's code per filter (granted QoS, or a v5 reason code: 0x80 and
        up is a refusal). UplinkError if the broker did not answer."""
        try:
            granted = await self._client.subscribe(topic, qos=qos, timeout=self._timeout)
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"subscribe failed: {exc}") from exc
        return [int(code.value) if isinstance(code, ReasonCode) else int(code) for code in granted]

    async def disconnect(self) -> None:
        """Send DISCONNECT and close, within the session's timeout; errors are ignored (the
        connection is going away either way). Further calls do nothing."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self._client.__aexit__(None, None, None)

    def _wrap(self, message: aiomqtt.Message) -> Message:
        payload = message.payload
        if isinstance(payload, bytes | bytearray):
            data = bytes(payload)
        else:
            data = str(payload).encode("utf-8") if payload is not None else b""
        mid, qos = message.mid, message.qos
        paho = self._client._client

        def ack() -> None:
            if self._manual_ack and qos > 0:
                paho.ack(mid, qos)

        return Message(topic=message.topic.value, payload=data, retain=bool(message.retain),
                       qos=qos, _ack=ack)
