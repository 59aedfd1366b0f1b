"""Property-based tests over random readings, catalogues and grant histories.

* nothing outside a purpose's allow-list, nor finer than its grant, is ever released;
* a purpose with no grant releases nothing;
* aggregation conserves energy (exactly without rounding, within half a step with it);
* expiry and revocation take effect at the exact instant.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.models import PointKind, Quality, Reading
from policy.catalogue import Catalogue, load_catalogue, parse_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.records import Grant
from policy.release import Release
from policy.tiers import ORDER, Tier, rank
from policy.windows import Windows

T0 = datetime(2026, 5, 31, 15, 0, tzinfo=UTC)  # 2026-06-01 00:00 in Tokyo
SPAN = 4 * 3600
POOL = {"pv.power": PointKind.POWER, "pv.energy": PointKind.ENERGY,
        "grid.energy_import": PointKind.ENERGY, "battery.soc": PointKind.LEVEL,
        "inverter.state": PointKind.STATE, "inverter.events": PointKind.EVENT,
        "device.serial": PointKind.INFO, "grid.voltage": PointKind.GAUGE,
        "battery.temperature": PointKind.GAUGE, "weather.wind": PointKind.GAUGE}
COLLECTED = ["equipment", "equipment_status", "pv", "battery", "consumption"]
FACTORY = load_catalogue()
_SETTINGS = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


def _value(kind: PointKind, draw: Any) -> float | str:
    if kind in (PointKind.STATE,):
        return str(draw(st.sampled_from(["mppt", "sleep", "fault"])))
    if kind is PointKind.EVENT:
        return str(draw(st.sampled_from(["", "ARC", "ARC,HOT"])))
    if kind is PointKind.INFO:
        return "SN-42"
    return float(draw(st.integers(0, 5000)))


@st.composite
def readings(draw: Any, points: list[str] | None = None) -> list[Reading]:
    out = []
    for _ in range(draw(st.integers(0, 120))):
        point = draw(st.sampled_from(points or sorted(POOL)))
        kind = POOL[point]
        quality = draw(st.sampled_from([Quality.GOOD] * 6 + [Quality.STALE, Quality.ERROR]))
        value = _value(kind, draw) if quality is Quality.GOOD else None
        out.append(Reading(device=draw(st.sampled_from(["inv", "bat"])), point=point, kind=kind,
                           value=value, unit="", quality=quality,
                           ts=T0 + timedelta(seconds=draw(st.integers(0, SPAN)))))
    return sorted(out, key=lambda r: r.ts)


@st.composite
def catalogues(draw: Any) -> Catalogue:
    raw = FACTORY.spec.model_dump(mode="json")
    for p in raw["purposes"]:
        if p["required"] or p["finest_tier"] == "off":
            continue
        p["categories"] = draw(st.lists(st.sampled_from(COLLECTED), min_size=1, unique=True))
        p["finest_tier"] = draw(st.sampled_from(list(ORDER))).value
        p["default_tier"] = "off"
        p["rounding"] = {t.value: {"energy": draw(st.sampled_from([1, 10, 100])),
                                   "power": draw(st.sampled_from([1, 10]))}
                         for t in ORDER if rank(t) <= rank(p["finest_tier"])
                         and draw(st.booleans())}
    return parse_catalogue(json.dumps(raw))


@st.composite
def grant_sets(draw: Any, catalogue: Catalogue) -> dict[tuple[str, str], Grant]:
    grants = {}
    for p in catalogue.purposes.values():
        for r in p.recipients:
            if p.finest is None or not draw(st.booleans()):
                continue
            tier = draw(st.sampled_from([t for t in ORDER if rank(t) <= rank(p.finest)]))
            since = T0 + timedelta(minutes=draw(st.sampled_from([0, 0, 7, 45, 150])))
            expires = draw(st.one_of(st.none(), st.integers(1, SPAN + 7200).map(
                lambda s: T0 + timedelta(seconds=s))))
            grants[(p.id, r.id)] = Grant(purpose=p.id, recipient=r.id, tier=tier, since=since,
                                         expires=expires, record_id=f"{p.id}/{r.id}",
                                         record_hash="0" * 64, catalogue_version="x")
    return grants


def _feed_and_flush(m: Minimiser, rs: list[Reading], cuts: list[int],
                    grants: dict[tuple[str, str], Grant],
                    end: datetime) -> list[tuple[datetime, Release]]:
    """Feed in chunks, flushing between them at the time of the next reading."""
    out: list[tuple[datetime, Release]] = []
    bounds = sorted({c % (len(rs) + 1) for c in cuts} | {0, len(rs)})
    for a, b in itertools.pairwise(bounds):
        m.feed(rs[a:b])
        now = rs[b].ts if b < len(rs) else end
        out += [(now, rel) for rel in m.flush(now, grants)]
    out += [(end, rel) for rel in m.flush(end, grants)]
    return out


@_SETTINGS
@given(data=st.data())
def test_releases_never_exceed_allow_list_tier_or_grant(data: Any) -> None:
    catalogue = data.draw(catalogues())
    grants = data.draw(grant_sets(catalogue))
    rs = data.draw(readings())
    cuts = data.draw(st.lists(st.integers(0, 200), max_size=4))
    end = T0 + timedelta(seconds=SPAN + data.draw(st.integers(0, 40 * 86400)))
    windows = Windows("Asia/Tokyo")
    for now, rel in _feed_and_flush(Minimiser(catalogue), rs, cuts, grants, end):
        g = grants.get((rel.purpose, rel.recipient))
        assert g is not None, "released without a grant"
        purpose = catalogue.purposes[rel.purpose]
        assert rel.tier == g.tier and purpose.finest is not None
        assert rank(rel.tier) <= rank(purpose.finest)
        assert g.expires is None or now < g.expires, "released after expiry"
        assert g.since <= rel.start < rel.end <= now
        start, stop = windows.window(rel.tier, int(rel.start.timestamp()))
        assert (start, stop) == (int(rel.start.timestamp()), int(rel.end.timestamp()))
        for rec in rel.records:
            category = catalogue.category_of(rec.point)
            assert category is not None and category in purpose.categories, rec.point
            if rec.point.startswith("device."):
                assert "equipment" in purpose.categories
            if rel.tier is Tier.EVENTS:
                assert rec.kind in ("state", "event")
            if rel.tier is not Tier.RAW:
                assert rec.samples == ()
            assert 0.0 <= rec.coverage <= 1.0


@_SETTINGS
@given(rs=readings(), cuts=st.lists(st.integers(0, 200), max_size=4))
def test_no_grant_releases_nothing(rs: list[Reading], cuts: list[int]) -> None:
    end = T0 + timedelta(days=40)
    assert _feed_and_flush(Minimiser(FACTORY), rs, cuts, {}, end) == []


def _increments(rs: list[Reading]) -> float:
    total, last = 0.0, None
    for r in rs:
        if r.quality is Quality.GOOD and isinstance(r.value, float):
            if last is not None and r.value >= last:
                total += r.value - last
            last = r.value
    return total


def _energy_grant(purpose: str, recipient: str, tier: Tier) -> dict[tuple[str, str], Grant]:
    return {(purpose, recipient): Grant(purpose=purpose, recipient=recipient, tier=tier,
                                        since=T0, expires=None, record_id="r",
                                        record_hash="0" * 64, catalogue_version="x")}


@_SETTINGS
@given(rs=readings(points=["grid.energy_import"]), cuts=st.lists(st.integers(0, 200)),
       tier=st.sampled_from([Tier.MINUTE, Tier.HALF_HOUR, Tier.DAY, Tier.MONTH]))
def test_energy_is_conserved_across_windows_gaps_and_resets(rs: list[Reading], cuts: list[int],
                                                            tier: Tier) -> None:
    rs = [r for r in rs if r.device == "inv"]
    grants = _energy_grant("support", "support_centre", tier)  # support does not round
    out = _feed_and_flush(Minimiser(FACTORY), rs, cuts, grants, T0 + timedelta(days=40))
    released = sum(float(rec.values.get("delta", 0.0))  # type: ignore[arg-type]
                   for _, rel in out for rec in rel.records)
    assert released == _increments(rs)


@_SETTINGS
@given(rs=readings(points=["grid.energy_import"]), cuts=st.lists(st.integers(0, 200)))
def test_rounded_energy_stays_within_half_a_step(rs: list[Reading], cuts: list[int]) -> None:
    rs = [r for r in rs if r.device == "inv"]
    grants = _energy_grant("maintenance_watch", "installer", Tier.HALF_HOUR)  # 100 Wh steps
    out = _feed_and_flush(Minimiser(FACTORY), rs, cuts, grants, T0 + timedelta(days=1))
    deltas = [float(rec.values["delta"]) for _, rel in out for rec in rel.records  # type: ignore[arg-type]
              if "delta" in rec.values]
    assert all(d % 100 == 0 for d in deltas)
    assert abs(sum(deltas) - _increments(rs)) <= 50


_OPTIONAL = [(p.id, r.id) for p in FACTORY.purposes.values() if not p.required
             and p.finest is not None for r in p.recipients]


@st.composite
def histories(draw: Any) -> list[tuple[int, str, str, str | None, int | None]]:
    ops, t = [], 0
    for _ in range(draw(st.integers(1, 8))):
        t += draw(st.integers(1, 7200))
        purpose, recipient = draw(st.sampled_from(_OPTIONAL))
        finest = FACTORY.purposes[purpose].finest
        assert finest is not None
        tier = draw(st.sampled_from([None, *[x.value for x in ORDER if rank(x) <= rank(finest)]]))
        expiry = draw(st.one_of(st.none(), st.integers(1, 10000)))
        ops.append((t, purpose, recipient, tier, expiry))
    return ops


@settings(max_examples=25, deadline=None)
@given(ops=histories())
def test_grant_history_takes_effect_at_the_exact_instant(
        ops: list[tuple[int, str, str, str | None, int | None]]) -> None:
    model: dict[tuple[str, str], tuple[str, datetime | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.open(Path(tmp) / "l.json", FACTORY, "site-prop", T0)
        base = {k for k in ledger.grants(T0) if k in _OPTIONAL}
        model = {k: (g.tier.value, None) for k, g in ledger.grants(T0).items() if k in base}
        probes: set[datetime] = set()
        for t, purpose, recipient, tier, expiry in ops:
            now = T0 + timedelta(seconds=t)
            expires = None if expiry is None else now + timedelta(seconds=expiry)
            change = ledger.set_grant(purpose, recipient, tier, source="household_page",
                                      expires=expires, now=now)
            model[(purpose, recipient)] = (tier, change.record.valid_until) if tier else (
                "off", None)
            until = change.record.valid_until
            probes |= {now, now - timedelta(microseconds=1)}
            if until is not None:
                probes |= {until, until - timedelta(microseconds=1)}
            for probe in sorted(p for p in probes if p >= now):
                active = {k for k, g in ledger.grants(probe).items() if k in _OPTIONAL}
                expected = {k for k, (tr, exp) in model.items()
                            if tr != "off" and (exp is None or probe < exp)}
                assert active == expected, probe
