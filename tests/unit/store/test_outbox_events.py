"""The outbox reports what became of data envelopes, in an order a power cut cannot betray,
and commits acknowledgements with fewer writes."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.errors import OutboxError
from agent.store.outbox import Outbox, OutboxConfig
from tests.unit.store.test_outbox import Clock


class Events:
    """Records the reports, and how many rows the outbox held when each came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[tuple[str, list[int], int]] = []

    def _rows(self) -> int:
        with contextlib.closing(sqlite3.connect(self.path)) as db:  # what is committed
            return int(db.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0])

    def queued(self, releases: Sequence[tuple[int, int, str]]) -> None:
        self.calls.append(("queued", [seq for seq, _, _ in releases], self._rows()))

    def sent(self, seqs: Sequence[int]) -> None:
        self.calls.append(("sent", list(seqs), self._rows()))

    def sync(self) -> None:
        self.calls.append(("sync", [], self._rows()))

    def withdrawn(self, seqs: Sequence[int], reason: str) -> None:
        self.calls.append((f"withdrawn:{reason}", list(seqs), self._rows()))

    def possibly_sent(self, seqs: Sequence[int], reason: str) -> None:
        self.calls.append((f"possibly_sent:{reason}", list(seqs), self._rows()))


def _box(tmp_path: Path, config: OutboxConfig | None = None,
         clock: Clock | None = None) -> tuple[Outbox, Events]:
    box = Outbox(tmp_path / "o.db", config, clock=clock or Clock())
    box.events = events = Events(tmp_path / "o.db")
    return box, events


def _put(box: Outbox, seqs: Sequence[int], purpose: str = "service", kind: str = "data",
         size: int = 100) -> None:
    for seq in seqs:
        box.enqueue(b"x" * size, topic=f"hems/v1/s1/{purpose}/{kind}", purpose=purpose,
                    recipient="company", tier="30min", kind=kind, seq=seq)
    box.flush()


def test_sent_is_reported_and_synced_before_the_rows_are_deleted(tmp_path: Path) -> None:
    box, events = _box(tmp_path)
    _put(box, [10, 11])
    _put(box, [12], purpose="service", kind="consent")  # control messages are in no log
    box.ack([item.id for item in box.next_batch()])
    box.flush()
    assert events.calls == [("sent", [10, 11], 3), ("sync", [], 3)]
    assert box.stats().depth == 0


def test_purge_reports_withdrawn_with_its_reason_before_the_delete(tmp_path: Path) -> None:
    box, events = _box(tmp_path)
    _put(box, [1, 2])
    _put(box, [3], purpose="improvement")
    assert box.purge("service", reason="erasure") == 2
    assert events.calls == [("withdrawn:erasure", [1, 2], 3)]
    assert box.purge("service") == 0 and len(events.calls) == 1  # nothing to report


def test_the_bound_reports_what_it_drops(tmp_path: Path) -> None:
    box, events = _box(tmp_path, OutboxConfig(max_bytes=250))
    _put(box, [1, 2])
    _put(box, [3])
    assert events.calls == [("withdrawn:outbox_full", [1], 2)]  # before its COMMIT


def test_an_envelope_purged_in_flight_and_then_acknowledged_is_reported_sent(
        tmp_path: Path) -> None:
    box, events = _box(tmp_path)
    _put(box, [7])
    _put(box, [8], purpose="improvement")
    [item, _] = box.next_batch()  # handed to the publisher
    box.purge("service")
    box.ack([item.id])  # its PUBACK still came: it left
    assert [c[:2] for c in events.calls] == [("withdrawn:consent_change", [7]), ("sent", [7])]
    assert box.unacknowledged() == 1  # the improvement envelope, not less


def test_acknowledgements_alone_wait_for_the_next_commit(tmp_path: Path) -> None:
    clock = Clock()
    commits: list[int] = []
    box, _ = _box(tmp_path, OutboxConfig(ack_interval=60.0), clock)
    box.on_commit = lambda: commits.append(1)
    _put(box, [1])
    box.ack([item.id for item in box.next_batch()])
    clock.now += 59
    box.commit_due()
    assert len(commits) == 1 and box.stats().depth == 0 and box.unacknowledged() == 0
    box.enqueue(b"y", topic="hems/v1/s1/service/data", purpose="service", recipient="company",
                tier="30min", kind="data", seq=2)
    box.commit_due()  # the new envelope takes the acknowledgement with it: one commit
    assert len(commits) == 2
    assert [r[0] for r in box._conn.execute("SELECT seq FROM envelopes")] == [2]
    box.ack([item.id for item in box.next_batch()])
    clock.now += 60
    box.commit_due()
    assert len(commits) == 3


def test_an_acknowledgement_lost_in_a_power_cut_only_means_sending_again(
        tmp_path: Path) -> None:
    box, _ = _box(tmp_path)
    _put(box, [1])
    box.ack([item.id for item in box.next_batch()])
    box._conn.close()  # power cut: the acknowledgement was never committed
    again = Outbox(tmp_path / "o.db", clock=Clock())
    assert [len(item.payload) for item in again.next_batch()] == [100]
    again.close()


def test_an_unchanged_mark_is_not_written_again(tmp_path: Path) -> None:
    box, _ = _box(tmp_path)
    for _ in range(2):
        box.enqueue(b"x", topic="t", purpose="service", recipient="company", tier="30min",
                    kind="data", mark=("service/company/30min", 1800))
        pending = dict(box._marks_pending)
        box.flush()
    assert pending == {}  # the second time: committed already, nothing to rewrite
    assert box.mark("service/company/30min") == 1800


def test_an_outbox_from_before_sequence_numbers_is_rebuilt_keeping_its_rows(
        tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript("""
            CREATE TABLE envelopes (
                id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                purpose TEXT NOT NULL, recipient TEXT NOT NULL, tier TEXT NOT NULL,
                kind TEXT NOT NULL, priority INTEGER NOT NULL, created REAL NOT NULL,
                size INTEGER NOT NULL, payload BLOB NOT NULL);
            CREATE INDEX envelopes_order ON envelopes (priority, id);
            CREATE INDEX envelopes_created ON envelopes (created);
            INSERT INTO envelopes VALUES (41, 't', 'service', 'company', '30min', 'data', 0,
                                          1000000.0, 3, x'616263');""")
    box, events = _box(tmp_path)
    sql = box._conn.execute("SELECT sql FROM sqlite_master WHERE name = 'envelopes'").fetchone()
    assert "AUTOINCREMENT" not in sql[0] and "seq INTEGER" in sql[0]
    [old] = box.next_batch()
    assert (old.id, old.payload) == (41, b"abc")
    _put(box, [5])
    assert [i.id for i in box.next_batch()] == [41, 42]
    box.ack([41])
    assert events.calls == []  # no seq stored: its release predates tracking (counted sent)
    box.close()


def test_a_new_outbox_file_has_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """A commit appends one WAL frame per page it changed: small pages write less."""
    new = Outbox(tmp_path / "new.db")
    assert new._conn.execute("PRAGMA page_size").fetchone()[0] == 1024
    new.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "old.db")) as db:
        db.execute("PRAGMA page_size = 4096")
        db.execute("CREATE TABLE t (x)")
    old = Outbox(tmp_path / "old.db")
    assert old._conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    _put(old, [1])
    assert old.stats().depth == 1
    old.close()


def test_committed_notes_are_reported_queued_before_anything_else(tmp_path: Path) -> None:
    box, events = _box(tmp_path)
    for seq in (1, 2):
        box.enqueue(b"x" * 10, topic="t", purpose="service", recipient="company",
                    tier="30min", kind="data", seq=seq, log_entry=f'{{"n":{seq}}}')
    box.enqueue(b"c", topic="t", purpose="service", recipient="company", tier="off",
                kind="consent", seq=3, log_entry="never for control messages")
    assert events.calls == []  # not committed yet: not listed
    box.flush()
    assert events.calls == [("queued", [1, 2], 3)]  # after the commit
    assert box.noted() == [(1, 10, '{"n":1}'), (2, 10, '{"n":2}')]


# -- in flight: handed to the MQTT client, not acknowledged -----------------------------------

def _in_flight(box: Outbox) -> list[int]:
    return [int(r[0]) for r in box._conn.execute("SELECT id FROM in_flight ORDER BY id")]


def test_a_purge_reports_what_was_published_possibly_sent_and_the_rest_withdrawn(
        tmp_path: Path) -> None:
    box, events = _box(tmp_path)
    _put(box, [1, 2, 3])
    first, *_ = box.next_batch()
    box.publishing([first])  # handed to the MQTT client; no PUBACK yet
    assert box.purge("service", reason="consent_change") == 3
    assert events.calls == [("withdrawn:consent_change", [2, 3], 3),
                            ("possibly_sent:consent_change", [1], 3)]  # before the delete
    assert _in_flight(box) == []  # gone with its envelope


def test_the_in_flight_mark_is_committed_before_the_publish_and_survives_a_power_cut(
        tmp_path: Path) -> None:
    box, _ = _box(tmp_path)
    _put(box, [4, 5])
    box.publishing(box.next_batch()[:1])
    box._conn.close()  # the power goes while the PUBLISH waits for its PUBACK
    again, events = _box(tmp_path)
    assert again.purge("service", reason="expiry") == 2  # the start-up check, say
    assert events.calls == [("withdrawn:expiry", [5], 2), ("possibly_sent:expiry", [4], 2)]
    again.close()


def test_the_bound_reports_a_dropped_envelope_in_flight_possibly_sent(tmp_path: Path) -> None:
    box, events = _box(tmp_path, OutboxConfig(max_bytes=250))
    _put(box, [1, 2])
    box.publishing(box.next_batch())
    _put(box, [3])  # over the bound: the oldest goes
    assert events.calls == [("possibly_sent:outbox_full", [1], 2)]
    assert _in_flight(box) == [2]


def test_a_possibly_sent_envelope_whose_puback_then_comes_is_reported_sent(
        tmp_path: Path) -> None:
    box, events = _box(tmp_path)
    _put(box, [7])
    [item] = box.next_batch()
    box.publishing([item])
    box.purge("service")
    box.ack([item.id])  # the broker answered after all: it left
    box.flush()
    assert [c[:2] for c in events.calls] == [("possibly_sent:consent_change", [7]),
                                             ("sent", [7]), ("sync", [])]


def test_marking_costs_one_commit_once_and_nothing_for_control_messages(
        tmp_path: Path) -> None:
    box, _ = _box(tmp_path)
    commits: list[int] = []
    _put(box, [1, 2])
    _put(box, [3], kind="consent")
    box.on_commit = lambda: commits.append(1)
    items = box.next_batch()
    box.publishing(items)
    assert len(commits) == 1 and len(_in_flight(box)) == 2
    box.publishing(items)  # sent again after a reconnect: marked already
    box.publishing([i for i in items if i.kind == "consent"])
    assert len(commits) == 1
    box.ack([i.id for i in items])
    box.flush()
    assert _in_flight(box) == [] and box.stats().depth == 0  # acknowledged: marks gone too


def test_a_failed_mark_commit_leaves_nothing_in_flight(tmp_path: Path) -> None:
    box, _ = _box(tmp_path)
    _put(box, [1])
    items = box.next_batch()
    box._conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON in_flight "
                      "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(OutboxError, match="disk full"):
        box.publishing(items)
    box._conn.execute("DROP TRIGGER refuse")
    box.flush()
    assert _in_flight(box) == []  # not retried later: nothing was published
