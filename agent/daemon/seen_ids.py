"""Replay protection for operator commands: the ids already accepted, until they expire.

sqlite in the state directory (WAL, ``synchronous=FULL``): an id is recorded and committed
*before* its command is applied, so a command is applied at most once even across a power cut.
Rows are kept until the command's own expiry has passed (after which the gateway refuses it as
expired anyway), so the table stays bounded by the command rate times the longest lifetime.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.errors import AgentError

SEEN_FILE = "command-ids.sqlite"


class SeenIdsError(AgentError):
    """The seen-ids store cannot be opened or written: commands cannot be checked, stop."""


class SeenIds:
    """Durable set of accepted command ids with their expiry (Unix seconds)."""

    def __init__(self, path: Path) -> None:
        try:
            self._conn = sqlite3.connect(path, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, "
                               "expires INTEGER NOT NULL) WITHOUT ROWID")
        except sqlite3.Error as exc:
            raise SeenIdsError(f"cannot open the command id store {path}: {exc}") from exc

    def add(self, command_id: str, expires: int) -> bool:
        """Record ``command_id``; False if it was already there (a replay)."""
        try:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO seen (id, expires) VALUES (?, ?)", (command_id, expires))
        except sqlite3.Error as exc:
            raise SeenIdsError(f"cannot record a command id: {exc}") from exc
        return cursor.rowcount == 1

    def prune(self, now: float) -> int:
        """Forget ids whose command expired before ``now``; returns how many."""
        try:
            cursor = self._conn.execute("DELETE FROM seen WHERE expires < ?", (int(now),))
        except sqlite3.Error as exc:
            raise SeenIdsError(f"cannot prune command ids: {exc}") from exc
        return cursor.rowcount

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        self._conn.close()
