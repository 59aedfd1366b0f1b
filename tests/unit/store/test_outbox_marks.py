"""The release high-water mark is committed with the envelope it belongs to, and survives."""

from __future__ import annotations

from pathlib import Path

from agent.store.outbox import Outbox


def _enqueue(outbox: Outbox, end: int) -> None:
    outbox.enqueue(b"x", topic="hems/v1/s/service/data", purpose="service", recipient="company",
                   tier="30min", kind="data", mark=("service/company/30min", end))


def test_mark_is_committed_with_the_envelope_and_read_back(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    assert outbox.mark("service/company/30min") is None
    _enqueue(outbox, 1800)
    assert outbox.mark("service/company/30min") == 1800  # pending counts for this process
    outbox.flush()
    outbox.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert again.mark("service/company/30min") == 1800
    assert again.stats().depth == 1
    again.close()


def test_an_uncommitted_mark_is_gone_with_its_envelope(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    _enqueue(outbox, 1800)
    outbox.flush()
    _enqueue(outbox, 3600)  # never committed: a power cut here loses both, together
    outbox._conn.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert again.mark("service/company/30min") == 1800
    assert again.stats().depth == 1
    again.close()
