"""Readings taken per day (Japan time) for the page's chart: counted by the day each was
taken, at most the last seven days kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.web.counts import DAYS, ReadingCounts
from drivers.models import PointKind, Reading

T0 = datetime(2026, 11, 26, 14, 59, tzinfo=UTC)  # 23:59 Japan time


def _reading(ts: datetime) -> Reading:
    return Reading(device="inv", point="pv.power", kind=PointKind.POWER, value=1.0, unit="W",
                   ts=ts)


def test_readings_count_on_the_japanese_day_they_were_taken() -> None:
    counts = ReadingCounts()
    counts.feed([_reading(T0), _reading(T0 + timedelta(minutes=2))])  # 23:59, then 00:01
    assert counts.on(T0.date()) == 1  # 26 November in Japan
    assert counts.on(T0.date() + timedelta(days=1)) == 1


def test_only_the_last_seven_days_are_kept() -> None:
    counts = ReadingCounts()
    for k in range(10):
        counts.feed([_reading(T0 + timedelta(days=k))] * 3)
    first_kept = T0.date() + timedelta(days=10 - DAYS)
    assert counts.on(first_kept - timedelta(days=1)) == 0
    assert counts.on(first_kept) == 3 and counts.on(T0.date() + timedelta(days=9)) == 3
