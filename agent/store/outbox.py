"""The durable outbox: sealed envelopes wait here until the broker acknowledges them.

sqlite (stdlib) in WAL mode with ``synchronous=FULL``: in WAL mode FULL fsyncs the log at every
commit, so a commit that returned survives a power cut; NORMAL would keep the database
consistent but could lose the last commits. The fsync cost is paid once per batch, because
enqueues and acknowledgements are grouped: one transaction per ``batch_items`` or per call of
:meth:`Outbox.flush`. The daemon's flusher (:meth:`run_flusher`) commits new envelopes every
``flush_interval``; acknowledgements alone wait for the next envelope commit, ``batch_items``
of them, or ``ack_interval`` (each commit appends a WAL frame per page it changed, and an SD
card wears: ``bench/bench_outbox_writes.py``). Only committed envelopes are handed to the
publisher, so nothing is sent that a power cut could take back; an acknowledgement lost in a
power cut only means the envelope is sent again, and receivers dedupe by (site, seq).

What became of each data envelope is reported by sequence number to :attr:`Outbox.events`
(the release log): queued once committed, with the log entry's note stored in its row by the
same commit; sent when the broker acknowledged it, durably before its row is deleted; and
when :meth:`Outbox.purge` or the bound removes it, durably before the delete: possibly sent if
the publisher had handed it to the MQTT client (:meth:`Outbox.publishing` marks it in flight,
committed before the PUBLISH, so a restart does not forget it), else withdrawn.
A row leaves only after its queued report succeeded (a failed one is repeated first), and
:meth:`Outbox.noted` gives every stored note for the start-up check after a power cut: the
release log lists every envelope that can leave.

Bound: when the stored bytes exceed ``max_bytes`` the outbox drops lowest priority first, oldest
first (priorities per purpose are passed in, e.g. from the catalogue; consent and deletion
messages rank above every purpose). Every drop is counted per purpose and persisted.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from agent.errors import OutboxError
from agent.store.outbox_db import (
    DATA_SEQ,
    FIELDS,
    IN_FLIGHT,
    open_database,
    stored_bytes,
    transaction,
)
from agent.store.outbox_types import Noted, OutboxConfig, OutboxItem, OutboxStats, ReleaseEvents

__all__ = ["CONTROL_PRIORITY", "Noted", "Outbox", "OutboxConfig", "OutboxItem", "OutboxStats",
           "ReleaseEvents"]

log = logging.getLogger(__name__)

# Consent changes and deletion requests go first and are dropped last.
CONTROL_PRIORITY = 1_000_000
_CONTROL_KINDS = frozenset({"consent", "deletion"})
_SEQ_BLOCK = 1024
_COLUMNS = "id, topic, purpose, kind, created, payload"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Row:
    """An envelope enqueued and not yet committed: one row of ``envelopes`` to insert."""

    seq: int | None
    topic: str
    purpose: str
    recipient: str
    tier: str
    kind: str
    priority: int
    created: float
    size: int
    payload: bytes
    log_entry: str | None

    def params(self, row_id: int) -> tuple[object, ...]:
        """The INSERT's parameters: id, seq, the columns of FIELDS in their order, log_entry."""
        return (row_id, self.seq, self.topic, self.purpose, self.recipient, self.tier,
                self.kind, self.priority, self.created, self.size, self.payload, self.log_entry)

class Outbox:
    """A bounded, durable FIFO of envelopes (synchronous; each call is a few ms at most)."""

    def __init__(self, path: Path, config: OutboxConfig | None = None, *,
                 clock: Callable[[], float] = time.time,
                 on_commit: Callable[[], None] | None = None) -> None:
        self.config = config or OutboxConfig()
        self.on_commit = on_commit
        self.events: ReleaseEvents | None = None
        """Told what became of data envelopes (the pipeline connects the release log)."""
        self._path = path
        self._clock = clock
        self._pending: list[_Row] = []
        self._unlogged: list[Noted] = []  # committed, not yet reported queued
        self._acked: set[int] = set()
        self._acked_since = 0.0
        self._work = asyncio.Event()  # set by enqueue and ack: the idle flusher sleeps until then
        self._publishing: list[int] = []  # to mark in flight with the next commit
        # Handed out by the last next_batch; of those, dropped by the bound (acknowledged after
        # all: it arrived, no longer a drop); and purged or dropped while handed out or in
        # flight (id -> seq: their acknowledgement may still come, then they were sent).
        self._handed: set[int] = set()
        self._dropped_handed: dict[int, str] = {}
        self._gone_seqs: dict[int, int] = {}
        self._arrived: list[str] = []
        self._tokens = 0.0
        self._refilled = clock()
        self.purged: dict[str, int] = {}
        """Envelopes removed by :meth:`purge` since start, per purpose (whoever called it)."""
        with self._db_errors("open"):
            self._conn = open_database(path)
            self._next_id = 1 + int(self._conn.execute(
                "SELECT COALESCE(MAX(id), 0) FROM envelopes").fetchone()[0])
            # Stored bytes: summed once here, then kept as a running total (added on insert,
            # less the sizes of the rows each delete removes); a sum per commit would scan the
            # whole table, which made draining a large backlog slow.
            self._bytes = stored_bytes(self._conn)
            # Numbers below the stored reservation may have been used before a crash.
            self._seq_reserved = self._counter("seq_reserved")
            self._marks: dict[str, int] = dict(self._conn.execute(
                "SELECT substr(name, 6), value FROM counters WHERE name LIKE 'mark:%'"
            ).fetchall())
        self._seq_next = self._seq_reserved
        self._seq_dirty = False
        self._marks_pending: dict[str, int] = {}

    @contextmanager
    def _db_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {action} failed ({self._path}): {exc}") from exc

    def _report(self, call: Callable[[ReleaseEvents], None] | None = None) -> None:
        """Tell :attr:`events` about committed envelopes not yet reported queued, then
        ``call`` it: every report, and so every delete, waits until they are listed."""
        events = self.events
        if events is None:
            self._unlogged.clear()  # nobody to tell; the notes stay in the rows
            return
        try:
            if self._unlogged:
                events.queued(list(self._unlogged))
                self._unlogged.clear()
            if call is not None:
                call(events)
        except OSError as exc:
            raise OutboxError(f"outbox could not record what became of envelopes: {exc}"
                              ) from exc

    def _counter(self, name: str) -> int:
        row = self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Commit what is pending and close the database."""
        self.flush()
        with self._db_errors("close"):
            self._conn.close()

    def next_sequence(self) -> int:
        """The next envelope sequence number for this site: monotonic across restarts.

        Blocks of numbers are reserved durably before use, so a power cut leaves a gap but
        never a reused number (which receivers would reject as a replay).
        """
        if self._seq_next >= self._seq_reserved:
            self._seq_reserved = self._seq_next + _SEQ_BLOCK
            self._seq_dirty = True
            self.flush()
        value = self._seq_next
        self._seq_next += 1
        return value

    def mark(self, key: str) -> int | None:
        """The high-water mark committed for ``key`` (see :meth:`enqueue`), if any."""
        return self._marks_pending.get(key, self._marks.get(key))

    def enqueue(self, payload: bytes, *, topic: str, purpose: str, recipient: str, tier: str,
                kind: str, priority: int | None = None, seq: int | None = None,
                mark: tuple[str, int] | None = None, log_entry: str | None = None) -> None:
        """Queue an envelope; it is committed with the next batch (see :meth:`flush`).

        ``seq`` is the envelope's sequence number: what becomes of a data envelope is reported
        to :attr:`events` under it. ``mark`` = (key, value) is committed in the same
        transaction as the envelope: the pipeline records there the end of the last window
        released per purpose, recipient and tier, so after a crash it never releases a window
        twice. ``log_entry`` (a data envelope's release log note) is stored in its row and
        reported queued once committed.
        """
        if mark is not None and self.mark(mark[0]) != mark[1]:
            self._marks_pending[mark[0]] = mark[1]
        if priority is None:
            priority = (CONTROL_PRIORITY if kind in _CONTROL_KINDS
                        else self.config.priorities.get(purpose, 0))
        self._pending.append(_Row(seq=seq, topic=topic, purpose=purpose, recipient=recipient,
                                  tier=tier, kind=kind, priority=priority,
                                  created=self._clock(), size=len(payload), payload=payload,
                                  log_entry=log_entry))
        self._work.set()
        if len(self._pending) >= self.config.batch_items:
            self.flush()

    def ack(self, ids: Sequence[int]) -> None:
        """Mark envelopes as acknowledged by the broker; deleted with a later commit."""
        fresh = [i for i in dict.fromkeys(ids) if i not in self._acked]
        if not fresh:
            return
        if not self._acked:
            self._acked_since = self._clock()
        self._acked.update(fresh)
        self._work.set()
        self._arrived += [self._dropped_handed.pop(i) for i in fresh
                          if i in self._dropped_handed]
        if self.events is not None and (seqs := self._data_seqs(fresh)):
            self._report(lambda events: events.sent(seqs))
        if len(self._acked) >= self.config.batch_items:
            self.flush()

    def _data_seqs(self, ids: Sequence[int]) -> list[int]:
        seqs = [self._gone_seqs.pop(i) for i in ids if i in self._gone_seqs]
        with self._db_errors("read"):
            seqs += [int(r[0]) for r in self._conn.execute(
                f"SELECT {DATA_SEQ} FROM envelopes WHERE id IN ({', '.join('?' * len(ids))})",
                list(ids)) if r[0] is not None]
        return seqs

    def publishing(self, items: Sequence[OutboxItem]) -> None:
        """The publisher is about to hand ``items`` to the MQTT client: their data envelopes
        are marked in flight, committed (with whatever else is pending) before this returns.

        Removed later by a purge or the bound before the broker acknowledged them, also after
        a restart, they are reported possibly sent, not withdrawn: the PUBLISH may have
        reached the broker. Envelopes marked already (sent again after a reconnect) cost no
        write, nor do control messages (in no release log)."""
        ids = [item.id for item in items if item.kind == "data"]
        if not ids:
            return
        with self._db_errors("read"):
            marked = {int(r[0]) for r in self._conn.execute(
                f"SELECT id FROM in_flight WHERE id IN ({', '.join('?' * len(ids))})", ids)}
        self._publishing = [i for i in ids if i not in marked]
        if not self._publishing:
            return
        try:
            self.flush()
        finally:
            self._publishing = []  # on a failure nothing is published: not in flight

    def commit_due(self) -> None:
        """The flusher's step: commit new envelopes; acknowledgements alone only once
        ``ack_interval`` has passed since the first of them (fewer commits, fewer writes)."""
        if (self._pending or self._seq_dirty or self._marks_pending or self._publishing or (
                self._acked and self._clock() - self._acked_since >= self.config.ack_interval)):
            self.flush()

    def flush(self) -> None:
        """Commit pending enqueues, acks and in-flight marks in one transaction; returns after
        the commit."""
        if not (self._pending or self._acked or self._seq_dirty or self._marks_pending
                or self._publishing):
            return
        if self._acked:
            self._report(lambda events: events.sync())  # "sent" is durable before rows go
        stored = self._bytes
        with self._db_errors("commit"):
            try:
                with transaction(self._conn):
                    self._write_batch()
            except BaseException:
                self._bytes = stored
                with suppress(sqlite3.Error):  # what is stored, should the failure be odd
                    self._bytes = stored_bytes(self._conn)
                raise
        self._unlogged += [(row.seq, row.size, row.log_entry) for row in self._pending
                           if row.seq is not None and row.log_entry is not None
                           and row.kind == "data"]
        self._pending.clear()
        self._acked.clear()
        self._publishing = []
        self._arrived.clear()
        self._seq_dirty = False
        self._marks.update(self._marks_pending)
        self._marks_pending.clear()
        self._report()  # the release log lists them before the publisher is told
        if self.on_commit is not None:
            self.on_commit()

    def _write_batch(self) -> None:
        c = self._conn
        # Deletes first: new rows take the room acknowledged ones leave in the same leaf page
        # instead of splitting it (more pages, and the free list on page 1, written).
        acked = list(self._acked)
        self._bytes -= stored_bytes(c, acked)  # some may be gone already (purged, dropped)
        c.executemany("DELETE FROM envelopes WHERE id = ?", [(i,) for i in acked])
        c.executemany("DELETE FROM in_flight WHERE id = ?", [(i,) for i in acked])
        # Only rows still stored: an id in in_flight always names an envelope.
        c.executemany("INSERT OR IGNORE INTO in_flight (id) SELECT id FROM envelopes "
                      "WHERE id = ?", [(i,) for i in self._publishing])
        first, self._next_id = self._next_id, self._next_id + len(self._pending)
        c.executemany(
            f"INSERT INTO envelopes (id, seq, {FIELDS}, log_entry) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [row.params(first + n) for n, row in enumerate(self._pending)])
        c.executemany("UPDATE drops SET count = count - 1 WHERE purpose = ?",
                      [(p,) for p in self._arrived])
        if self._seq_dirty:
            c.execute("INSERT INTO counters (name, value) VALUES ('seq_reserved', ?) "
                      "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                      (self._seq_reserved,))
        c.executemany("INSERT INTO counters (name, value) VALUES (?, ?) "
                      "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                      [(f"mark:{k}", v) for k, v in self._marks_pending.items()])
        self._bytes += sum(row.size for row in self._pending)
        if self._bytes > self.config.max_bytes:
            self._enforce_bound()

    def _enforce_bound(self) -> None:
        dropped: dict[str, int] = {}
        removed: list[tuple[int, int | None, bool]] = []
        while self._bytes > self.config.max_bytes:
            rows = self._conn.execute(
                f"SELECT id, purpose, size, {DATA_SEQ}, {IN_FLIGHT} FROM envelopes "
                "ORDER BY priority, id LIMIT 64").fetchall()
            if not rows:
                break
            for row_id, purpose, size, seq, flying in rows:
                if self._bytes <= self.config.max_bytes:
                    break
                self._conn.execute("DELETE FROM envelopes WHERE id = ?", (row_id,))
                if flying:
                    self._conn.execute("DELETE FROM in_flight WHERE id = ?", (row_id,))
                if row_id in self._handed:
                    self._dropped_handed[row_id] = purpose
                removed.append((row_id, seq, bool(flying)))
                self._bytes -= size
                dropped[purpose] = dropped.get(purpose, 0) + 1
        self._report_removed(removed, "outbox_full")  # before the COMMIT that deletes them
        self._conn.executemany(
            "INSERT INTO drops (purpose, count) VALUES (?, ?) "
            "ON CONFLICT (purpose) DO UPDATE SET count = count + excluded.count",
            sorted(dropped.items()))
        log.warning("outbox over its %d-byte bound: dropped %s", self.config.max_bytes,
                    ", ".join(f"{n} {p}" for p, n in sorted(dropped.items())))

    def next_batch(self, limit: int = 50) -> list[OutboxItem]:
        """Committed envelopes to publish next: live ones first, then backlog at the set rate.

        Within each group the higher priority goes first, then the older. An envelope stays
        until :meth:`ack`; if its publish fails it is handed out again.
        """
        now = self._clock()
        horizon = now - self.config.live_horizon
        live = self._select("created >= ?", (horizon,), limit, index="envelopes_created")
        rate = self.config.backlog_rate
        self._tokens = min(max(rate, 1.0), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        room = min(limit - len(live), int(self._tokens))
        backlog = self._backlog(horizon, room) if room > 0 else []
        self._tokens -= len(backlog)
        self._handed, self._dropped_handed = {item.id for item in live + backlog}, {}
        self._gone_seqs = {}
        return live + backlog

    def _backlog(self, horizon: float, limit: int) -> list[OutboxItem]:
        """Backlog envelopes, higher priority first, then older: the (priority, id) index is
        walked once per priority present, so a batch costs the same whatever the backlog's
        size (one ORDER BY priority DESC, id over the backlog sorted all of it every batch)."""
        items: list[OutboxItem] = []
        with self._db_errors("read"):
            priority = self._conn.execute("SELECT MAX(priority) FROM envelopes").fetchone()[0]
        while priority is not None and len(items) < limit:
            items += self._select("priority = ? AND created < ?", (priority, horizon),
                                  limit - len(items), index="envelopes_order", order="id")
            with self._db_errors("read"):
                priority = self._conn.execute(
                    "SELECT MAX(priority) FROM envelopes WHERE priority < ?",
                    (priority,)).fetchone()[0]
        return items

    def _select(self, where: str, args: tuple[float, ...], limit: int, *, index: str,
                order: str = "priority DESC, id") -> list[OutboxItem]:
        """Rows by ``where`` through the named index: left to itself, sqlite walks the
        (priority, id) index for a LIMIT it cannot see (a parameter) and reads every row of a
        large backlog to find the few live ones."""
        with self._db_errors("read"):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM envelopes INDEXED BY {index} WHERE {where} "
                f"ORDER BY {order} LIMIT ?", (*args, limit + len(self._acked))).fetchall()
        items = [OutboxItem(id=r[0], topic=r[1], purpose=r[2], kind=r[3], created=r[4],
                            payload=r[5]) for r in rows if r[0] not in self._acked]
        return items[:limit]

    def purge(self, purpose: str, recipient: str | None = None,
              tiers: Sequence[str] | None = None, *, reason: str = "consent_change") -> int:
        """Delete queued data envelopes a withdrawn or narrowed consent no longer covers.

        Consent-change and deletion messages are never purged. What was removed is reported
        to :attr:`events` with ``reason`` (consent_change, expiry, erasure) before the delete:
        possibly sent if it was in flight (:meth:`publishing`), else withdrawn. Returns how
        many were removed.
        """
        self.flush()
        where, args = "kind NOT IN ('consent', 'deletion') AND purpose = ?", [purpose]
        if recipient is not None:
            where += " AND recipient = ?"
            args.append(recipient)
        if tiers is not None:
            where += f" AND tier IN ({', '.join('?' * len(tiers))})"
            args.extend(tiers)
        with self._db_errors("purge"):
            rows = self._conn.execute(
                f"SELECT id, {DATA_SEQ}, size, {IN_FLIGHT} FROM envelopes WHERE {where}",
                args).fetchall()
        self._report_removed([(i, seq, bool(flying)) for i, seq, _, flying in rows], reason)
        with self._db_errors("purge"):
            # The rows just read: nothing else writes between (one connection, one thread).
            with transaction(self._conn):
                count = self._conn.execute(f"DELETE FROM envelopes WHERE {where}", args).rowcount
                self._conn.executemany("DELETE FROM in_flight WHERE id = ?",
                                       [(row[0],) for row in rows if row[3]])
            self._bytes -= sum(size for _, _, size, _ in rows)
        self.purged[purpose] = self.purged.get(purpose, 0) + count
        log.log(logging.INFO if count else logging.DEBUG,
                "outbox purge for purpose %s%s: removed %d queued envelopes", purpose,
                f" (tiers {', '.join(tiers)})" if tiers is not None else "", count)
        return int(count)

    def _report_removed(self, rows: Sequence[tuple[int, int | None, bool]], reason: str) -> None:
        """Report rows (id, seq, in flight) about to be removed: possibly sent if in flight,
        else withdrawn. Remember the seqs of those handed out or in flight, in case their
        acknowledgement still comes (then they did leave)."""
        unsent = [seq for _, seq, flying in rows if seq is not None and not flying]
        maybe = [seq for _, seq, flying in rows if seq is not None and flying]
        self._gone_seqs.update((i, seq) for i, seq, flying in rows
                               if seq is not None and (flying or i in self._handed))
        if unsent:
            self._report(lambda events: events.withdrawn(unsent, reason))
        if maybe:
            self._report(lambda events: events.possibly_sent(maybe, reason))

    def noted(self) -> list[Noted]:
        """Every stored data envelope with a release log note (seq, size, note), by sequence
        number: what the start-up check compares with the release log."""
        self.flush()
        with self._db_errors("read"):
            rows = self._conn.execute(
                "SELECT seq, size, log_entry FROM envelopes WHERE kind = 'data' "
                "AND seq IS NOT NULL AND log_entry IS NOT NULL ORDER BY seq").fetchall()
        return [(int(seq), int(size), str(note)) for seq, size, note in rows]

    def queued_data(self) -> set[tuple[str, str, str]]:
        """(purpose, recipient, tier) of every data envelope still in the outbox."""
        self.flush()
        with self._db_errors("read"):
            rows = self._conn.execute(
                "SELECT DISTINCT purpose, recipient, tier FROM envelopes "
                "WHERE kind NOT IN ('consent', 'deletion')").fetchall()
        return {(str(p), str(r), str(t)) for p, r, t in rows}

    def unacknowledged(self) -> int:
        """Envelopes the broker has not acknowledged yet, committed or not (acknowledgements
        not yet committed count)."""
        acked = list(self._acked)
        with self._db_errors("read"):
            depth = int(self._conn.execute(
                f"SELECT COUNT(*) FROM envelopes WHERE id NOT IN ({', '.join('?' * len(acked))})",
                acked).fetchone()[0])
        return depth + len(self._pending)

    def stats(self) -> OutboxStats:
        """Depth, stored bytes, pending (uncommitted) items, oldest age and drops; envelopes
        acknowledged but not yet deleted no longer count."""
        acked = list(self._acked)
        marks = ", ".join("?" * len(acked))
        with self._db_errors("read"):
            depth, oldest = self._conn.execute(
                f"SELECT COUNT(*), MIN(created) FROM envelopes WHERE id NOT IN ({marks})",
                acked).fetchone()
            gone = stored_bytes(self._conn, acked)
            drops = dict(self._conn.execute("SELECT purpose, count FROM drops").fetchall())
        age = None if oldest is None else max(0.0, self._clock() - float(oldest))
        return OutboxStats(depth=int(depth), bytes=self._bytes - gone,
                           pending=len(self._pending), oldest_age=age, drops=drops)

    async def run_flusher(self) -> None:
        """Commit pending work every ``flush_interval`` seconds (:meth:`commit_due`) until
        cancelled; then everything. With nothing pending it sleeps until an enqueue or an
        acknowledgement: an idle daemon is not woken every second for nothing."""
        try:
            while True:
                if not (self._pending or self._acked or self._marks_pending or self._seq_dirty
                        or self._publishing):
                    self._work.clear()
                    await self._work.wait()
                await asyncio.sleep(self.config.flush_interval)
                self.commit_due()
        finally:
            # Whatever was queued when we are cancelled (SIGTERM) is committed, then the
            # cancellation propagates.
            self.flush()
