"""The stamper in front of the policy engine: a poll that spans a window's release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.host.clock import SimulatedClock, TrustedClock
from agent.sources.modbus import Stamper
from drivers.models import PointKind, Reading
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser

WINDOW = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)  # a 30-minute window [00:00, 00:30)


def _reading() -> Reading:
    return Reading(device="inverter", point="pv.power", kind=PointKind.POWER, value=1200.0,
                   unit="W", ts=WINDOW)


def test_a_poll_that_spans_a_release_does_not_release_the_window_again(
        tmp_path: Path) -> None:
    catalogue = load_catalogue()
    ledger = Ledger.open(tmp_path / "ledger.json", catalogue, "s-1", WINDOW - timedelta(hours=1))
    minimiser = Minimiser(catalogue, tz="UTC")
    mono = [0.0]
    clock = SimulatedClock(WINDOW, 1.0, monotonic=lambda: mono[0])
    stamper = Stamper(clock, minimiser.feed)

    def flush(at: float) -> set[tuple[datetime, datetime]]:
        mono[0] = at
        now = clock.stamp(at)
        assert now is not None
        return {(r.start, r.end) for r in minimiser.flush(now, ledger.grants(now))}

    mono[0] = 27 * 60.0
    stamper(mono[0], [_reading()])
    taken = 29 * 60 + 59.0  # a poll begins a second before the window ends...
    assert flush(30 * 60 + 1.0) == {(WINDOW, WINDOW + timedelta(minutes=30))}  # ...a tick
    mono[0] = 30 * 60 + 2.0
    stamper(taken, [_reading()])  # ...and the poll's readings are handed over after it
    assert flush(30 * 60 + 6.0) == set()  # the window is not released a second time
    assert flush(61 * 60.0) == {(WINDOW + timedelta(minutes=30), WINDOW + timedelta(hours=1))}


def _built(ts: datetime) -> list[Reading]:
    return [Reading(device="inverter", point=point, kind=PointKind.POWER, value=1.0, unit="W",
                    ts=ts) for point in ("pv.power", "pv.dc_power")]


def test_readings_built_with_the_issued_stamp_are_passed_on_as_they_are() -> None:
    mono = [100.0]
    clock = SimulatedClock(WINDOW, 1.0, monotonic=lambda: mono[0])
    out: list[Reading] = []
    stamper = Stamper(clock, out.extend)
    ts = stamper.stamp()
    assert ts == clock.stamp(100.0)
    readings = _built(ts)
    mono[0] = 100.5  # (a poller hands over at once; this only makes a copy visible)
    stamper(99.0, readings)
    assert len(out) == 2 and all(a is b for a, b in zip(out, readings, strict=True))
    other = _built(WINDOW)  # not built with an issued stamp: stamped at hand-over
    stamper(99.0, other)
    assert [r.ts for r in out[2:]] == [clock.stamp(100.5)] * 2


def test_a_stand_in_stamp_before_the_clock_is_trusted_is_replaced_when_held_readings_go() -> None:
    synced = [False]
    mono = [10.0]
    wall = [1_780_000_000.0]
    clock = TrustedClock(lambda: synced[0], wall=lambda: wall[0] + mono[0],
                         monotonic=lambda: mono[0])
    out: list[Reading] = []
    stamper = Stamper(clock, out.extend)
    early = _built(stamper.stamp())  # the clock is not trusted: a stand-in
    stamper(9.0, early)
    assert out == []  # held
    synced[0] = True
    mono[0] = 20.0
    ts = stamper.stamp()
    stamper(19.5, _built(ts))
    expected = datetime.fromtimestamp(wall[0] + 9.0, UTC)  # the held poll's own instant
    assert [r.ts for r in out] == [expected] * 2 + [ts] * 2
    assert ts == datetime.fromtimestamp(wall[0] + 20.0, UTC)
