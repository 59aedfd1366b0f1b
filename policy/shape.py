"""Turn a window aggregate into a released :class:`~policy.release.Record`: pick the
statistics for the point kind, round them as the purpose says, carry energy remainders.

Energy is released only for time under consent: when the window's lead gap (see
:mod:`policy.aggregate`) began before the grant took effect, only the share of its delta that
falls after ``since`` is released, in proportion to time; the share before is released to no
one under that grant (and is not carried into a later window)."""

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
           carry_key: tuple[str, ...], since: float = float("-inf")) -> dict[str, Value]:
    """The statistics released for one series in one window; empty if no good reading.

    ``since`` (epoch seconds) is when the grant took effect: energy measured before it is
    not released."""
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
        return {"delta": _energy(consented_delta(agg, since), steps.get("energy"), carry,
                                 carry_key)}
    if kind == STATE:
        return {"last": agg.last, "changes": agg.changes}
    if kind == EVENT:
        flags = agg.union
        return {"union": sorted(flags) if isinstance(flags, set) else flags}
    return {"last": agg.last}


def consented_delta(agg: Bucket, since: float) -> float:
    """The window's energy delta measured after ``since``: its lead gap, if it began before
    ``since``, counts only for the part of its interval after ``since`` (proportional to
    time); every later gap of the window began inside it, so after ``since``."""
    start = agg.lead_from
    if not agg.lead or start >= since:
        return agg.delta
    span = agg.lead_to - start
    after = agg.lead_to - since
    share = 0.0 if span <= 0 or after <= 0 else min(1.0, after / span)
    return agg.delta - agg.lead + agg.lead * share


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
           carry: Carry, carry_key: tuple[str, ...], since: float = float("-inf")) -> Record:
    return Record(device=series.device, point=series.point, kind=series.kind_name,
                  unit=series.unit,
                  values=values(purpose, tier, series, agg, carry, carry_key, since),
                  coverage=min(1.0, agg.cover / minutes), good=agg.good, bad=agg.bad)


def raw_record(series: Series, samples: list[tuple[datetime, float | str]], bad: int) -> Record:
    good = len(samples)
    total = good + bad
    return Record(device=series.device, point=series.point, kind=series.kind_name,
                  unit=series.unit, values={}, coverage=good / total if total else 0.0,
                  good=good, bad=bad, samples=tuple(samples))
