"""The reference receiver: what the backend does with an uplink envelope.

For each message on the shared subscription it checks the topic, verifies the device signature
against the site's registered key, decrypts with one of the recipient's private keys, drops
replays (``(site, seq)`` already seen, remembered in sqlite across restarts), checks the body
against its kind's JSON Schema (:mod:`agent.wire.schemas`) and that the content fits its purpose and
tier (points on the purpose's allow-list, window length of the
tier), and writes one JSON line per accepted envelope. Rejections are counted by reason and
logged without personal data.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.errors import EnvelopeError, KeyFileError, ReceiverError, TopicError, UplinkError
from agent.failures import raised_at
from agent.uplink.session import BrokerConfig, Session, backoff_delay, connect, tls_context
from agent.wire import envelope, schemas
from agent.wire.keys import RecipientPrivateKey, load_device_public, load_recipient_private
from agent.wire.topics import PREFIX, parse_topic, shared_subscription
from policy import strict_json
from policy.strict_json import JSONRefused

log = logging.getLogger(__name__)

# Allowed window lengths per tier, seconds (min, max). Days and months are local calendar
# units: a day is 23-25 h where clocks change, a month 28-31 days.
WINDOW_SECONDS: dict[str, tuple[int, int]] = {
    "events": (60, 60), "raw": (60, 60), "1min": (60, 60), "30min": (1800, 1800),
    "1d": (23 * 3600, 25 * 3600), "1mo": (28 * 86400, 31 * 86400),
}
UPLINK_FILTER = f"{PREFIX}/+/+/+"
_TIER_RANK = {t: i for i, t in enumerate(("events", "1mo", "1d", "30min", "1min", "raw"))}


class ContentRules(Protocol):
    """What the receiver asks of the purpose catalogue."""

    def finest_tier(self, purpose: str) -> str | None:
        """The finest tier a purpose may carry; None if unknown or it carries no data."""

    def allows(self, purpose: str, point: str) -> bool:
        """Whether ``point`` is on ``purpose``'s allow-list."""


class CatalogueRules:
    """:class:`ContentRules` backed by ``policy``'s purpose catalogue."""

    def __init__(self, path: Path | None = None) -> None:
        from policy.catalogue import load_catalogue

        self._catalogue = load_catalogue(path)

    def finest_tier(self, purpose: str) -> str | None:
        found = self._catalogue.purposes.get(purpose)
        return None if found is None or found.finest is None else str(found.finest)

    def allows(self, purpose: str, point: str) -> bool:
        return purpose in self._catalogue.purposes and self._catalogue.allows(purpose, point)


def content_problem(header: envelope.Header, body: Mapping[str, Any],
                    rules: ContentRules) -> str | None:
    """Why a decrypted envelope does not fit its header's purpose and tier, or None.

    The body is assumed to fit its kind's schema (:func:`agent.wire.schemas.body_problem`).
    Consent changes, deletion requests and events are notices about a purpose, not its data:
    a consent change must name the header's purpose and tier (``off`` for none); the others
    are checked for their type only.
    """
    if header.kind != "data":
        expected = {"consent": "consent_change", "deletion": "deletion_request"}.get(header.kind)
        if expected is not None and body.get("type") != expected:
            return f"a {header.kind} message must carry a {expected}"
        if header.kind == "consent" and (body.get("purpose"), body.get("tier") or "off") != (
                header.purpose, header.tier):
            return "body and header disagree on purpose or tier"
        return None
    finest = rules.finest_tier(header.purpose)
    if finest is None:
        return f"purpose {header.purpose} carries no gateway data"
    if header.tier not in _TIER_RANK or _TIER_RANK[header.tier] > _TIER_RANK.get(finest, -1):
        return f"tier {header.tier} is finer than purpose {header.purpose} allows ({finest})"
    if header.window_start is None or header.window_end is None:
        return "data without a window"
    low, high = WINDOW_SECONDS[header.tier]
    if not low <= header.window_end - header.window_start <= high:
        return f"window length does not match tier {header.tier}"
    disagree = _data_disagreement(header, body)
    if disagree is not None:
        return f"body and header disagree on {disagree}"
    records = body.get("records")
    if not isinstance(records, list):
        return "data body has no records list"
    for record in records:
        point = record.get("point") if isinstance(record, dict) else None
        if not isinstance(point, str) or not rules.allows(header.purpose, point):
            return f"point {point!r} is not allowed for purpose {header.purpose}"
    return None


def _data_disagreement(header: envelope.Header, body: Mapping[str, Any]) -> str | None:
    """The first field a release body states differently from its header, or None."""
    pairs = {"purpose": (body.get("purpose"), header.purpose),
             "tier": (body.get("tier"), header.tier),
             "consent_record_id": (body.get("consent_record_id"), header.consent_id),
             "consent_record_hash": (body.get("consent_record_hash"), header.consent_hash),
             "catalogue_version": (body.get("catalogue_version"), header.catalogue),
             "start": (_instant(body.get("start")), header.window_start),
             "end": (_instant(body.get("end")), header.window_end)}
    return next((name for name, (said, header_says) in pairs.items() if said != header_says),
                None)


def _instant(text: object) -> int | None:
    """Unix seconds of an ISO 8601 time with an offset; None if it is not one."""
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    if moment is None or moment.tzinfo is None:
        return None
    seconds = moment.timestamp()
    return int(seconds) if seconds.is_integer() else None


class ReplayStore:
    """Durable set of accepted ``(site, seq)`` pairs."""

    def __init__(self, path: Path) -> None:
        try:
            self._conn = sqlite3.connect(path, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS seen (site TEXT NOT NULL, "
                               "seq INTEGER NOT NULL, PRIMARY KEY (site, seq)) WITHOUT ROWID")
        except sqlite3.Error as exc:
            raise ReceiverError(f"cannot open the replay store {path}: {exc}") from exc

    def seen(self, site: str, seq: int) -> bool:
        row = self._conn.execute("SELECT 1 FROM seen WHERE site = ? AND seq = ?", (site, seq))
        return row.fetchone() is not None

    def add(self, site: str, seq: int) -> None:
        self._conn.execute("INSERT OR IGNORE INTO seen (site, seq) VALUES (?, ?)", (site, seq))

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The outcome for one message: accepted, or rejected with a reason."""

    accepted: bool
    reason: str = ""


class Receiver:
    """Verifies, decrypts, dedupes and checks envelopes; writes accepted ones as JSON lines."""

    def __init__(self, *, device_keys: Mapping[str, ed25519.Ed25519PublicKey],
                 recipient_keys: Mapping[str, RecipientPrivateKey], rules: ContentRules,
                 replay: ReplayStore, output: IO[str],
                 limits: envelope.Limits = envelope.DEFAULT_LIMITS) -> None:
        self.device_keys = device_keys
        self.recipient_keys = recipient_keys
        self.rules = rules
        self.replay = replay
        self.output = output
        self.limits = limits
        self.accepted = 0
        self.rejected: Counter[str] = Counter()

    def handle(self, topic: str, payload: bytes) -> Verdict:
        """Process one message; never raises for bad input.

        Each message is contained on its own: an envelope refused by the checks is counted by
        reason; anything unexpected raised while checking one (other than a failure of the
        replay store or the output, which stops the receiver) is counted as
        ``internal error``. Either way it is logged once and dropped.
        """
        try:
            opened = self._open(topic, payload)
        except (EnvelopeError, TopicError) as exc:
            return self._reject(re.sub(r"\d+", "N", str(exc).split(":")[0]), str(exc))
        except (OSError, sqlite3.Error):
            raise
        except Exception as exc:  # one message's failure, contained; logged once
            return self._reject("internal error",
                                f"unexpected {type(exc).__name__} at {raised_at(exc)}")
        header = asdict(opened.header)
        self.output.write(json.dumps({"header": header, "body": opened.body},
                                     sort_keys=True, ensure_ascii=False) + "\n")
        self.output.flush()
        _sync(self.output)
        self.replay.add(opened.header.site, opened.header.seq)
        self.accepted += 1
        return Verdict(accepted=True)

    def _reject(self, reason: str, detail: str) -> Verdict:
        self.rejected[reason] += 1
        log.warning("rejected an envelope: %s", detail)
        return Verdict(accepted=False, reason=detail)

    def _open(self, topic: str, payload: bytes) -> envelope.Opened:
        where = parse_topic(topic)
        opened = envelope.open_envelope(payload, device_keys=self.device_keys,
                                        recipient_keys=self.recipient_keys, limits=self.limits)
        h = opened.header
        if (where.site_id, where.purpose, where.kind) != (h.site, h.purpose, h.kind):
            raise EnvelopeError("topic mismatch: topic and header disagree on site/purpose/kind")
        if self.replay.seen(h.site, h.seq):
            raise EnvelopeError("replay: (site, seq) was already accepted")
        wrong = schemas.body_problem(h.kind, opened.body)
        if wrong is not None:
            raise EnvelopeError(f"body schema: the {h.kind} body breaks "
                                f"{h.kind}.schema.json at {wrong}")
        problem = content_problem(h, opened.body, self.rules)
        if problem is not None:
            raise EnvelopeError(f"content does not fit its header: {problem}")
        return opened

    async def run(self, config: BrokerConfig, group: str | None) -> None:
        """Subscribe to the fleet's uplink as one member of ``group``; forever, reconnecting.

        ``group=None`` subscribes without sharing (a single receiver): mosquitto 2.0.11 does not
        route to shared subscriptions restored from its persistence file after a restart (see
        docs/broker.md), a plain persistent subscription survives it.

        Each message is acknowledged (PUBACK) only once its line is written and synced, or it
        was rejected: a receiver killed before that gets it again from its session.
        """
        context, attempt = tls_context(config), 0
        while True:
            try:
                async with connect(config, context, manual_ack=True) as session:
                    await self._subscribe(session, group)
                    attempt = 0
                    async for message in session.messages:
                        self.handle(message.topic, message.payload)
                        # Written and synced (or rejected): now the broker may forget it.
                        message.ack()
            except UplinkError as exc:
                delay = backoff_delay(attempt, config, lambda: 0.5)
                attempt += 1
                log.warning("receiver connection: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _subscribe(self, session: Session, group: str | None) -> None:
        topic = UPLINK_FILTER if group is None else shared_subscription(group)
        granted = await session.subscribe(topic, qos=1)
        if any(code >= 0x80 for code in granted):
            raise ReceiverError(f"the broker refused the subscription: {granted}")


def _sync(output: IO[str]) -> None:
    """fsync ``output`` if it is a file; a pipe, a terminal or an in-memory buffer is left as
    it is (flushed by the caller)."""
    try:
        fd = output.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation: no descriptor (StringIO)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise


def load_device_registry(path: Path) -> dict[str, ed25519.Ed25519PublicKey]:
    """Site -> device public key, from a JSON file or a directory of ``<site>.pem`` files.

    In the JSON file, values are SPKI PEM text or base64 of the 32 raw bytes.
    """
    try:
        if path.is_dir():
            return {p.stem: load_device_public(p.read_bytes(), str(p))
                    for p in sorted(path.glob("*.pem"))}
        table = strict_json.loads(path.read_bytes())  # a site listed twice is refused
    except (OSError, JSONRefused) as exc:
        raise ReceiverError(f"cannot read the device registry {path}: {exc}") from exc
    if not isinstance(table, dict):
        raise ReceiverError(f"{path}: expected a JSON object of site id -> public key")
    return {site: _device_value(value, f"{path}: site {site!r}") for site, value in table.items()}


def _device_value(value: object, where: str) -> ed25519.Ed25519PublicKey:
    if not isinstance(value, str):
        raise ReceiverError(f"{where}: the key must be a string")
    data = value.encode() if value.startswith("-----BEGIN") else base64.b64decode(value)
    try:
        return load_device_public(data, where)
    except KeyFileError as exc:
        raise ReceiverError(str(exc)) from exc


def load_recipient_keys(paths: list[Path]) -> dict[str, RecipientPrivateKey]:
    """Key id -> private key for each recipient key file (mode 0600)."""
    try:
        keys = [load_recipient_private(p) for p in paths]
    except KeyFileError as exc:
        raise ReceiverError(str(exc)) from exc
    return {k.key_id: k for k in keys}
