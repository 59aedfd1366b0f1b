"""わが家のエネルギー: the household's own solar, battery and consumption, for the page only.

:class:`HomeEnergy` is fed every poll's readings (the pipeline's read-only ``observers``
hook) and keeps, in memory only, the last value of five points per device and today's
5-minute means (Japan time). Nothing here is written to disk, queued or sent: a restart
starts the day's chart empty. Its size is bounded: five points × at most
:data:`MAX_DEVICES` devices × 288 buckets of today, whatever the readings.

Signs follow :mod:`drivers.points`: ``grid.power`` is positive when importing,
``battery.power`` positive when discharging. Where no ``load.power`` is measured, the home's
consumption is derived as grid + solar + battery (what came in, what was made, what the
battery gave).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from policy.minimise import ReadingLike

TZ = ZoneInfo("Asia/Tokyo")
BUCKET = timedelta(minutes=5)
BUCKETS = 288  # one day of 5-minute buckets
MAX_DEVICES = 8  # per point; more are ignored (a home has one or two inverters)
PV, LOAD, GRID, BATTERY, SOC = ("pv.power", "load.power", "grid.power", "battery.power",
                                 "battery.soc")
POINTS = (PV, LOAD, GRID, BATTERY, SOC)
_STALE = timedelta(minutes=15)  # a live value older than this is not shown as "now"


@dataclass(frozen=True, kw_only=True)
class Now:
    """The latest values (W, %), None where no device reported one recently."""

    at: datetime | None
    pv: float | None
    load: float | None
    battery: float | None  # positive when discharging
    soc: float | None
    grid: float | None  # positive when importing


@dataclass(frozen=True, kw_only=True)
class Today:
    """Today's 5-minute means (index 0 is 00:00-00:05 Japan time; None: no data)."""

    day: date | None
    pv: tuple[float | None, ...]
    load: tuple[float | None, ...]
    battery: tuple[float | None, ...]
    soc: tuple[float | None, ...]

    def kwh(self, series: tuple[float | None, ...], *, sign: int = 1) -> float:
        """Energy of a power series over the day, kWh; ``sign`` -1 counts the negative part
        (battery charging), 1 the positive part."""
        hours = BUCKET.total_seconds() / 3600
        return sum(max(0.0, sign * v) for v in series if v is not None) * hours / 1000


class HomeEnergy:
    """The household's own energy, computed and kept on the device (in memory, bounded)."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], tuple[float, datetime]] = {}
        self._day: date | None = None
        # (point, device) -> per bucket [sum, count]
        self._buckets: dict[tuple[str, str], list[list[float]]] = {}

    def feed(self, readings: Iterable[ReadingLike]) -> None:
        """Take one poll's readings; anything but a finite number of a known point is
        ignored, as are readings of an earlier day than the one kept."""
        for r in readings:
            if (r.point not in POINTS or r.quality != "good" or isinstance(r.value, str)
                    or r.value is None or not math.isfinite(r.value)):
                continue
            value = float(r.value)
            local = r.ts.astimezone(TZ)
            if self._day is None or local.date() > self._day:
                self._day, self._buckets = local.date(), {}
            elif local.date() < self._day:
                continue
            key = (r.point, r.device)
            if key not in self._latest and sum(
                    1 for p, _ in self._latest if p == r.point) >= MAX_DEVICES:
                continue  # every series kept has a latest value: this bounds both
            previous = self._latest.get(key)
            if previous is None or r.ts >= previous[1]:
                self._latest[key] = (value, r.ts)
            slot = (local.hour * 60 + local.minute) // 5
            cells = self._buckets.get(key)
            if cells is None:
                cells = self._buckets[key] = [[0.0, 0.0] for _ in range(BUCKETS)]
            cell = cells[slot]
            cell[0] += value
            cell[1] += 1

    def footprint(self) -> int:
        """How many numbers it holds: at most 5 points × MAX_DEVICES × (2 × 288 + 1)."""
        return len(self._latest) + sum(2 * len(cells) for cells in self._buckets.values())

    def now(self, now: datetime) -> Now:
        """The latest values no older than 15 minutes at ``now``."""
        fresh = {k: v for k, (v, ts) in self._latest.items() if now - ts <= _STALE}
        stamps = [ts for v, ts in self._latest.values() if now - ts <= _STALE]

        def total(point: str) -> float | None:
            values = [v for (p, _), v in fresh.items() if p == point]
            return sum(values) if values else None

        socs = [v for (p, _), v in fresh.items() if p == SOC]
        pv, grid, battery = total(PV), total(GRID), total(BATTERY)
        load = total(LOAD)
        if load is None and grid is not None:
            load = grid + (pv or 0.0) + (battery or 0.0)
        return Now(at=max(stamps) if stamps else None, pv=pv, load=load, battery=battery,
                   soc=sum(socs) / len(socs) if socs else None, grid=grid)

    def today(self, now: datetime) -> Today:
        """Today's 5-minute means; an empty day once ``now`` is past the day kept."""
        if self._day is None or now.astimezone(TZ).date() != self._day:
            empty: tuple[float | None, ...] = (None,) * BUCKETS
            return Today(day=now.astimezone(TZ).date(), pv=empty, load=empty, battery=empty,
                         soc=empty)
        pv, grid, battery = self._series(PV), self._series(GRID), self._series(BATTERY)
        load = self._series(LOAD)
        if all(v is None for v in load):
            load = tuple(None if g is None else g + (p or 0.0) + (b or 0.0)
                         for g, p, b in zip(grid, pv, battery, strict=True))
        return Today(day=self._day, pv=pv, load=load, battery=battery,
                     soc=self._series(SOC, average=True))

    def _series(self, point: str, *, average: bool = False) -> tuple[float | None, ...]:
        """Per bucket, each device's mean, summed over devices (powers) or averaged (levels)."""
        devices = [cells for (p, _), cells in self._buckets.items() if p == point]
        out: list[float | None] = []
        for slot in range(BUCKETS):
            means = [cells[slot][0] / cells[slot][1] for cells in devices if cells[slot][1]]
            if not means:
                out.append(None)
            else:
                out.append(sum(means) / len(means) if average else sum(means))
        return tuple(out)
