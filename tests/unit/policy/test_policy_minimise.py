"""Minimiser examples: allow-lists, aggregation by kind, coverage, rounding, windows, grants."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from drivers.models import PointKind, Quality, Reading
from policy.catalogue import load_catalogue
from policy.minimise import Minimiser
from policy.records import Grant
from policy.release import Release
from policy.tiers import Tier

# 2026-06-01 00:00 in Tokyo
T0 = datetime(2026, 5, 31, 15, 0, tzinfo=UTC)
KINDS = {"pv.power": PointKind.POWER, "pv.energy": PointKind.ENERGY,
         "battery.soc": PointKind.LEVEL, "inverter.state": PointKind.STATE,
         "inverter.events": PointKind.EVENT, "device.serial": PointKind.INFO,
         "grid.voltage": PointKind.GAUGE, "weather.temperature": PointKind.GAUGE,
         "grid.energy_import": PointKind.ENERGY}


def reading(point: str, value: float | str | None, seconds: float, device: str = "inv",
            quality: Quality = Quality.GOOD) -> Reading:
    return Reading(device=device, point=point, kind=KINDS[point], value=value, unit="",
                   ts=T0 + timedelta(seconds=seconds), quality=quality)


def grant(purpose: str, recipient: str, tier: Tier, since: datetime = T0,
          expires: datetime | None = None) -> dict[tuple[str, str], Grant]:
    return {(purpose, recipient): Grant(purpose=purpose, recipient=recipient, tier=tier,
                                        since=since, expires=expires, record_id="rec-1",
                                        record_hash="ab" * 32, catalogue_version="2026.1")}


def run(readings: Iterable[Reading], grants: dict[tuple[str, str], Grant],
        now: datetime, tz: str = "Asia/Tokyo") -> list[Release]:
    m = Minimiser(load_catalogue(), tz=tz)
    m.feed(readings)
    return m.flush(now, grants)


def test_half_hour_aggregation_by_kind() -> None:
    rs = [reading("pv.power", float(w), s) for s, w in ((0, 100), (600, 300), (1200, 200))]
    rs += [reading("pv.energy", e, s) for s, e in ((0, 1000.0), (900, 1040.0), (1700, 1100.0))]
    rs += [reading("battery.soc", soc, s) for s, soc in ((10, 50.0), (1500, 55.0))]
    rs += [reading("inverter.state", st, s) for s, st in ((0, "mppt"), (60, "fault"),
                                                           (120, "mppt"))]
    rs += [reading("inverter.events", ev, s) for s, ev in ((0, ""), (60, "GROUND_FAULT"),
                                                            (120, "OVER_TEMP,GROUND_FAULT"))]
    rs += [reading("device.serial", "SN-1", 5), reading("weather.temperature", 20.0, 5)]
    releases = run(rs, grant("service", "company", Tier.HALF_HOUR), T0 + timedelta(hours=1))
    assert len(releases) == 1
    rel = releases[0]
    assert (rel.start, rel.end, rel.tier) == (T0, T0 + timedelta(minutes=30), Tier.HALF_HOUR)
    values = {r.point: dict(r.values) for r in rel.records}
    assert values["pv.power"] == {"mean": 200.0, "max": 300.0}
    assert values["pv.energy"] == {"delta": 100.0}
    assert values["battery.soc"] == {"last": 55.0}
    assert values["inverter.state"] == {"last": "mppt", "changes": 2}
    assert values["inverter.events"] == {"union": ["GROUND_FAULT", "OVER_TEMP"]}
    assert values["device.serial"] == {"last": "SN-1"}
    assert "weather.temperature" not in values  # no category: dropped explicitly
    assert rel.consent_record_id == "rec-1" and rel.catalogue_version == load_catalogue().version


def test_identity_and_equipment_only_where_the_purpose_lists_them() -> None:
    rs = [reading("device.serial", "SN-1", 5), reading("pv.energy", 1.0, 5),
          reading("inverter.state", "mppt", 5), reading("pv.energy", 2.0, 70)]
    releases = run(rs, grant("proposals", "company", Tier.DAY), T0 + timedelta(days=1))
    assert [r.points for r in releases] == [frozenset({"pv.energy"})]


def test_bad_quality_counts_in_coverage_but_is_never_a_value() -> None:
    rs = [reading("pv.power", 100.0, 0), reading("pv.power", None, 60, quality=Quality.ERROR),
          reading("pv.power", 999.0, 61, quality=Quality.STALE)]
    rs += [reading("battery.soc", None, 0, quality=Quality.MISSING)]
    rel = run(rs, grant("service", "company", Tier.HALF_HOUR), T0 + timedelta(minutes=30))[0]
    by_point = {r.point: r for r in rel.records}
    assert by_point["pv.power"].values == {"mean": 100.0, "max": 100.0}
    assert by_point["pv.power"].coverage == pytest.approx(1 / 30)
    assert (by_point["pv.power"].good, by_point["pv.power"].bad) == (1, 2)
    assert by_point["battery.soc"].values == {} and by_point["battery.soc"].coverage == 0


def test_series_silent_in_a_window_is_listed_as_missing() -> None:
    rs = [reading("pv.power", 1.0, 0), reading("grid.voltage", 230.0, 0),
          reading("pv.power", 2.0, 1800)]
    releases = run(rs, grant("service", "company", Tier.HALF_HOUR), T0 + timedelta(hours=1))
    assert releases[1].missing == (("inv", "grid.voltage"),)


def test_counter_reset_counts_from_the_new_value() -> None:
    rs = [reading("pv.energy", v, s) for s, v in ((0, 100.0), (60, 110.0), (120, 5.0),
                                                  (180, 15.0))]
    rel = run(rs, grant("service", "company", Tier.HALF_HOUR), T0 + timedelta(minutes=30))[0]
    assert rel.records[0].values == {"delta": 20.0}


def test_rounding_carries_the_remainder_so_energy_is_conserved() -> None:
    # maintenance watch rounds 30-minute energy to 100 Wh
    rs = [reading("grid.energy_import", 60.0 * i, 1800 * i) for i in range(9)]
    releases = run(rs, grant("maintenance_watch", "installer", Tier.HALF_HOUR),
                   T0 + timedelta(hours=5))
    deltas = [r.records[0].values["delta"] for r in releases]
    assert all(d % 100 == 0 for d in deltas)  # type: ignore[operator]
    assert abs(sum(deltas) - 480.0) <= 50  # type: ignore[arg-type]


def test_windows_follow_local_days_and_dst() -> None:
    berlin_midnight = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 29 March: 23 hours long
    rs = [Reading(device="m", point="grid.energy_import", kind=PointKind.ENERGY, value=float(h),
                  unit="Wh", ts=berlin_midnight + timedelta(hours=h)) for h in range(25)]
    releases = run(rs, grant("improvement", "company", Tier.DAY, since=berlin_midnight),
                   berlin_midnight + timedelta(days=2), tz="Europe/Berlin")
    assert releases[0].start == berlin_midnight
    assert releases[0].end - releases[0].start == timedelta(hours=23)
    assert releases[0].records[0].values == {"delta": 20.0}  # 23 h, rounded to 10 Wh steps


def test_nothing_from_before_the_grant_and_nothing_after_revocation() -> None:
    rs = [reading("pv.power", 1.0, s) for s in range(0, 7200, 60)]
    later = grant("service", "company", Tier.HALF_HOUR, since=T0 + timedelta(minutes=10))
    starts = [r.start for r in run(rs, later, T0 + timedelta(hours=2))]
    assert starts == [T0 + timedelta(minutes=m) for m in (30, 60, 90)]
    assert run(rs, {}, T0 + timedelta(hours=2)) == []


def test_expiry_stops_releases_at_the_exact_instant() -> None:
    expires = T0 + timedelta(minutes=2)
    g = grant("support", "support_centre", Tier.MINUTE, expires=expires)
    rs = [reading("pv.power", 1.0, s) for s in range(0, 180, 10)]
    assert [r.end for r in run(rs, g, expires - timedelta(microseconds=1))] == [
        T0 + timedelta(minutes=1)]
    assert run(rs, g, expires) == []


def test_events_tier_releases_only_changes_of_states_and_events() -> None:
    rs = [reading("pv.power", 5.0, 0), reading("inverter.state", "mppt", 0),
          reading("inverter.state", "mppt", 70), reading("inverter.state", "fault", 130),
          reading("inverter.events", "", 0), reading("inverter.events", "ARC", 130),
          reading("inverter.events", "ARC", 190)]
    releases = run(rs, grant("support", "support_centre", Tier.EVENTS),
                   T0 + timedelta(minutes=5))
    assert [(r.start - T0, sorted(r.points)) for r in releases] == [
        (timedelta(0), ["inverter.state"]),
        (timedelta(minutes=2), ["inverter.events", "inverter.state"])]


def test_raw_tier_passes_allowed_good_readings_as_they_are() -> None:
    rs = [reading("pv.power", 1.5, 1), reading("pv.power", None, 2, quality=Quality.ERROR),
          reading("weather.temperature", 3.0, 3), reading("pv.power", 2.5, 61)]
    m = Minimiser(load_catalogue())
    g = grant("support", "support_centre", Tier.RAW, expires=T0 + timedelta(hours=72))
    assert m.flush(T0, g) == []  # learns that raw is wanted
    m.feed(rs)
    releases = m.flush(T0 + timedelta(minutes=1, seconds=30), g)
    assert len(releases) == 1 and releases[0].records[0].samples == (
        (T0 + timedelta(seconds=1), 1.5),)
    assert releases[0].records[0].bad == 1
    assert m.held()["raw_readings"][0]["value"] == 2.5  # the open minute stays held
    m.clear()
    assert m.held()["raw_readings"] == [] and m.held()["series"] == []


def test_late_and_unknown_readings_are_counted() -> None:
    m = Minimiser(load_catalogue())
    m.feed([reading("pv.power", 1.0, 120), reading("pv.power", 1.0, 10),
            reading("weather.temperature", 1.0, 0), reading("pv.power", "text", 130)])
    assert m.stats == {"fed": 4, "dropped": 1, "late": 1, "bad_value": 1, "not_collected": 0,
                       "repeated": 0}


def test_flush_needs_an_aware_time() -> None:
    from policy.errors import PolicyError
    with pytest.raises(PolicyError, match="aware"):
        Minimiser(load_catalogue()).flush(datetime(2026, 1, 1), {})
