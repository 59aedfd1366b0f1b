"""What keeps draining a large backlog cheap stays exact: the stored-bytes figure, a running
total, equals SUM(size) on disk after any mix of enqueues, commits, acknowledgements, purges,
bound drops, failed commits and restarts (it decides the drops and feeds the metrics); the
backlog, read one priority at a time, keeps its order."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import OutboxError
from agent.store.outbox import Outbox, OutboxConfig
from tests.unit.store.test_outbox import Clock

PURPOSES = ("service", "improvement", "proposals")
Op = tuple[str, int, int]

_OPS = st.one_of(
    st.tuples(st.just("enqueue"), st.integers(0, 2), st.integers(1, 400)),
    st.tuples(st.just("control"), st.integers(0, 2), st.integers(1, 400)),
    st.tuples(st.just("flush"), st.just(0), st.just(0)),
    st.tuples(st.just("hand"), st.integers(1, 8), st.just(0)),
    st.tuples(st.just("ack"), st.integers(0, 8), st.just(0)),
    st.tuples(st.just("purge"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("reopen"), st.just(0), st.just(0)),
)


def _stored(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:  # what is committed
        return int(db.execute("SELECT COALESCE(SUM(size), 0) FROM envelopes").fetchone()[0])


def _enqueue(box: Outbox, purpose: str, size: int, kind: str = "data") -> None:
    box.enqueue(b"x" * size, topic=f"hems/v1/s1/{purpose}/{kind}", purpose=purpose,
                recipient="company", tier="30min", kind=kind)


def _apply(box: Outbox, path: Path, config: OutboxConfig, op: Op,
           handed: list[int]) -> Outbox:
    name, a, b = op
    if name in ("enqueue", "control"):
        _enqueue(box, PURPOSES[a], b, "data" if name == "enqueue" else "consent")
    elif name == "flush":
        box.flush()
    elif name == "hand":
        handed[:] = [item.id for item in box.next_batch(a)]
    elif name == "ack":
        box.ack(handed[:a])  # some may be purged or dropped by now: they count nothing
    elif name == "purge":
        box.purge(PURPOSES[a])
    elif name == "reopen":
        box.close()
        box = Outbox(path, config, clock=Clock())
        handed.clear()
    return box


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(_OPS, max_size=40), max_bytes=st.sampled_from([600, 2000, 1 << 30]))
def test_the_running_total_equals_the_stored_sizes(ops: list[Op], max_bytes: int) -> None:
    config = OutboxConfig(max_bytes=max_bytes, batch_items=5)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "o.db"
        box = Outbox(path, config, clock=Clock())
        handed: list[int] = []
        for op in ops:
            box = _apply(box, path, config, op, handed)
            assert box._bytes == _stored(path), op
        box.flush()
        assert box._bytes == _stored(path) <= max_bytes
        box.close()


def test_a_failed_commit_leaves_the_total_as_stored(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, clock=Clock())
    _enqueue(box, "service", 100)
    box.flush()
    [item] = box.next_batch()
    box.ack([item.id])
    _enqueue(box, "service", 13)  # the disk refuses this one (a trigger stands in)
    box._conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON envelopes WHEN NEW.size = 13 "
                      "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(OutboxError, match="disk full"):
        box.flush()
    assert box._bytes == _stored(path) == 100  # the acknowledged row is still there too
    box._conn.execute("DROP TRIGGER refuse")
    box.flush()
    assert box._bytes == _stored(path) == 13
    box.close()


def test_backlog_goes_higher_priority_first_then_oldest_and_skips_acknowledged(
        tmp_path: Path) -> None:
    """The backlog is read one priority at a time (an index walk each): the same order as one
    ORDER BY priority DESC, id over all of it, however the priorities interleave."""
    clock = Clock()
    config = OutboxConfig(backlog_rate=1e9, priorities={"service": 5, "improvement": 1})
    box = Outbox(tmp_path / "o.db", config, clock=clock)
    for n in range(12):
        _enqueue(box, ("improvement", "service", "proposals")[n % 3], 10 + n)
    _enqueue(box, "proposals", 99, kind="consent")
    box.flush()
    clock.now += 3600  # all of it is backlog now
    _enqueue(box, "proposals", 7)  # and this is live: it goes first
    box.flush()
    first = box.next_batch(limit=6)
    sizes = [len(item.payload) for item in first]
    assert sizes == [7, 99, 11, 14, 17, 20]  # live; consent; service oldest first
    box.ack([item.id for item in first[:3]])  # not committed yet: not handed out again
    rest = [len(item.payload) for item in box.next_batch(limit=50)]
    assert rest == [14, 17, 20, 10, 13, 16, 19, 12, 15, 18, 21]  # improvement, then proposals
