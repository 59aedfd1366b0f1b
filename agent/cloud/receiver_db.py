"""The receiver's PostgreSQL store: accepted envelopes, exactly once across a receiver group.

``hems-receiver --database postgresql://...`` stores what it accepts in the backend's database
instead of writing JSON lines (docs/fleet.md, "Storing in PostgreSQL"):

- each accepted envelope's ``(site, seq)`` goes into ``seen_envelope`` with
  ``INSERT ... ON CONFLICT DO NOTHING``, in the same transaction as its content, so an
  envelope is seen only if its content was stored, and is stored at most once by the whole
  group, whichever member a broker redelivery or a gateway re-send reaches;
- the broker's PUBACK is sent only after that transaction commits (a manual-ack
  session, ``Message.ack()``), so a receiver killed mid-batch loses nothing: its session keeps the
  unacknowledged messages and the broker delivers them again;
- releases go to ``release`` and ``release_record`` (partitioned by month of the window
  start), consent changes to ``consent_notice``, deletion requests to ``deletion_request``
  (state ``received`` until the backend marks them ``acted``), events to ``event_notice``.

The schema is versioned: the SQL files in ``agent/cloud/receiver_sql/`` are applied in order at
start, under an advisory lock, each in one transaction with its row in ``schema_version``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric import ed25519
from psycopg import errors as pg_errors
from psycopg.abc import Query
from psycopg.types.json import Jsonb

from agent.cloud.receiver import ContentRules, Receiver, ReplayStore
from agent.errors import EnvelopeError, ReceiverError, TopicError, UplinkError
from agent.uplink.session import BrokerConfig, Session, backoff_delay, connect, tls_context
from agent.wire import envelope
from agent.wire.keys import RecipientPrivateKey

log = logging.getLogger(__name__)

# pg_advisory_lock key serialising schema migrations ("hems" in ASCII).
MIGRATION_LOCK = 0x68656D73
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
DEADLOCK_RETRIES = 5


class DatabaseUnavailable(ReceiverError):
    """The database went away or refused a write; the receiver retries, it does not exit."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The schema migrations shipped with the package, in version order."""
    found = []
    for item in resources.files("agent.cloud").joinpath("receiver_sql").iterdir():
        match = _MIGRATION_NAME.match(item.name)
        if match is not None:
            found.append(Migration(int(match.group(1)), item.name,
                                   item.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise ReceiverError("agent/cloud/receiver_sql: migration versions must be 1, 2, 3, ...")
    return found


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Apply the missing migrations; returns the versions applied now.

    Serialised by a session advisory lock, so receivers starting together apply each version
    once. A database whose schema is newer than this program knows is refused.
    """
    known = migrations()
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        row = await cur.fetchone()
        current = int(row[0]) if row is not None else 0
        if current > len(known):
            raise ReceiverError(
                f"the database schema is version {current}, newer than this hems-receiver "
                f"knows ({len(known)}): upgrade hems-receiver")
        applied = []
        for migration in known[current:]:
            async with conn.transaction():
                await conn.execute(migration.sql.encode())
                await conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                                   (migration.version, migration.name))
            log.info("database schema migrated to version %d (%s)", migration.version,
                     migration.name)
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def check_url(url: str) -> None:
    """Refuse something that is not a libpq connection string, without echoing it (it may hold
    a password)."""
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ReceiverError("--database: not a PostgreSQL connection string "
                            "(expected postgresql://USER@HOST[:PORT]/DBNAME)") from None


async def open_connection(url: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection with the schema migrated to the newest version."""
    check_url(url)
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True,
                                                     application_name="hems-receiver")
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {_first_line(exc)}") from exc
    try:
        await migrate(conn)
    except psycopg.Error as exc:
        await conn.close()
        raise ReceiverError(f"cannot migrate the database schema: {_first_line(exc)}") from exc
    except BaseException:
        await conn.close()
        raise
    return conn


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def month_start(seconds: int) -> datetime:
    """Start (UTC) of the calendar month holding ``seconds``: the partition a window goes to."""
    return _utc(seconds).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class PgStore:
    """Writes accepted envelopes; one connection, one transaction per batch."""

    def __init__(self, url: str, received_by: str) -> None:
        check_url(url)
        self.url = url
        self.received_by = received_by
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._months: set[datetime] = set()

    async def connect(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = await open_connection(self.url)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def store(self, batch: Sequence[envelope.Opened]) -> list[bool]:
        """Store every envelope of ``batch`` not stored before, in one transaction.

        Returns, per envelope, whether it was new (False: its ``(site, seq)`` was already
        stored, by this or another receiver, or earlier in the same batch).
        """
        await self.connect()
        conn = self._conn
        assert conn is not None
        try:
            for month in sorted({month_start(o.header.window_start) for o in batch
                                 if o.header.kind == "data" and o.header.window_start is not None}
                                - self._months):
                await conn.execute("SELECT hems_ensure_month(%s)", (month,))
                self._months.add(month)
            for attempt in range(DEADLOCK_RETRIES):
                try:
                    async with conn.transaction():
                        return await self._insert(conn, batch)
                except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                    if attempt == DEADLOCK_RETRIES - 1:
                        raise
                    log.info("database write retried after a deadlock")
        except psycopg.Error as exc:
            await self.close()
            raise DatabaseUnavailable(f"database write failed: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    async def _insert(self, conn: psycopg.AsyncConnection[Any],
                      batch: Sequence[envelope.Opened]) -> list[bool]:
        first: dict[tuple[str, int], int] = {}
        for index, opened in enumerate(batch):
            first.setdefault((opened.header.site, opened.header.seq), index)
        ordered = sorted(first)  # one lock order for every receiver: no deadlock between them
        headers = [batch[first[key]].header for key in ordered]
        cur = await conn.execute(
            "INSERT INTO seen_envelope (site, seq, kind, purpose, received_by) "
            "SELECT s, q, k, p, %s FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[])"
            " AS t(s, q, k, p) ORDER BY s, q ON CONFLICT DO NOTHING RETURNING site, seq",
            (self.received_by, [h.site for h in headers], [h.seq for h in headers],
             [h.kind for h in headers], [h.purpose for h in headers]))
        new = {(str(site), int(seq)) for site, seq in await cur.fetchall()}
        fresh = [batch[first[key]] for key in ordered if key in new]
        await _write_content(conn, fresh)
        return [(o.header.site, o.header.seq) in new and first[(o.header.site, o.header.seq)] == i
                for i, o in enumerate(batch)]


_INSERTS: dict[str, Query] = {
    "release": "INSERT INTO release (site, seq, purpose, tier, window_start, window_end, "
               "created, catalogue, consent_id, consent_hash, recipient_key, device_key) "
               "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
    "release_record": 'INSERT INTO release_record (site, seq, ordinal, purpose, window_start, '
                      'point, "values") VALUES (%s, %s, %s, %s, %s, %s, %s)',
    "consent_notice": "INSERT INTO consent_notice (site, seq, purpose, event, tier, record_id, "
                      "changed_at, created, body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
    "deletion_request": "INSERT INTO deletion_request (site, seq, requested_at, scope, created, "
                        "body) VALUES (%s, %s, %s, %s, %s, %s)",
    "event_notice": "INSERT INTO event_notice (site, seq, purpose, created, body) "
                    "VALUES (%s, %s, %s, %s, %s)",
}


def _rows(fresh: Sequence[envelope.Opened]) -> dict[str, list[tuple[Any, ...]]]:
    """Table -> rows for the content of newly accepted envelopes."""
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in _INSERTS}
    for opened in fresh:
        h, body = opened.header, opened.body
        created = datetime.fromtimestamp(h.created / 1000, UTC)
        if h.kind == "data" and h.window_start is not None and h.window_end is not None:
            start = _utc(h.window_start)
            rows["release"].append((h.site, h.seq, h.purpose, h.tier, start, _utc(h.window_end),
                                    created, h.catalogue, h.consent_id, h.consent_hash,
                                    h.recipient_key, h.device_key))
            for ordinal, record in enumerate(body.get("records", [])):
                values = {k: v for k, v in record.items() if k != "point"}
                rows["release_record"].append((h.site, h.seq, ordinal, h.purpose, start,
                                               record["point"], Jsonb(values)))
        elif h.kind == "consent":
            rows["consent_notice"].append((
                h.site, h.seq, h.purpose, _text(body, "event"), _text(body, "tier"),
                _text(body, "record_id"), _text(body, "timestamp"), created, Jsonb(body)))
        elif h.kind == "deletion":
            rows["deletion_request"].append((h.site, h.seq, _text(body, "requested_at"),
                                             _text(body, "scope"), created, Jsonb(body)))
        else:
            rows["event_notice"].append((h.site, h.seq, h.purpose, created, Jsonb(body)))
    return rows


async def _write_content(conn: psycopg.AsyncConnection[Any],
                         fresh: Sequence[envelope.Opened]) -> None:
    async with conn.cursor() as cur:
        for table, rows in _rows(fresh).items():
            if rows:
                await cur.executemany(_INSERTS[table], rows)


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return None if value is None else str(value)


class _DatabaseDecides(ReplayStore):
    """The replay check happens in the database, in the storing transaction; nothing local."""

    def __init__(self) -> None:  # no sqlite file
        pass

    def seen(self, site: str, seq: int) -> bool:
        return False

    def add(self, site: str, seq: int) -> None:
        pass

    def close(self) -> None:
        pass


class DbReceiver(Receiver):
    """A :class:`~agent.cloud.receiver.Receiver` that stores into PostgreSQL and acknowledges each
    message to the broker only once what it carried is committed (or it was rejected)."""

    def __init__(self, *, store: PgStore, device_keys: Mapping[str, ed25519.Ed25519PublicKey],
                 recipient_keys: Mapping[str, RecipientPrivateKey], rules: ContentRules,
                 batch: int = 200, limits: envelope.Limits = envelope.DEFAULT_LIMITS) -> None:
        # output is never written: accepted envelopes go to the database
        super().__init__(device_keys=device_keys, recipient_keys=recipient_keys, rules=rules,
                         replay=_DatabaseDecides(), output=io.StringIO(), limits=limits)
        self.store = store
        self.batch = batch

    def check(self, topic: str, payload: bytes) -> envelope.Opened | None:
        """Verify, decrypt and check one message; None (counted and logged) if rejected."""
        try:
            return self._open(topic, payload)
        except (EnvelopeError, TopicError) as exc:
            self.rejected[re.sub(r"\d+", "N", str(exc).split(":")[0])] += 1
            log.warning("rejected an envelope: %s", exc)
            return None

    async def process(self, messages: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Check and store a batch of (topic, payload); per message, whether it was stored."""
        opened: list[tuple[int, envelope.Opened]] = []
        for index, (topic, payload) in enumerate(messages):
            found = self.check(topic, payload)
            if found is not None:
                opened.append((index, found))
        stored = [False] * len(messages)
        if not opened:
            return stored
        fresh = await self.store.store([o for _, o in opened])
        for (index, _), new in zip(opened, fresh, strict=True):
            stored[index] = new
            if new:
                self.accepted += 1
            else:
                self.rejected["replay"] += 1
                log.warning("rejected an envelope: replay: (site, seq) was already stored")
        return stored

    async def run(self, config: BrokerConfig, group: str | None) -> None:
        """As :meth:`Receiver.run`, storing into the database; forever, reconnecting to the
        broker and the database."""
        context, attempt = tls_context(config), 0
        while True:
            try:
                await self.store.connect()
                async with connect(config, context, manual_ack=True) as session:
                    await self._subscribe(session, group)
                    attempt = 0
                    await self._consume(session)
            except (UplinkError, DatabaseUnavailable) as exc:
                delay = backoff_delay(attempt, config, lambda: 0.5)
                attempt += 1
                log.warning("receiver: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _consume(self, session: Session) -> None:
        messages = session.messages
        async for message in messages:
            batch = [message]
            while len(messages) and len(batch) < self.batch:
                batch.append(await anext(messages))
            await self.process([(m.topic, m.payload) for m in batch])
            for m in batch:  # committed or rejected: now the broker may forget them
                m.ack()
