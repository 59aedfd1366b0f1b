"""The outbox reports what became of data envelopes, in an order a power cut cannot betray."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from agent.outbox import Outbox, OutboxConfig
from tests.unit.test_outbox import Clock


class Events:
    """Records the reports, and how many rows the outbox held when each came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[tuple[str, list[int], int]] = []

    def _rows(self) -> int:
        with contextlib.closing(sqlite3.connect(self.path)) as db:  # what is committed
            return int(db.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0])

    def sent(self, seqs: Sequence[int]) -> None:
        self.calls.append(("sent", list(seqs), self._rows()))

    def sync(self) -> None:
        self.calls.append(("sync", [], self._rows()))

    def withdrawn(self, seqs: Sequence[int], reason: str) -> None:
        self.calls.append((f"withdrawn:{reason}", list(seqs), self._rows()))


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
    [item] = box.next_batch()  # handed to the publisher
    box.purge("service")
    box.ack([item.id])  # its PUBACK still came: it left
    assert [c[:2] for c in events.calls] == [("withdrawn:consent_change", [7]), ("sent", [7])]


def test_an_acknowledgement_lost_in_a_power_cut_only_means_sending_again(
        tmp_path: Path) -> None:
    box, _ = _box(tmp_path)
    _put(box, [1])
    box.ack([item.id for item in box.next_batch()])
    box._conn.close()  # power cut: the acknowledgement was never committed
    again = Outbox(tmp_path / "o.db", clock=Clock())
    assert [len(item.payload) for item in again.next_batch()] == [100]
    again.close()
