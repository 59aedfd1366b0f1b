"""Property tests of the minimiser's release rules over random reading streams, delivered late
and out of order, flushed at random times and cut by a restart:

* no (purpose, recipient, window) is released twice, and windows released to the same purpose
  and recipient never overlap;
* energy released under a grant never exceeds the energy measured while it was in force.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from drivers.models import PointKind, Quality, Reading
from policy.minimise import Minimiser
from policy.records import Grant
from policy.release import Release
from policy.tiers import Tier
from tests.unit.policy.test_policy_properties import (
    _SETTINGS,
    FACTORY,
    SPAN,
    T0,
    grant_sets,
    readings,
)

SITE = "site-prop-rules"


def _deliver(draw: Any, rs: list[Reading]) -> list[tuple[int, Reading]]:
    """Each reading with the second it reaches the minimiser: up to 15 minutes after its
    stamp, so some arrive after the window they belong to was flushed."""
    delays = [draw(st.sampled_from([0, 0, 0, 5, 61, 400, 900])) for _ in rs]
    out = [(int((r.ts - T0).total_seconds()) + d, r) for d, r in zip(delays, rs, strict=True)]
    return sorted(out, key=lambda pair: pair[0])


def _run(arrivals: list[tuple[int, Reading]], flushes: list[int],
         grants: dict[tuple[str, str], Grant], restart_at: int | None) -> list[Release]:
    """Feed what arrived before each flush, flush; snapshot and restore at ``restart_at``."""
    m, out, i = Minimiser(FACTORY), [], 0
    for n, at in enumerate(sorted(set(flushes))):
        chunk = []
        while i < len(arrivals) and arrivals[i][0] <= at:
            chunk.append(arrivals[i][1])
            i += 1
        m.feed(chunk)
        now = T0 + timedelta(seconds=at)
        out += m.flush(now, grants)
        if n == restart_at:
            saved = json.loads(json.dumps(m.snapshot(site=SITE, taken=now)))
            m = Minimiser(FACTORY)
            m.restore(saved, site=SITE, now=now + timedelta(seconds=1))
    return out


@_SETTINGS
@given(data=st.data())
def test_no_window_is_released_twice_to_a_purpose_and_recipient(data: Any) -> None:
    grants = data.draw(grant_sets(FACTORY))
    arrivals = _deliver(data.draw, data.draw(readings()))
    flushes = data.draw(st.lists(st.integers(0, SPAN + 1800), min_size=1, max_size=12))
    restart_at = data.draw(st.one_of(st.none(), st.integers(0, 11)))
    seen: dict[tuple[str, str], datetime] = {}
    for rel in _run(arrivals, [*flushes, SPAN + 40 * 86400], grants, restart_at):
        key = (rel.purpose, rel.recipient)
        assert key not in seen or rel.start >= seen[key], (key, rel.start, seen[key])
        seen[key] = rel.end


@st.composite
def _counter(draw: Any, linear: bool) -> list[Reading]:
    """One energy counter: rising 1 Wh a second (``linear``) or by random steps."""
    stamps = sorted(draw(st.lists(st.integers(0, SPAN), max_size=60)))
    out, value = [], 1000.0
    for n, s in enumerate(stamps):
        if linear:
            value = 1000.0 + s
        elif n:
            value += float(draw(st.integers(0, 400)))
        out.append(Reading(device="meter", point="grid.energy_import", kind=PointKind.ENERGY,
                           value=value, unit="Wh", ts=T0 + timedelta(seconds=s),
                           quality=Quality.GOOD))
    return out


def _support(tier: Tier, since: int) -> dict[tuple[str, str], Grant]:
    """support rounds nothing: what it receives is exactly what was attributed to it."""
    return {("support", "support_centre"): Grant(
        purpose="support", recipient="support_centre", tier=tier,
        since=T0 + timedelta(seconds=since), expires=None, record_id="r",
        record_hash="0" * 64, catalogue_version="x")}


def _released(out: list[Release]) -> float:
    return sum(float(rec.values.get("delta", 0.0))  # type: ignore[arg-type]
               for rel in out for rec in rel.records)


_TIERS = st.sampled_from([Tier.MINUTE, Tier.HALF_HOUR, Tier.DAY])


@_SETTINGS
@given(data=st.data(), tier=_TIERS, since=st.integers(0, SPAN))
def test_energy_released_late_or_not_stays_within_the_time_under_consent(
        data: Any, tier: Tier, since: int) -> None:
    rs = data.draw(_counter(linear=True))  # 1 Wh/s: any subset of readings measures it exactly
    arrivals = _deliver(data.draw, rs)
    flushes = data.draw(st.lists(st.integers(0, SPAN + 1800), max_size=12))
    restart_at = data.draw(st.one_of(st.none(), st.integers(0, 11)))
    out = _run(arrivals, [*flushes, SPAN + 40 * 86400], _support(tier, since), restart_at)
    last = max((int((r.ts - T0).total_seconds()) for r in rs), default=0)
    assert _released(out) <= max(0, last - since) + 1e-6


@_SETTINGS
@given(rs=_counter(linear=False), tier=_TIERS, since=st.integers(0, SPAN),
       flushes=st.lists(st.integers(0, SPAN), max_size=8))
def test_energy_released_never_exceeds_the_share_of_each_gap_under_consent(
        rs: list[Reading], tier: Tier, since: int, flushes: list[int]) -> None:
    arrivals = [(int((r.ts - T0).total_seconds()), r) for r in rs]  # in time, none late
    out = _run(arrivals, [*flushes, SPAN + 40 * 86400], _support(tier, since), None)
    start = T0 + timedelta(seconds=since)
    bound = 0.0
    for a, b in itertools.pairwise(rs):
        gap = (b.ts - a.ts).total_seconds()
        after = (b.ts - max(a.ts, start)).total_seconds()
        delta = float(b.value) - float(a.value)  # type: ignore[arg-type]
        if gap == 0 and b.ts >= start:
            bound += delta  # two readings in the same second, under the grant
        elif after > 0:
            bound += delta * (after / gap)
    assert _released(out) <= bound + 1e-6
