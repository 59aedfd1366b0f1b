"""Local-time window alignment: half hours, days and months, with and without DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policy.tiers import Tier
from policy.windows import Windows, to_datetime


def _window(tz: str, tier: Tier, moment: datetime) -> tuple[datetime, timedelta]:
    start, end = Windows(tz).window(tier, int(moment.timestamp()))
    return to_datetime(start), timedelta(seconds=end - start)


@pytest.mark.parametrize(("tz", "tier", "moment", "start", "length"), [
    ("Asia/Tokyo", Tier.DAY, datetime(2026, 6, 1, 14, 59, tzinfo=UTC),
     datetime(2026, 5, 31, 15, 0, tzinfo=UTC), timedelta(days=1)),
    ("Asia/Tokyo", Tier.MONTH, datetime(2026, 2, 28, 15, 0, tzinfo=UTC),
     datetime(2026, 2, 28, 15, 0, tzinfo=UTC), timedelta(days=31)),
    ("Asia/Tokyo", Tier.HALF_HOUR, datetime(2026, 6, 1, 3, 44, tzinfo=UTC),
     datetime(2026, 6, 1, 3, 30, tzinfo=UTC), timedelta(minutes=30)),
    ("Asia/Kolkata", Tier.HALF_HOUR, datetime(2026, 6, 1, 3, 44, tzinfo=UTC),
     datetime(2026, 6, 1, 3, 30, tzinfo=UTC), timedelta(minutes=30)),
    ("Asia/Kathmandu", Tier.HALF_HOUR, datetime(2026, 6, 1, 3, 44, tzinfo=UTC),
     datetime(2026, 6, 1, 3, 15, tzinfo=UTC), timedelta(minutes=30)),
    ("Europe/Berlin", Tier.DAY, datetime(2026, 10, 25, 12, 0, tzinfo=UTC),
     datetime(2026, 10, 24, 22, 0, tzinfo=UTC), timedelta(hours=25)),
    ("America/New_York", Tier.DAY, datetime(2026, 3, 8, 12, 0, tzinfo=UTC),
     datetime(2026, 3, 8, 5, 0, tzinfo=UTC), timedelta(hours=23)),
    ("Europe/Berlin", Tier.MONTH, datetime(2026, 3, 15, tzinfo=UTC),
     datetime(2026, 2, 28, 23, 0, tzinfo=UTC), timedelta(days=31) - timedelta(hours=1)),
    ("Europe/Berlin", Tier.MINUTE, datetime(2026, 3, 15, 1, 2, 59, tzinfo=UTC),
     datetime(2026, 3, 15, 1, 2, tzinfo=UTC), timedelta(minutes=1)),
])
def test_windows_align_to_local_time(tz: str, tier: Tier, moment: datetime, start: datetime,
                                     length: timedelta) -> None:
    assert _window(tz, tier, moment) == (start, length)


def test_consecutive_half_hours_tile_a_dst_day_without_gaps() -> None:
    w = Windows("Europe/Berlin")
    t = int(datetime(2026, 10, 24, 22, 0, tzinfo=UTC).timestamp())
    end_of_day = w.window(Tier.DAY, t)[1]
    count = 0
    while t < end_of_day:
        start, end = w.window(Tier.HALF_HOUR, t)
        assert start == t
        t, count = end, count + 1
    assert count == 50  # 25 hours
