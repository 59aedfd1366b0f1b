"""The agent's minimiser snapshot file: restored once, saved periodically, never overwritten
before it was restored, refused files logged (the agent starts empty), erased on clear."""

from __future__ import annotations

import json
import logging
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from agent.store.snapshots import MinimiserSnapshots
from policy.catalogue import load_catalogue
from policy.minimise import Minimiser
from policy.minimise_state import SCHEMA
from policy.tiers import Tier
from tests.unit.policy.test_policy_minimise import T0, grant, reading

SITE = "site-file-1"
SERVICE = grant("service", "company", Tier.HALF_HOUR)


class Ticks:
    """An injectable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _running(path: Path, ticks: Ticks | None = None) -> tuple[Minimiser, MinimiserSnapshots]:
    m = Minimiser(load_catalogue())
    store = MinimiserSnapshots(path, m, SITE, interval=60.0, monotonic=ticks or Ticks())
    m.on_clear = store.forget
    return m, store


def _fed(path: Path) -> None:
    """A first life: five minutes of readings into a half hour, saved at a clean stop."""
    m, store = _running(path)
    store.restore_once(T0)
    m.flush(T0, SERVICE)
    m.feed([reading("pv.power", 500.0, s) for s in range(0, 300, 30)])
    now = T0 + timedelta(minutes=5)
    m.flush(now, SERVICE)
    store.save(now)


def test_saved_at_stop_and_restored_at_the_next_start(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "minimiser-state.json"
    _fed(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the household's aggregates
    m, store = _running(path)
    with caplog.at_level(logging.INFO, logger="agent.store.snapshots"):
        store.restore_once(T0 + timedelta(minutes=6))
    assert "minimiser state restored: 1 series, 1 open windows" in caplog.text
    assert "500" not in caplog.text  # counts only, no reading in the log
    [release] = m.flush(T0 + timedelta(minutes=30), SERVICE)
    assert release.records[0].good == 10


def test_an_unrestored_snapshot_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "minimiser-state.json"
    _fed(path)
    before = path.read_bytes()
    _, store = _running(path)
    store.save(T0 + timedelta(minutes=6))  # the clock was never trusted in this life
    assert path.read_bytes() == before


@pytest.mark.parametrize(("content", "reason"), [
    (b"{not json", "is not valid JSON"),
    (json.dumps({"kind": "hems-minimiser-state", "schema": 9}).encode(),
     "schema 9 is newer than this agent reads"),
])
def test_a_refused_snapshot_is_logged_and_the_minimiser_starts_empty(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str) -> None:
    path = tmp_path / "minimiser-state.json"
    path.write_bytes(content)
    m, store = _running(path)
    with caplog.at_level(logging.WARNING, logger="agent.store.snapshots"):
        store.restore_once(T0)
    assert reason in caplog.text and "starting empty" in caplog.text
    assert m.holds_nothing()
    store.save(T0)  # the next save replaces it
    assert json.loads(path.read_bytes())["schema"] == SCHEMA


def test_saved_once_an_interval_has_passed(tmp_path: Path) -> None:
    path = tmp_path / "minimiser-state.json"
    ticks = Ticks()
    _, store = _running(path, ticks)
    store.restore_once(T0)
    store.save_if_due(T0)
    assert not path.exists()  # the first save an interval after start
    ticks.now += 59.0
    store.save_if_due(T0 + timedelta(seconds=59))
    assert not path.exists()
    ticks.now += 1.0
    store.save_if_due(T0 + timedelta(seconds=60))
    assert json.loads(path.read_bytes())["taken"] == (T0 + timedelta(seconds=60)).isoformat()
    assert store.last.bytes == path.stat().st_size


def test_erasure_deletes_the_snapshot_at_once(tmp_path: Path) -> None:
    path = tmp_path / "minimiser-state.json"
    _fed(path)
    m, store = _running(path)
    m.clear()  # before the clock was trusted: what the file holds is erased too
    assert not path.exists()
    store.restore_once(T0 + timedelta(minutes=6))
    assert m.holds_nothing()


def test_a_tick_that_released_saves_at_once_so_a_power_cut_cannot_release_it_again(
        tmp_path: Path) -> None:
    path = tmp_path / "minimiser-state.json"
    _fed(path)  # the file now holds the half hour open, five minutes in
    ticks = Ticks()
    m, store = _running(path, ticks)
    store.restore_once(T0 + timedelta(minutes=6))
    store.after_tick(T0 + timedelta(minutes=6), released=False)  # starts the interval
    ticks.now += 1.0  # far less than the interval: no periodic save is due
    end = T0 + timedelta(minutes=30)
    [release] = m.flush(end, SERVICE)
    store.after_tick(end, released=True)
    # Power cut here: no stop save. The next life restores what is on disk.
    m2, store2 = _running(path)
    store2.restore_once(end + timedelta(seconds=5))
    assert m2.flush(end + timedelta(seconds=5), SERVICE) == []
    assert release.records[0].good == 10
