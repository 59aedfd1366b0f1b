"""Turn a window aggregate into a released :class:`~policy.release.Record`: pick the
statistics for the point kind, round them as the purpose says, carry energy remainders."""

from __future__ import annotations

from datetime import datetime

from policy.aggregate import ENERGY, EVENT, GAUGE, LEVEL, POWER, STATE, Bucket, Series
from policy.catalogue import Purpose
from policy.release import Record, Value

Carry = dict[tuple[str, ...], float]


def rounded(value: float, step: float | None) -> float:
    """``value`` to the nearest multiple of ``step`` (no step: unchanged)."""
    if step is None:
        return value
    return round(round(value / step) * step, 9)


def values(purpose: Purpose, tier: str, series: Series, agg: Bucket, carry: Carry,
           carry_key: tuple[str, ...]) -> dict[str, Value]:
    """The statistics released for one series in one window; empty if no good reading."""
    if not agg.good:
        return {}
    steps = purpose.rounding.get(tier, {})  # type: ignore[call-overload]
    kind = series.kind
    if kind == POWER:
        out: dict[str, Value] = {"mean": rounded(agg.sum / agg.good, steps.get("power"))}
        if "max" in purpose.power_stats and agg.max is not None:
            out["max"] = rounded(agg.max, steps.get("power"))
        return out
    if kind == GAUGE:
        return {"mean": rounded(agg.sum / agg.good, steps.get("gauge"))}
    if kind == LEVEL:
        return {"last": rounded(agg.last, steps.get("level"))}
    if kind == ENERGY:
        return {"delta": _energy(agg.delta, steps.get("energy"), carry, carry_key)}
    if kind == STATE:
        return {"last": agg.last, "changes": agg.changes}
    if kind == EVENT:
        flags = agg.union
        return {"union": sorted(flags) if isinstance(flags, set) else flags}
    return {"last": agg.last}


def _energy(delta: float, step: float | None, carry: Carry, key: tuple[str, ...]) -> float:
    """Round a delta, carrying the remainder into the next window, so that released deltas
    never drift from the true total by more than half a step."""
    if step is None:
        return delta
    total = delta + carry.get(key, 0.0)
    out = rounded(total, step)
    carry[key] = total - out
    return out


def record(purpose: Purpose, tier: str, series: Series, agg: Bucket, minutes: int,
           carry: Carry, carry_key: tuple[str, ...]) -> Record:
    return Record(device=series.device, point=series.point, kind=series.kind_name,
                  unit=series.unit, values=values(purpose, tier, series, agg, carry, carry_key),
                  coverage=min(1.0, agg.cover / minutes), good=agg.good, bad=agg.bad)


def raw_record(series: Series, samples: list[tuple[datetime, float | str]], bad: int) -> Record:
    good = len(samples)
    total = good + bad
    return Record(device=series.device, point=series.point, kind=series.kind_name,
                  unit=series.unit, values={}, coverage=good / total if total else 0.0,
                  good=good, bad=bad, samples=tuple(samples))
