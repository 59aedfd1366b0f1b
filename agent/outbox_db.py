"""The outbox's sqlite file: connection settings, schema, and the one migration.

WAL with ``synchronous=FULL`` (see :mod:`agent.outbox`). Tables from before sequence numbers
were stored get the ``seq`` column; their rows have none.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

FIELDS = "topic, purpose, recipient, tier, kind, priority, created, size, payload"
# The sequence number of a data envelope (control messages are in no release log).
DATA_SEQ = "CASE WHEN kind = 'data' THEN seq END"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS envelopes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER, topic TEXT NOT NULL,
    purpose TEXT NOT NULL, recipient TEXT NOT NULL, tier TEXT NOT NULL, kind TEXT NOT NULL,
    priority INTEGER NOT NULL, created REAL NOT NULL, size INTEGER NOT NULL,
    payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS envelopes_order ON envelopes (priority, id);
CREATE INDEX IF NOT EXISTS envelopes_created ON envelopes (created);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drops (purpose TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or create) the outbox file in autocommit mode; the caller runs transactions."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(envelopes)")}
    if columns and "seq" not in columns:
        conn.execute("ALTER TABLE envelopes ADD COLUMN seq INTEGER")
        log.info("outbox: envelopes table now stores sequence numbers (%s)", path.name)
    conn.executescript(_SCHEMA)
    return conn
