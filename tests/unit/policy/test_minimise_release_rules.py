"""The minimiser's own guarantees: a window goes to a purpose and recipient at most once (also
after a late reading and across a restart), energy is released only for time under consent,
and what the gateway never collects is released to no purpose whatever the catalogue says."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from drivers.models import PointKind, Reading
from policy.catalogue import Catalogue, load_catalogue, parse_catalogue
from policy.minimise import Minimiser
from policy.records import Grant
from policy.release import Release
from policy.tiers import Tier
from tests.unit.policy.test_policy_minimise import T0, grant, reading

CATALOGUE = load_catalogue()
SITE = "site-rules-1"
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def _values(release: Release) -> dict[str, dict[str, Any]]:
    return {r.point: dict(r.values) for r in release.records}


def _restart(m: Minimiser, taken: datetime, now: datetime) -> Minimiser:
    saved = json.loads(json.dumps(m.snapshot(site=SITE, taken=taken)))
    fresh = Minimiser(CATALOGUE)
    fresh.restore(saved, site=SITE, now=now)
    return fresh


# -- at most once per window -------------------------------------------------------------------

def test_a_late_reading_does_not_release_its_window_again_and_its_energy_is_carried() -> None:
    g = grant("service", "company", Tier.HALF_HOUR)
    m = Minimiser(CATALOGUE)
    m.flush(T0, g)
    m.feed([reading("pv.energy", 1000.0, 5 * 60), reading("pv.power", 100.0, 5 * 60)])
    [first] = m.flush(T0 + 30 * MINUTE, g)
    assert (first.start, _values(first)["pv.energy"]) == (T0, {"delta": 0.0})
    # stamped 00:20, inside the window released at 00:30: late, whatever it carries
    m.feed([reading("pv.energy", 1450.0, 20 * 60), reading("pv.power", 900.0, 20 * 60),
            reading("grid.voltage", 230.0, 20 * 60)])  # a series never seen before, too
    assert m.flush(T0 + 31 * MINUTE, g) == []
    assert m.stats["late"] == 3
    m.feed([reading("pv.energy", 1460.0, 40 * 60), reading("pv.power", 200.0, 40 * 60)])
    [second] = m.flush(T0 + HOUR, g)
    assert second.start == T0 + 30 * MINUTE
    # what the late reading saw is counted by the next one in time: 1000 -> 1460
    assert _values(second)["pv.energy"] == {"delta": 460.0}
    assert _values(second)["pv.power"] == {"mean": 200.0, "max": 200.0}


def test_an_energy_reading_older_than_the_last_counter_is_late_not_a_reset() -> None:
    g = grant("service", "company", Tier.HALF_HOUR)
    m = Minimiser(CATALOGUE)
    m.feed([reading("pv.energy", 1000.0, 60), reading("pv.energy", 1030.0, 90),
            reading("pv.energy", 1010.0, 70),  # same minute, older: would look like a reset
            reading("pv.energy", 1050.0, 100)])
    [release] = m.flush(T0 + 30 * MINUTE, g)
    assert _values(release)["pv.energy"] == {"delta": 50.0}
    assert m.stats["late"] == 1


def test_a_window_released_before_a_restart_is_not_released_after_it() -> None:
    g = grant("service", "company", Tier.HALF_HOUR)
    m = Minimiser(CATALOGUE)
    m.flush(T0, g)
    m.feed([reading("pv.energy", 1000.0, 5 * 60), reading("pv.power", 100.0, 5 * 60)])
    assert len(m.flush(T0 + 30 * MINUTE, g)) == 1
    saved = m.snapshot(site=SITE, taken=T0 + 30 * MINUTE)
    m = _restart(m, T0 + 30 * MINUTE, now=T0 + 30 * MINUTE + 20 * timedelta(seconds=1))
    m.feed([reading("pv.energy", 1450.0, 20 * 60), reading("pv.power", 900.0, 29 * 60)])
    assert m.flush(T0 + 31 * MINUTE, g) == []
    assert m.stats["late"] == 2
    end = int((T0 + 30 * MINUTE).timestamp())  # what the snapshot carries for it
    assert saved["released"] == [["service", "company", end]] and saved["cut"] == end // 60


def test_a_cut_after_the_snapshot_time_is_kept_when_the_clock_stepped_back() -> None:
    g = grant("service", "company", Tier.HALF_HOUR)
    m = Minimiser(CATALOGUE)
    m.flush(T0, g)
    m.feed([reading("pv.power", 100.0, 5 * 60)])
    assert len(m.flush(T0 + 31 * MINUTE, g)) == 1
    m = _restart(m, T0 + 29 * MINUTE, now=T0 + 29 * MINUTE)  # saved after a step back
    m.feed([reading("pv.power", 900.0, 29 * 60)])
    assert m.flush(T0 + 32 * MINUTE, g) == [] and m.stats["late"] == 1


def test_nothing_overlapping_a_released_window_goes_to_the_same_purpose_and_recipient() -> None:
    # the marks hold even for a grant whose start precedes what was already released
    m = Minimiser(CATALOGUE)
    half = grant("improvement", "company", Tier.HALF_HOUR)
    m.flush(T0, half)
    m.feed(reading("pv.power", 100.0, s) for s in range(0, 3600, 60))
    assert [r.start for r in m.flush(T0 + HOUR, half)] == [T0, T0 + 30 * MINUTE]
    day = grant("improvement", "company", Tier.DAY)  # since T0, like the half-hour grant
    m.flush(T0 + HOUR, day)
    m.feed(reading("pv.power", 100.0, s) for s in range(3600, 7200, 60))
    assert m.flush(T0 + timedelta(days=1), day) == []  # [T0, T0+1d) overlaps [T0, T0+1h)
    assert m.stats["repeated"] == 1
    # the next day is released as usual
    m.feed([reading("pv.power", 100.0, 86400 + 60)])
    assert [r.start for r in m.flush(T0 + timedelta(days=2), day)] == [T0 + timedelta(days=1)]


def test_the_raw_tier_releases_each_minute_once() -> None:
    g = grant("support", "support_centre", Tier.RAW, expires=T0 + timedelta(days=3))
    m = Minimiser(CATALOGUE)
    m.flush(T0, g)
    m.feed([reading("pv.power", 1.0, 10)])
    assert len(m.flush(T0 + MINUTE, g)) == 1
    m.feed([reading("pv.power", 2.0, 20), reading("battery.soc", 50.0, 30)])
    assert m.flush(T0 + 2 * MINUTE, g) == []
    assert m.stats["late"] == 2


# -- energy only for time under consent ----------------------------------------------------------

def _grant(purpose: str, recipient: str, tier: Tier, since: datetime) -> dict[tuple[str, str],
                                                                              Grant]:
    return grant(purpose, recipient, tier, since=since)


def test_a_gap_straddling_the_grant_releases_only_the_share_after_it() -> None:
    day = timedelta(days=1)  # T0 is day D-1 00:00 in Tokyo
    since = T0 + timedelta(hours=23, minutes=30)  # proposals granted at D-1 23:30
    grants = {**_grant("proposals", "company", Tier.DAY, since),  # rounds to 100 Wh
              **_grant("support", "support_centre", Tier.DAY, since),  # no rounding
              **_grant("improvement", "company", Tier.DAY, T0)}  # granted before the gap
    m = Minimiser(CATALOGUE)
    m.flush(T0, grants)
    m.feed([Reading(device="meter", point="grid.energy_import", kind=PointKind.ENERGY,
                    value=value, unit="Wh", ts=at)
            for at, value in ((T0 + timedelta(hours=10), 10000.0),  # D-1 10:00
                              (T0 + day + timedelta(minutes=10), 15000.0),  # D 00:10
                              (T0 + day + timedelta(hours=12), 15100.0))])  # D 12:00
    by = {(r.purpose, r.start): _values(r)["grid.energy_import"]["delta"]
          for r in m.flush(T0 + 2 * day, grants)}
    # the gap is 14 h 10 min (850 min), 40 min of it after 23:30
    share = 5000.0 * 40 / 850 + 100.0
    assert by[("support", T0 + day)] == pytest.approx(share)  # 335.29 Wh, not 5100
    assert by[("proposals", T0 + day)] == 300.0  # the same, to 100 Wh
    assert by[("improvement", T0 + day)] == 5100.0  # granted all along: all of it
    assert ("proposals", T0) not in by and ("support", T0) not in by  # began before the grant


def test_a_gap_straddling_the_grant_across_a_restart_is_split_too() -> None:
    since = T0 + timedelta(minutes=20)
    grants = _grant("support", "support_centre", Tier.HALF_HOUR, since)
    m = Minimiser(CATALOGUE)
    m.flush(T0, grants)
    m.feed([reading("pv.energy", 1000.0, 10 * 60)])
    m.flush(T0 + 11 * MINUTE, grants)
    m = _restart(m, T0 + 11 * MINUTE, now=T0 + 25 * MINUTE)
    m.feed([reading("pv.energy", 1600.0, 40 * 60)])  # 30 min gap, 20 min of it granted
    [release] = m.flush(T0 + HOUR, grants)
    assert _values(release)["pv.energy"]["delta"] == pytest.approx(400.0)


# -- what the gateway never collects -------------------------------------------------------------

NEVER = {"water.flow": PointKind.GAUGE, "water.volume": PointKind.ENERGY,
         "gas.flow": PointKind.GAUGE, "gas.volume": PointKind.ENERGY,
         "external.power": PointKind.POWER, "external.energy": PointKind.ENERGY}


def _variant(how: str) -> Catalogue:
    raw = CATALOGUE.spec.model_dump(mode="json")
    for c in raw["categories"]:
        if how == "marked collected":
            c["collected_by_gateway"] = True
        if how == "mapped to consumption" and c["id"] == "consumption":
            c["points"] = ["water.*", "gas.*", "external.*", *c["points"]]
    raw["version"] += f"-{how.replace(' ', '-')}"
    return parse_catalogue(json.dumps(raw))


def _every_grant(catalogue: Catalogue) -> dict[tuple[str, str], Grant]:
    return {(p.id, r.id): Grant(purpose=p.id, recipient=r.id, tier=p.finest, since=T0,
                                expires=None, record_id="r", record_hash="0" * 64,
                                catalogue_version=catalogue.version)
            for p in catalogue.purposes.values() if p.finest is not None
            for r in p.recipients}


@pytest.mark.parametrize("how", ["factory", "marked collected", "mapped to consumption"])
def test_never_collected_points_are_released_to_no_purpose(how: str) -> None:
    catalogue = CATALOGUE if how == "factory" else _variant(how)
    grants = _every_grant(catalogue)
    assert ("maintenance_watch", "installer") in grants
    m = Minimiser(catalogue)
    m.flush(T0, grants)  # learns that raw is wanted
    rs = [Reading(device="home", point=point, kind=kind, value=float(10 * s), unit="",
                  ts=T0 + timedelta(seconds=s)) for s in range(0, 3600, 30)
          for point, kind in NEVER.items()]
    m.feed(rs + [reading("pv.power", 100.0, s) for s in range(0, 3600, 30)])
    releases = [r for t in (HOUR, timedelta(days=40))
                for r in m.flush(T0 + t, grants)]
    assert {r.purpose for r in releases} >= {"maintenance_watch", "service", "support"}
    released = {rec.point for r in releases for rec in r.records} | {
        point for r in releases for _, point in r.missing}
    assert released == {"pv.power"}
    assert m.stats["not_collected"] == len(rs)
    assert m.held()["series"] == [["inv", "pv.power"]]  # nothing of them held for release
