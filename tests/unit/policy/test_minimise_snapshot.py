"""Minimiser snapshots: a restart between feeds releases what an uninterrupted run releases,
and a snapshot for another site, catalogue, zone or schema, stale or damaged, is refused whole."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.models import Reading
from policy.catalogue import load_catalogue, parse_catalogue
from policy.errors import PolicyError
from policy.minimise import Minimiser
from policy.minimise_state import SnapshotError
from policy.release import Release
from policy.tiers import Tier
from tests.unit.policy.test_policy_minimise import T0, grant, reading
from tests.unit.policy.test_policy_properties import _SETTINGS, catalogues, grant_sets, readings

SITE = "site-snap-1"
CATALOGUE = load_catalogue()
SERVICE = grant("service", "company", Tier.HALF_HOUR)


def _restart(m: Minimiser, taken: datetime, now: datetime | None = None,
             tz: str = "Asia/Tokyo") -> Minimiser:
    """What the daemon does: snapshot, JSON to disk and back, restore into a new minimiser."""
    saved = json.loads(json.dumps(m.snapshot(site=SITE, taken=taken)))
    fresh = Minimiser(m._catalogue, tz=tz)
    fresh.restore(saved, site=SITE, now=now or taken)
    return fresh


def _energy_minutes(m: Minimiser, minutes: range, start: float = 1000.0) -> None:
    """pv.energy rising 10 Wh a minute and pv.power, one reading each at :00 of each minute."""
    m.feed(r for minute in minutes
           for r in (reading("pv.energy", start + 10.0 * minute, minute * 60),
                     reading("pv.power", 600.0, minute * 60)))


def _values(release: Release) -> dict[str, dict[str, Any]]:
    return {r.point: {**r.values, "coverage": r.coverage} for r in release.records}


def test_a_window_cut_by_a_restart_is_released_whole_with_its_energy() -> None:
    m = Minimiser(CATALOGUE)
    m.flush(T0, SERVICE)
    _energy_minutes(m, range(0, 12))
    assert m.flush(T0 + timedelta(minutes=12), SERVICE) == []
    m = _restart(m, T0 + timedelta(minutes=12), now=T0 + timedelta(minutes=12, seconds=20))
    _energy_minutes(m, range(12, 31))
    [release] = m.flush(T0 + timedelta(minutes=30, seconds=5), SERVICE)
    assert (release.start, release.end) == (T0, T0 + timedelta(minutes=30))
    values = _values(release)
    assert values["pv.energy"] == {"delta": 290.0, "coverage": 1.0}  # 1000 → 1290: nothing lost
    assert values["pv.power"] == {"mean": 600.0, "max": 600.0, "coverage": 1.0}


def test_the_increment_across_a_restart_goes_to_the_window_of_the_next_reading() -> None:
    m = Minimiser(CATALOGUE)
    m.flush(T0, SERVICE)
    m.feed([reading("pv.energy", 1000.0, 25 * 60)])
    m.flush(T0 + timedelta(minutes=26), SERVICE)
    m = _restart(m, T0 + timedelta(minutes=26), now=T0 + timedelta(minutes=31))
    m.feed([reading("pv.energy", 1100.0, 31 * 60), reading("pv.energy", 1105.0, 59 * 60)])
    first, second = m.flush(T0 + timedelta(hours=1), SERVICE)
    assert _values(first)["pv.energy"]["delta"] == 0.0  # the window the restart cut
    assert _values(second)["pv.energy"]["delta"] == 105.0  # 1000 → 1105, as for any gap


def test_a_counter_reset_after_a_restart_is_still_a_reset() -> None:
    m = Minimiser(CATALOGUE)
    m.flush(T0, SERVICE)
    m.feed([reading("pv.energy", 5000.0, 60)])
    m.flush(T0 + timedelta(minutes=2), SERVICE)
    m = _restart(m, T0 + timedelta(minutes=2))
    m.feed([reading("pv.energy", 20.0, 180), reading("pv.energy", 45.0, 240)])  # a new device
    [release] = m.flush(T0 + timedelta(minutes=30), SERVICE)
    assert _values(release)["pv.energy"]["delta"] == 25.0


def test_a_window_that_ended_while_stopped_is_released_once_with_the_coverage_it_has() -> None:
    m = Minimiser(CATALOGUE)
    m.flush(T0, SERVICE)
    _energy_minutes(m, range(0, 10))
    m.flush(T0 + timedelta(minutes=10), SERVICE)
    later = T0 + timedelta(minutes=38)  # 28 minutes after the snapshot: not stale
    m = _restart(m, T0 + timedelta(minutes=10), now=later)
    [release] = m.flush(later, SERVICE)
    assert (release.start, release.end) == (T0, T0 + timedelta(minutes=30))
    assert _values(release)["pv.power"]["coverage"] == pytest.approx(10 / 30)
    assert m.flush(later + timedelta(minutes=1), SERVICE) == []


def test_raw_readings_of_the_open_minute_survive() -> None:
    support = grant("support", "support_centre", Tier.RAW)
    m = Minimiser(CATALOGUE)
    m.flush(T0, support)
    m.feed([reading("pv.power", 100.0, 5), reading("pv.power", 110.0, 20)])
    m = _restart(m, T0 + timedelta(seconds=30))
    m.feed([reading("pv.power", 120.0, 50)])
    [release] = m.flush(T0 + timedelta(minutes=1), support)
    assert [v for _, v in release.records[0].samples] == [100.0, 110.0, 120.0]


def test_the_snapshot_is_plain_json_and_names_what_it_is_for() -> None:
    m = Minimiser(CATALOGUE)
    m.flush(T0, SERVICE)
    _energy_minutes(m, range(0, 3))
    m.flush(T0 + timedelta(minutes=3), SERVICE)
    saved = m.snapshot(site=SITE, taken=T0 + timedelta(minutes=3))
    assert json.loads(json.dumps(saved, allow_nan=False)) == saved
    assert (saved["kind"], saved["schema"], saved["site"]) == ("hems-minimiser-state", 2, SITE)
    assert saved["catalogue"] == CATALOGUE.content_hash and saved["tiers"] == ["30min"]
    assert [w[:3] for w in saved["windows"]] == [["30min", int(T0.timestamp()),
                                                  int(T0.timestamp()) + 1800]]


def _saved() -> dict[str, Any]:
    m = Minimiser(CATALOGUE)
    m.flush(T0, SERVICE)
    _energy_minutes(m, range(0, 5))
    m.feed([reading("inverter.events", "ARC", 290), reading("inverter.state", "mppt", 290)])
    m.flush(T0 + timedelta(minutes=5), SERVICE)
    saved: dict[str, Any] = json.loads(json.dumps(m.snapshot(site=SITE,
                                                             taken=T0 + timedelta(minutes=5))))
    return saved


def _other_catalogue() -> Any:
    raw = CATALOGUE.spec.model_dump(mode="json")
    raw["version"] = raw["version"] + "-next"
    return parse_catalogue(json.dumps(raw))


def _damage(saved: dict[str, Any], how: str) -> None:
    if how == "series field":
        saved["series"][0][4] = "not a bucket"
    elif how == "bucket count":
        saved["series"][0][4][1] = -1
    elif how == "window start":
        saved["windows"][0][1] += 60
    elif how == "series index":
        saved["windows"][0][3][0][0] = 99
    elif how == "stats":
        del saved["stats"]["late"]
    elif how == "taken":
        saved["taken"] = "yesterday"
    elif how == "nan":
        saved["series"][0][4][3] = float("nan")
    elif how == "tier":
        saved["tiers"] = ["5min"]
    elif how == "duplicate":
        saved["series"].append(copy.deepcopy(saved["series"][0]))
    elif how == "cut":
        saved["cut"] = -5
    elif how == "released":
        saved["released"] = [["service", "company", -1800]]
    elif how == "lead":
        saved["series"][0][4][11] = 1e9  # a lead gap larger than the delta


@pytest.mark.parametrize("how", ["series field", "bucket count", "window start", "series index",
                                 "stats", "taken", "nan", "tier", "duplicate", "cut",
                                 "released", "lead"])
def test_damaged_snapshots_are_refused_naming_the_field(how: str) -> None:
    saved = _saved()
    _damage(saved, how)
    m = Minimiser(CATALOGUE)
    with pytest.raises(SnapshotError, match=r"^snapshot: "):
        m.restore(saved, site=SITE, now=T0 + timedelta(minutes=6))
    assert m.holds_nothing()  # refused whole: still empty, and usable
    _energy_minutes(m, range(6, 31))
    assert m.flush(T0 + timedelta(minutes=30), SERVICE)


@pytest.mark.parametrize(("change", "message"), [
    ({"site": "site-other"}, "site: taken for 'site-other'"),
    ({"schema": 3}, "schema 3 is newer than this agent reads"),
    ({"schema": 1}, "schema 1 is older than this agent reads"),
    ({"schema": "1"}, "schema: expected a positive integer"),
    ({"kind": "something-else"}, "kind: expected"),
    ({"timezone": "UTC"}, "timezone: taken for 'UTC'"),
])
def test_a_snapshot_for_something_else_is_refused(change: dict[str, Any], message: str) -> None:
    saved = {**_saved(), **change}
    with pytest.raises(SnapshotError, match=message):
        Minimiser(CATALOGUE).restore(saved, site=SITE, now=T0 + timedelta(minutes=6))


def test_a_snapshot_under_another_catalogue_is_refused() -> None:
    with pytest.raises(SnapshotError, match="catalogue: taken for"):
        Minimiser(_other_catalogue()).restore(_saved(), site=SITE,
                                              now=T0 + timedelta(minutes=6))


def test_stale_and_future_snapshots_are_refused() -> None:
    saved = _saved()  # taken at minute 5; the longest window then open: 30 minutes
    Minimiser(CATALOGUE).restore(saved, site=SITE, now=T0 + timedelta(minutes=35))
    with pytest.raises(SnapshotError, match="longer than the longest window then open"):
        Minimiser(CATALOGUE).restore(saved, site=SITE, now=T0 + timedelta(minutes=36))
    with pytest.raises(SnapshotError, match="the clock is behind"):
        Minimiser(CATALOGUE).restore(saved, site=SITE, now=T0 + timedelta(minutes=4))


@pytest.mark.parametrize("data", [None, [], "x", {"kind": "hems-minimiser-state"}])
def test_not_a_snapshot_at_all(data: Any) -> None:
    with pytest.raises(SnapshotError):
        Minimiser(CATALOGUE).restore(data, site=SITE, now=T0)


def test_restore_only_into_an_empty_minimiser_and_clear_tells_the_agent() -> None:
    m = Minimiser(CATALOGUE)
    m.feed([reading("pv.power", 1.0, 0)])
    with pytest.raises(PolicyError, match="fed nothing"):
        m.restore(_saved(), site=SITE, now=T0 + timedelta(minutes=6))
    cleared: list[bool] = []
    m.on_clear = lambda: cleared.append(True)
    m.clear()
    assert cleared == [True] and m.holds_nothing()


@_SETTINGS
@given(data=st.data())
def test_a_restart_between_feeds_releases_what_one_run_releases(data: Any) -> None:
    catalogue = data.draw(catalogues())
    grants = data.draw(grant_sets(catalogue))
    rs: list[Reading] = data.draw(readings())
    cut = data.draw(st.integers(0, len(rs)))
    a, b = rs[:cut], rs[cut:]
    restart_at = b[0].ts if b else T0 + timedelta(hours=5)
    end = restart_at + timedelta(seconds=data.draw(st.integers(0, 2 * 86400)))

    def run(restart: bool) -> list[Release]:
        m = Minimiser(catalogue)
        out = m.flush(T0, grants)
        m.feed(a)
        out += m.flush(restart_at, grants)
        if restart:
            m = _restart(m, restart_at)
        m.feed(b)
        return out + m.flush(end, grants)

    assert run(restart=True) == run(restart=False)


def test_energy_rounding_remainders_carry_over_a_restart() -> None:
    watch = grant("maintenance_watch", "installer", Tier.HALF_HOUR)  # energy in 100 Wh steps
    m = Minimiser(CATALOGUE)
    m.flush(T0, watch)
    m.feed([reading("pv.energy", 1000.0, 0), reading("pv.energy", 1130.0, 29 * 60)])
    [first] = m.flush(T0 + timedelta(minutes=31), watch)
    assert _values(first)["pv.energy"]["delta"] == 100.0  # 30 Wh carried
    m = _restart(m, T0 + timedelta(minutes=31))
    m.feed([reading("pv.energy", 1160.0, 40 * 60)])
    [second] = m.flush(T0 + timedelta(hours=1), watch)
    assert _values(second)["pv.energy"]["delta"] == 100.0  # 30 carried + 30 = 60 → 100
