"""Aggregation windows aligned to local time, computed per minute and cached.

Every window is a whole number of UTC minutes: local offsets of every zone in use today are
whole minutes, so a UTC minute is also a local minute. Half hours are aligned to the local wall
clock (``:00``/``:30``), days start at local midnight (23 or 25 hours long across a DST
change), months at local midnight of the 1st. All arithmetic is on integer epoch seconds; the
zone is consulted once per quarter hour (offsets change only on quarter hours) and once per
local day, and the results are cached.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from policy.tiers import Tier

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MINUTE_TIERS = frozenset({Tier.EVENTS, Tier.MINUTE, Tier.RAW})


class Windows:
    """Window boundaries (UTC epoch seconds) for a time zone, e.g. ``Windows("Asia/Tokyo")``."""

    def __init__(self, tz: str = "Asia/Tokyo") -> None:
        self.tz = ZoneInfo(tz)
        self._offsets: dict[int, int] = {}
        self._day_starts: dict[int, int] = {}

    def offset(self, epoch: int) -> int:
        """UTC offset in seconds in force at ``epoch``."""
        quarter = epoch // 900
        try:
            return self._offsets[quarter]
        except KeyError:
            moment = datetime.fromtimestamp(quarter * 900, UTC).astimezone(self.tz)
            delta = moment.utcoffset()
            found = 0 if delta is None else int(delta.total_seconds())
            self._offsets[quarter] = found
            return found

    def day_start(self, local_day: int) -> int:
        """UTC epoch of local midnight starting local day ``local_day`` (days since 1970-01-01).

        Where midnight falls in a DST gap, ``fold=0`` maps it onto the transition instant, which
        is when that local day really begins.
        """
        try:
            return self._day_starts[local_day]
        except KeyError:
            naive = datetime(1970, 1, 1) + timedelta(days=local_day)
            start = int(naive.replace(tzinfo=self.tz).timestamp())
            self._day_starts[local_day] = start
            return start

    def local_day(self, epoch: int) -> int:
        return (epoch + self.offset(epoch)) // 86400

    def window(self, tier: Tier, epoch: int) -> tuple[int, int]:
        """The ``[start, end)`` window of ``tier`` that contains the instant ``epoch``."""
        if tier in _MINUTE_TIERS:
            start = epoch - epoch % 60
            return start, start + 60
        if tier is Tier.HALF_HOUR:
            start = epoch - (epoch + self.offset(epoch)) % 1800
            return start, start + 1800
        day = self.local_day(epoch)
        if tier is Tier.DAY:
            return self.day_start(day), self.day_start(day + 1)
        first = date.fromordinal(day + _EPOCH_ORDINAL).replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
        return (self.day_start(first.toordinal() - _EPOCH_ORDINAL),
                self.day_start(after.toordinal() - _EPOCH_ORDINAL))


def to_datetime(epoch: int) -> datetime:
    """Epoch seconds to an aware UTC datetime."""
    return datetime.fromtimestamp(epoch, UTC)
