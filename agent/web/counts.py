"""How many readings the device took per day (Japan time), for the page only.

Fed every poll's readings by the pipeline's read-only ``observers`` hook, like
:class:`agent.web.energy.HomeEnergy`: a count per day for the last :data:`DAYS` days, in memory
only (a restart starts at zero). It holds no value, device or point: a number per day.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from zoneinfo import ZoneInfo

from policy.minimise import ReadingLike

TZ = ZoneInfo("Asia/Tokyo")
DAYS = 7


class ReadingCounts:
    """Readings taken per Japan day, the last :data:`DAYS` days (at most seven numbers)."""

    def __init__(self) -> None:
        self._days: dict[date, int] = {}

    def feed(self, readings: Iterable[ReadingLike]) -> None:
        """Count one poll's readings by the day each was taken."""
        for r in readings:
            day = r.ts.astimezone(TZ).date()
            self._days[day] = self._days.get(day, 0) + 1
        while len(self._days) > DAYS:
            del self._days[min(self._days)]

    def on(self, day: date) -> int:
        """Readings taken on ``day`` since the start (0 when none or forgotten)."""
        return self._days.get(day, 0)
