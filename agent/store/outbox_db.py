"""The outbox's sqlite file: connection settings, schema, and the one migration.

WAL with ``synchronous=FULL`` (see :mod:`agent.store.outbox`), 1 KiB pages for a new file (an
existing file keeps its page size). The envelopes table has no AUTOINCREMENT: that keeps a
counter row in ``sqlite_sequence`` which every insert rewrites, one more page (and WAL frame)
per commit. :class:`agent.store.outbox.Outbox` gives ids itself, above the largest stored one; they
only need to be unique while it runs. Tables from before sequence numbers were stored are
rebuilt once, keeping their ids; their rows get no ``seq``. ``log_entry`` (the release log's
note of a data envelope, :meth:`policy.rights.ReleaseLog.note`) is added in place to a table
from before it (no row is rewritten); older rows have none.

``in_flight`` holds the ids of data envelopes the publisher has handed to the MQTT client at
least once and the broker has not acknowledged (:meth:`agent.store.outbox.Outbox.publishing`): a
table of its own, so marking a batch writes one small page, not every envelope's row (with
its overflow pages) again. An id leaves it in the transaction that deletes its envelope. A file
from before it gets the table empty: what an older agent published and never saw acknowledged
is not known.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# Small pages: a commit appends one WAL frame per page it changed, so 1 KiB pages write less
# for the few small rows a commit touches (bench_outbox_writes: 40-50 % fewer bytes); bigger
# envelopes spill into overflow pages, which costs less than it saves.
PAGE_SIZE = 1024

FIELDS = "topic, purpose, recipient, tier, kind, priority, created, size, payload"
# The sequence number of a data envelope (control messages are in no release log).
DATA_SEQ = "CASE WHEN kind = 'data' THEN seq END"
_TABLE = """
CREATE TABLE IF NOT EXISTS envelopes (
    id INTEGER PRIMARY KEY, seq INTEGER, topic TEXT NOT NULL, purpose TEXT NOT NULL,
    recipient TEXT NOT NULL, tier TEXT NOT NULL, kind TEXT NOT NULL,
    priority INTEGER NOT NULL, created REAL NOT NULL, size INTEGER NOT NULL,
    payload BLOB NOT NULL, log_entry TEXT);
"""
_SCHEMA = _TABLE + """
CREATE INDEX IF NOT EXISTS envelopes_order ON envelopes (priority, id);
CREATE INDEX IF NOT EXISTS envelopes_created ON envelopes (created);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drops (purpose TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS in_flight (id INTEGER PRIMARY KEY);
"""
# 1 for an envelope handed to the MQTT client and not acknowledged, else 0.
IN_FLIGHT = "id IN (SELECT id FROM in_flight)"


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or create) the outbox file in autocommit mode; the caller runs transactions."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only on a new file
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    _migrate(conn, path)
    conn.executescript(_SCHEMA)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; on any failure ``ROLLBACK``, unless sqlite has rolled
    back already (it does after some errors, a full disk on COMMIT: a second ROLLBACK would
    fail and hide the real error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def stored_bytes(conn: sqlite3.Connection, ids: Sequence[int] | None = None) -> int:
    """Stored bytes of the rows with these ids (those no longer stored count nothing), or of
    every row: a scan of the whole table, which the outbox does only at open and after a
    failed commit (it keeps a running total)."""
    if ids is None:
        return int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM envelopes").fetchone()[0])
    total = 0
    for start in range(0, len(ids), 500):
        chunk = list(ids[start:start + 500])
        total += int(conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM envelopes "
            f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk).fetchone()[0])
    return total


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Rebuild an envelopes table with AUTOINCREMENT and without ``seq``, in one transaction
    (a crash leaves the old table; the indexes are created again by the schema); then add
    ``log_entry`` to one without it."""
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'envelopes'").fetchone()
    if row is None:
        return
    if "AUTOINCREMENT" in row[0].upper():
        _rebuild(conn, path)
    if "log_entry" not in {r[1] for r in conn.execute("PRAGMA table_info(envelopes)")}:
        conn.execute("ALTER TABLE envelopes ADD COLUMN log_entry TEXT")
        log.info("outbox: envelopes table given release log notes (%s)", path.name)


def _rebuild(conn: sqlite3.Connection, path: Path) -> None:
    conn.executescript(
        "BEGIN IMMEDIATE;" + _TABLE.replace("envelopes", "envelopes_new", 1)
        + f"INSERT INTO envelopes_new (id, {FIELDS}) SELECT id, {FIELDS} FROM envelopes;"
        "DROP TABLE envelopes; ALTER TABLE envelopes_new RENAME TO envelopes;"
        "DELETE FROM sqlite_sequence WHERE name = 'envelopes'; COMMIT;")
    log.info("outbox: envelopes table rebuilt with sequence numbers (%s)", path.name)
