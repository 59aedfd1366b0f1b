"""Outbox on a real sqlite file: durability, batching, bound and drop order, purge, pacing."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from agent.errors import OutboxError
from agent.store.outbox import Outbox, OutboxConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def put(box: Outbox, n: int, purpose: str = "service", size: int = 100, kind: str = "data",
        tier: str = "30min", recipient: str = "company") -> None:
    for i in range(n):
        box.enqueue(bytes([i % 256]) * size, topic=f"hems/v1/s1/{purpose}/{kind}",
                    purpose=purpose, recipient=recipient, tier=tier, kind=kind)


def test_flush_commits_and_a_reopened_outbox_sees_everything(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    put(box, 3)
    assert box.stats().pending == 3 and box.stats().depth == 0
    assert box.next_batch() == []  # uncommitted envelopes are never handed out
    box.flush()
    assert box.stats().depth == 3
    # A second connection (another process after a crash) sees the committed rows.
    assert sqlite3.connect(tmp_path / "o.db").execute(
        "SELECT COUNT(*) FROM envelopes").fetchone()[0] == 3
    box2 = Outbox(tmp_path / "o.db")
    assert [len(i.payload) for i in box2.next_batch()] == [100, 100, 100]


def test_database_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    assert box._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_batch_size_triggers_a_commit(tmp_path: Path) -> None:
    commits: list[int] = []
    box = Outbox(tmp_path / "o.db", OutboxConfig(batch_items=10),
                 on_commit=lambda: commits.append(1))
    put(box, 25)
    assert box.stats().depth == 20 and box.stats().pending == 5 and len(commits) == 2


def test_ack_deletes_on_the_next_commit_and_is_not_handed_out_again(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    put(box, 4)
    box.flush()
    first = box.next_batch(limit=2)
    box.ack([first[0].id])
    assert [i.id for i in box.next_batch()] == [first[1].id, first[1].id + 1, first[1].id + 2]
    box.flush()
    assert box.stats().depth == 3


def test_sequence_is_monotonic_across_restarts_even_without_a_flush(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    seen = [box.next_sequence() for _ in range(5)]
    # No close(): as if power was cut. The reserved block is already durable.
    again = Outbox(tmp_path / "o.db").next_sequence()
    assert seen == [0, 1, 2, 3, 4] and again > 4


def test_bound_drops_lowest_priority_then_oldest_and_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = OutboxConfig(max_bytes=1000, priorities={"service": 10, "improvement": 1})
    box = Outbox(tmp_path / "o.db", config)
    put(box, 4, "service")
    put(box, 4, "improvement")
    put(box, 1, "service", kind="consent")
    box.flush()
    put(box, 3, "service")
    with caplog.at_level(logging.WARNING):
        box.flush()
    stats = box.stats()
    assert stats.bytes <= 1000 and stats.drops == {"improvement": 2}
    left = [(i.purpose, i.kind) for i in box.next_batch(limit=100)]
    assert left[0] == ("service", "consent")  # control messages first
    assert left.count(("improvement", "data")) == 2 and left.count(("service", "data")) == 7
    assert "dropped 2 improvement" in caplog.text
    put(box, 3, "service", size=300)
    box.flush()
    assert box.stats().drops == {"improvement": 4, "service": 7}
    assert ("service", "consent") in [(i.purpose, i.kind) for i in box.next_batch()]


def test_purge_removes_only_matching_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path / "o.db")
    put(box, 2, "proposals", tier="1d")
    put(box, 2, "proposals", tier="30min")
    put(box, 1, "proposals", kind="consent")
    put(box, 2, "maintenance_watch", recipient="installer-a")
    put(box, 2, "maintenance_watch", recipient="installer-b")
    with caplog.at_level(logging.INFO):
        assert box.purge("proposals", tiers=["30min"]) == 2
        assert box.purge("maintenance_watch", recipient="installer-a") == 2
        assert box.purge("proposals") == 2
    left = sorted((i.purpose, i.kind) for i in box.next_batch(limit=100))
    assert left == [("maintenance_watch", "data")] * 2 + [("proposals", "consent")]
    assert "installer" not in caplog.text and "removed 2" in caplog.text


def test_live_data_first_and_backlog_paced(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.db", OutboxConfig(backlog_rate=10, live_horizon=60), clock=clock)
    put(box, 100, "improvement")
    clock.now += 3600
    put(box, 5, "service")
    box.flush()
    batch = box.next_batch(limit=50)
    assert [i.purpose for i in batch[:5]] == ["service"] * 5
    assert len(batch) - 5 <= 10  # at most one second's worth of backlog
    box.ack([i.id for i in batch])
    assert box.next_batch(limit=50) == []  # no tokens left, no live data
    clock.now += 2
    assert len(box.next_batch(limit=50)) == 10  # bucket holds at most one second


def test_stats_report_oldest_age(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.db", clock=clock)
    assert box.stats().oldest_age is None
    put(box, 1)
    box.flush()
    clock.now += 30
    assert box.stats().oldest_age == 30


def test_storage_failure_raises_outbox_error(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="outbox open failed"):
        Outbox(tmp_path / "missing-dir" / "o.db")
    box = Outbox(tmp_path / "o.db")
    box._conn.close()
    put(box, 1)
    with pytest.raises(OutboxError, match="outbox commit failed"):
        box.flush()


class _Counting(Outbox):
    steps = 0

    def commit_due(self) -> None:
        self.steps += 1
        super().commit_due()


async def test_an_idle_flusher_sleeps_until_an_enqueue_then_commits_within_its_interval(
        tmp_path: Path) -> None:
    import asyncio

    box = _Counting(tmp_path / "o.db", OutboxConfig(flush_interval=0.02))
    task = asyncio.create_task(box.run_flusher())
    try:
        await asyncio.sleep(0.3)  # nothing queued: fifteen intervals pass without a step
        assert box.steps == 0
        put(box, 1)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if box.stats().pending == 0:
                break
        assert box.stats().depth == 1 and box.stats().pending == 0  # committed by the flusher
        box.ack([item.id for item in box.next_batch(10)])
        for _ in range(100):
            await asyncio.sleep(0.02)
            if box.steps >= 3:
                break
        assert box.steps >= 3  # acknowledged, not yet due: it keeps stepping until ack_interval
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_flusher_commits_on_cancel(tmp_path: Path) -> None:
    import asyncio

    box = Outbox(tmp_path / "o.db", OutboxConfig(flush_interval=3600))
    task = asyncio.create_task(box.run_flusher())
    await asyncio.sleep(0)
    put(box, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert box.stats().depth == 2
