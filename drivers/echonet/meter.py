"""Low-voltage smart meter (0x0288) values with timestamps: shared by LAN and B-route drivers.

Cumulative counts are scaled with the meter's 0xD3 coefficient and 0xE1 unit
(:class:`drivers.echonet.tables.MeterContext`). Meters keep Japan Standard Time; timestamps are
converted to UTC here. 0xFFFFFFFE ("no data") becomes ``None``, never a number; the counts
have no overflow code, so 0xFFFFFFFF is an error reading, not a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

from drivers.echonet.tables import EpcSpec, MeterContext, checked, meter_wh
from drivers.models import Quality, Reading

JST = timezone(timedelta(hours=9), "JST")
HISTORY_SLOTS = 48
_HISTORY_LEN = 2 + 4 * HISTORY_SLOTS
_FIXED_LEN = 11
DAY_NOT_SET = 0x00FF  # 0xE2/0xE4 day before any 0xE5 was set: the values belong to no day


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedValue:
    """One cumulative value (Wh) at a meter timestamp (UTC); ``value`` None means no data."""

    ts: datetime
    value: float | None
    error: str | None = None  # set when the raw value was garbage (the reading is ERROR)


def _scaled(entry: EpcSpec, raw: int, meter: MeterContext) -> tuple[float | None, str | None]:
    try:
        value = checked(entry, raw)
        return (None if value is None else meter_wh(value, meter)), None
    except ValueError as exc:
        return None, str(exc)


def decode_fixed_time(entry: EpcSpec, edt: bytes, meter: MeterContext) -> TimedValue:
    """0xEA/0xEB: a JST date and time, then the cumulative count at that time."""
    if len(edt) != _FIXED_LEN:
        raise ValueError(f"EPC {entry.epc}: expected {_FIXED_LEN} bytes, got {len(edt)}")
    year = int.from_bytes(edt[0:2], "big")
    try:  # year 1 before 09:00 JST is before UTC's year 1: OverflowError
        ts = datetime(year, edt[2], edt[3], edt[4], edt[5], edt[6], tzinfo=JST).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"EPC {entry.epc}: bad timestamp {edt[:7].hex()}: {exc}") from None
    value, error = _scaled(entry, int.from_bytes(edt[7:11], "big"), meter)
    return TimedValue(ts=ts, value=value, error=error)


def decode_history(entry: EpcSpec, edt: bytes, meter: MeterContext,
                   today: date) -> list[TimedValue]:
    """0xE2/0xE4: days back (0 = today, JST ``today``), then 48 half-hourly cumulative counts,
    the first at 00:00 of that day. Day 0x00FF (no day set in 0xE5 yet) gives no values: they
    cannot be placed in time."""
    if len(edt) != _HISTORY_LEN:
        raise ValueError(f"EPC {entry.epc}: expected {_HISTORY_LEN} bytes, got {len(edt)}")
    days_back = int.from_bytes(edt[0:2], "big")
    if days_back == DAY_NOT_SET:
        return []
    if days_back > 99:
        raise ValueError(f"EPC {entry.epc}: day {days_back} is outside 0..99")
    start = datetime.combine(today - timedelta(days=days_back), datetime.min.time(), JST)
    out: list[TimedValue] = []
    for slot in range(HISTORY_SLOTS):
        raw = int.from_bytes(edt[2 + 4 * slot:6 + 4 * slot], "big")
        value, error = _scaled(entry, raw, meter)
        ts = (start + timedelta(minutes=30 * slot)).astimezone(UTC)
        out.append(TimedValue(ts=ts, value=value, error=error))
    return out


def timed_reading(device: str, entry: EpcSpec, item: TimedValue) -> Reading:
    """A canonical reading of a timestamped cumulative value."""
    if item.error is not None:
        quality = Quality.ERROR
    elif item.value is None:
        quality = Quality.MISSING
    else:
        quality = Quality.GOOD
    assert entry.point is not None  # fixed-time and history entries always name a point
    return Reading(device=device, point=entry.point, kind=entry.kind, value=item.value,
                   unit=entry.unit, ts=item.ts, quality=quality)
