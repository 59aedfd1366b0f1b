"""The minimiser's state as a JSON-able snapshot, so a restart does not cut its windows.

What is kept: every series (device, point, kind, unit) with its current minute bucket, closed
minutes not yet folded, the last energy counter (and when it was read), state and event flags;
every open window per tier with its per-series aggregate (with its energy lead gap); the
raw-tier readings of minutes not yet released; the energy rounding remainders; which tiers were
granted at the last flush; the cut (minutes before it are closed) and, per purpose and
recipient, the end of the last window released. Categories and allow-lists are not kept: they
are derived again from the catalogue (never-collected points refused again).

:func:`load` validates strictly and raises :class:`SnapshotError` naming the field: a snapshot
from another site, catalogue or time zone, from a newer schema or an older one (schema 1 lacks
the marks and the times of energy readings), taken after ``now`` (the clock is behind), older
than the longest window open when it was taken, or damaged in any way is refused whole.
Nothing is half restored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from policy.aggregate import Bucket, Series
from policy.catalogue import Catalogue
from policy.collected import collected_category
from policy.errors import PolicyError
from policy.tiers import Tier
from policy.windows import Windows

SCHEMA = 2
KIND = "hems-minimiser-state"
_MINUTE = 60
_Key = tuple[str, str]
_Flags = set[str] | int | None
Value = float | int | str | None


class SnapshotError(PolicyError):
    """A snapshot was refused; the minimiser is unchanged. Start empty and log the reason."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldReading:
    """A raw-tier reading restored from a snapshot (the shape of ``ReadingLike``)."""

    device: str
    point: str
    kind: str
    value: float | str | None
    unit: str
    ts: datetime
    quality: str


@dataclass(kw_only=True)
class Held:
    """Everything a :class:`~policy.minimise.Minimiser` holds that a restart would lose."""

    series: dict[_Key, Series] = field(default_factory=dict)
    open: dict[Tier, dict[int, tuple[int, dict[_Key, Bucket]]]] = field(default_factory=dict)
    raw: list[Any] = field(default_factory=list)
    keep_raw: bool = False
    carry: dict[tuple[str, ...], float] = field(default_factory=dict)
    tiers: frozenset[Tier] = frozenset()
    stats: dict[str, int] = field(default_factory=dict)
    cut: int = -1
    released: dict[_Key, int] = field(default_factory=dict)


def dump(held: Held, *, site: str, catalogue: Catalogue, tz: str,
         taken: datetime) -> dict[str, Any]:
    """The snapshot of ``held`` (plain lists, numbers and strings; ``json.dumps`` takes it)."""
    index = {key: i for i, key in enumerate(held.series)}
    return {
        "kind": KIND, "schema": SCHEMA, "site": site, "catalogue": catalogue.content_hash,
        "timezone": tz, "taken": taken.isoformat(), "tiers": sorted(t.value for t in held.tiers),
        "keep_raw": held.keep_raw, "cut": held.cut,
        "released": [[purpose, recipient, end]
                     for (purpose, recipient), end in sorted(held.released.items())],
        "series": [[s.device, s.point, s.kind_name, s.unit, _bucket(s.bucket),
                    [_bucket(b) for b in s.closed], s.last_counter, s.last_t, s.last_state,
                    _flags(s.last_union)] for s in held.series.values()],
        "windows": [[tier.value, start, end, [[index[k], _bucket(b)] for k, b in data.items()]]
                    for tier, wins in held.open.items() for start, (end, data) in wins.items()],
        "raw": [[index[(r.device, r.point)], r.ts.isoformat(), r.value, str(r.quality)]
                for r in held.raw],
        "carry": [[*key, value] for key, value in held.carry.items()],
        "stats": dict(held.stats),
    }


def load(data: Any, *, site: str, catalogue: Catalogue, tz: str, now: datetime,
         stats: tuple[str, ...]) -> Held:
    """Validate a snapshot against this site, catalogue, zone and ``now``; its contents."""
    top = _mapping(data, "snapshot")
    if top.get("kind") != KIND:
        raise SnapshotError(f"snapshot: kind: expected {KIND!r}, got {top.get('kind')!r}")
    schema = top.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise SnapshotError(f"snapshot: schema: expected a positive integer, got {schema!r}")
    if schema > SCHEMA:
        raise SnapshotError(f"snapshot: schema {schema} is newer than this agent reads "
                            f"({SCHEMA})")
    if schema < SCHEMA:
        raise SnapshotError(f"snapshot: schema {schema} is older than this agent reads "
                            f"({SCHEMA}): it lacks the released-window marks and the times "
                            f"of energy readings")
    for name, want in (("site", site), ("catalogue", catalogue.content_hash), ("timezone", tz)):
        if top.get(name) != want:
            raise SnapshotError(f"snapshot: {name}: taken for {top.get(name)!r}, "
                                f"this agent runs {want!r}")
    taken = _time(top.get("taken"), "snapshot: taken")
    tiers = frozenset(_tier(t, f"snapshot: tiers[{i}]")
                      for i, t in enumerate(_list(top.get("tiers"), "snapshot: tiers")))
    windows = Windows(tz)
    _check_age(taken, now, tiers, windows)
    series = _series(_list(top.get("series"), "snapshot: series"), catalogue)
    keys = list(series)
    return Held(series=series, open=_windows(top.get("windows"), keys, windows),
                raw=_raw(top.get("raw"), series), keep_raw=_bool(top.get("keep_raw"),
                                                                 "snapshot: keep_raw"),
                carry=_carry(top.get("carry")), tiers=tiers, stats=_stats(top.get("stats"), stats),
                cut=_cut(top.get("cut")), released=_released(top.get("released")))


def longest_window(tiers: frozenset[Tier], at: int, windows: Windows) -> int:
    """Seconds of the longest window of ``tiers`` open at ``at`` (a minute if none)."""
    return max((end - start for start, end in (windows.window(t, at) for t in tiers)),
               default=_MINUTE)


def _check_age(taken: datetime, now: datetime, tiers: frozenset[Tier], windows: Windows) -> None:
    at, now_s = int(taken.timestamp()), int(now.timestamp())
    if at > now_s:
        raise SnapshotError(f"snapshot: taken at {taken.isoformat()}, after now "
                            f"({now.isoformat()}): the clock is behind")
    limit = longest_window(tiers, at, windows)
    if now_s - at > limit:
        raise SnapshotError(f"snapshot: taken {now_s - at} s ago, longer than the longest "
                            f"window then open ({limit} s): its windows and counters are stale")


# -- encoding ---------------------------------------------------------------------------------

def _bucket(b: Bucket) -> list[Any]:
    return [b.minute, b.good, b.bad, b.sum, b.max, b.last, b.changes, b.changed,
            _flags(b.union), b.delta, b.cover, b.lead, b.lead_from, b.lead_to]


def _flags(value: _Flags) -> list[str] | int | None:
    return sorted(value) if isinstance(value, set) else value


# -- validation -------------------------------------------------------------------------------

def _series(items: list[Any], catalogue: Catalogue) -> dict[_Key, Series]:
    out: dict[_Key, Series] = {}
    for i, item in enumerate(items):
        where = f"snapshot: series[{i}]"
        row = _list(item, where, length=10)
        device, point, kind, unit = (_str(v, f"{where}[{n}]") for n, v in enumerate(row[:4]))
        if (device, point) in out:
            raise SnapshotError(f"{where}: {device}/{point} appears twice")
        s = Series(device, point, kind, unit, collected_category(catalogue, point)[0])
        if s.kind < 0:
            s.category = None
        s.bucket = _to_bucket(row[4], f"{where}.bucket")
        s.closed = [_to_bucket(b, f"{where}.closed[{n}]")
                    for n, b in enumerate(_list(row[5], f"{where}.closed"))]
        counter = row[6]
        s.last_counter = None if counter is None else _num(counter, f"{where}.last_counter")
        s.last_t = _num(row[7], f"{where}.last_t")
        s.last_state = _value(row[8], f"{where}.last_state")
        s.last_union = _to_flags(row[9], f"{where}.last_union")
        out[(device, point)] = s
    return out


def _windows(data: Any, keys: list[_Key],
             windows: Windows) -> dict[Tier, dict[int, tuple[int, dict[_Key, Bucket]]]]:
    out: dict[Tier, dict[int, tuple[int, dict[_Key, Bucket]]]] = {}
    for i, item in enumerate(_list(data, "snapshot: windows")):
        where = f"snapshot: windows[{i}]"
        row = _list(item, where, length=4)
        tier = _tier(row[0], f"{where}.tier")
        start, end = _int(row[1], f"{where}.start"), _int(row[2], f"{where}.end")
        if tier is Tier.RAW or windows.window(tier, start) != (start, end):
            raise SnapshotError(f"{where}: [{start}, {end}) is not a {tier.value} window")
        wins = out.setdefault(tier, {})
        if start in wins:
            raise SnapshotError(f"{where}: the {tier.value} window at {start} appears twice")
        aggs: dict[_Key, Bucket] = {}
        for n, pair in enumerate(_list(row[3], f"{where}.data")):
            entry = _list(pair, f"{where}.data[{n}]", length=2)
            key = keys[_index(entry[0], len(keys), f"{where}.data[{n}].series")]
            aggs[key] = _to_bucket(entry[1], f"{where}.data[{n}].bucket")
        wins[start] = (end, aggs)
    return out


def _raw(data: Any, series: dict[_Key, Series]) -> list[HeldReading]:
    keys = list(series)
    out = []
    for i, item in enumerate(_list(data, "snapshot: raw")):
        where = f"snapshot: raw[{i}]"
        row = _list(item, where, length=4)
        s = series[keys[_index(row[0], len(keys), f"{where}.series")]]
        value = _value(row[2], f"{where}.value")
        out.append(HeldReading(device=s.device, point=s.point, kind=s.kind_name, unit=s.unit,
                               ts=_time(row[1], f"{where}.ts"), value=value,
                               quality=_str(row[3], f"{where}.quality")))
    return out


def _carry(data: Any) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for i, item in enumerate(_list(data, "snapshot: carry")):
        row = _list(item, f"snapshot: carry[{i}]", length=6)
        key = tuple(_str(v, f"snapshot: carry[{i}][{n}]") for n, v in enumerate(row[:5]))
        out[key] = float(_num(row[5], f"snapshot: carry[{i}].remainder"))
    return out


def _cut(data: Any) -> int:
    # May lie after ``taken`` (the clock stepped back between a flush and the save): kept,
    # as a later cut only makes more readings late, never a window released twice.
    cut = _int(data, "snapshot: cut")
    if cut < -1:
        raise SnapshotError(f"snapshot: cut: {cut} is not a minute")
    return cut


def _released(data: Any) -> dict[_Key, int]:
    out: dict[_Key, int] = {}
    for i, item in enumerate(_list(data, "snapshot: released")):
        where = f"snapshot: released[{i}]"
        row = _list(item, where, length=3)
        key = (_str(row[0], f"{where}.purpose"), _str(row[1], f"{where}.recipient"))
        if key in out:
            raise SnapshotError(f"{where}: {key[0]}/{key[1]} appears twice")
        out[key] = _count(row[2], f"{where}.end")
    return out


def _stats(data: Any, names: tuple[str, ...]) -> dict[str, int]:
    found = _mapping(data, "snapshot: stats")
    if set(found) != set(names):
        raise SnapshotError(f"snapshot: stats: expected {sorted(names)}, got {sorted(found)}")
    return {name: _count(found[name], f"snapshot: stats.{name}") for name in names}


def _to_bucket(data: Any, where: str) -> Bucket:
    row = _list(data, where, length=14)
    b = Bucket(_int(row[0], f"{where}.minute"))
    if b.minute < -1:
        raise SnapshotError(f"{where}.minute: {b.minute} is not a minute")
    b.good, b.bad = _count(row[1], f"{where}.good"), _count(row[2], f"{where}.bad")
    b.sum = _num(row[3], f"{where}.sum")
    b.max = None if row[4] is None else _num(row[4], f"{where}.max")
    b.last = _value(row[5], f"{where}.last")
    b.changes = _count(row[6], f"{where}.changes")
    b.changed = _bool(row[7], f"{where}.changed")
    b.union = _to_flags(row[8], f"{where}.union")
    b.delta = _num(row[9], f"{where}.delta")
    b.cover = _num(row[10], f"{where}.cover")
    b.lead = _num(row[11], f"{where}.lead")
    b.lead_from, b.lead_to = _num(row[12], f"{where}.lead_from"), _num(row[13], f"{where}.lead_to")
    if b.delta < 0 or b.cover < 0 or not 0 <= b.lead <= b.delta:
        raise SnapshotError(f"{where}: a negative energy delta or coverage, or a lead gap "
                            f"outside the delta")
    if b.lead_from > b.lead_to:
        raise SnapshotError(f"{where}: the lead gap ends before it starts")
    return b


def _to_flags(data: Any, where: str) -> _Flags:
    if data is None or (isinstance(data, int) and not isinstance(data, bool) and data >= 0):
        return data
    return {_str(v, f"{where}[{n}]") for n, v in enumerate(_list(data, where))}


def _mapping(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise SnapshotError(f"{where}: expected an object, got {type(data).__name__}")
    return data


def _list(data: Any, where: str, length: int | None = None) -> list[Any]:
    if not isinstance(data, list):
        raise SnapshotError(f"{where}: expected a list, got {type(data).__name__}")
    if length is not None and len(data) != length:
        raise SnapshotError(f"{where}: expected {length} fields, got {len(data)}")
    return data


def _str(data: Any, where: str) -> str:
    if not isinstance(data, str):
        raise SnapshotError(f"{where}: expected text, got {type(data).__name__}")
    return data


def _bool(data: Any, where: str) -> bool:
    if not isinstance(data, bool):
        raise SnapshotError(f"{where}: expected true or false, got {data!r}")
    return data


def _int(data: Any, where: str) -> int:
    if not isinstance(data, int) or isinstance(data, bool):
        raise SnapshotError(f"{where}: expected an integer, got {data!r}")
    return data


def _count(data: Any, where: str) -> int:
    value = _int(data, where)
    if value < 0:
        raise SnapshotError(f"{where}: {value} is negative")
    return value


def _index(data: Any, size: int, where: str) -> int:
    value = _int(data, where)
    if not 0 <= value < size:
        raise SnapshotError(f"{where}: no series {value}")
    return value


def _num(data: Any, where: str) -> float:
    if isinstance(data, bool) or not isinstance(data, int | float) or data != data:
        raise SnapshotError(f"{where}: expected a number, got {data!r}")
    return data


def _value(data: Any, where: str) -> Value:
    if data is None or isinstance(data, str):
        return data
    return _num(data, where)


def _tier(data: Any, where: str) -> Tier:
    if data not in {t.value for t in Tier}:
        raise SnapshotError(f"{where}: {data!r} is not a tier")
    return Tier(data)


def _time(data: Any, where: str) -> datetime:
    try:
        value = datetime.fromisoformat(_str(data, where))
    except ValueError:
        raise SnapshotError(f"{where}: not an ISO 8601 time: {data!r}") from None
    if value.tzinfo is None:
        raise SnapshotError(f"{where}: {data!r} has no UTC offset")
    return value
