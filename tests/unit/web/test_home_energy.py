"""わが家のエネルギー's store: 5-minute means of today in Japan time, derived consumption,
bounded memory, and readings it must not take."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.web.energy import BUCKETS, MAX_DEVICES, HomeEnergy
from drivers.models import PointKind, Quality, Reading

# 2026-11-26 00:00 Japan time
MIDNIGHT = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def _r(point: str, value: float | str | None, at: datetime, *, device: str = "inv",
       quality: Quality = Quality.GOOD) -> Reading:
    return Reading(device=device, point=point, kind=PointKind.POWER, value=value, unit="W",
                   ts=at, quality=quality)


def test_means_per_five_minutes_and_the_day_s_energy() -> None:
    energy = HomeEnergy()
    noon = MIDNIGHT + timedelta(hours=12)
    # One hour of 2 kW solar, read every minute, and a 1 kW load.
    energy.feed(_r("pv.power", 2000.0, noon + timedelta(minutes=m)) for m in range(60))
    energy.feed(_r("load.power", 1000.0, noon + timedelta(minutes=m)) for m in range(60))
    today = energy.today(noon + timedelta(hours=1))
    assert today.pv[144:156] == (2000.0,) * 12 and today.pv[143] is None
    assert round(today.kwh(today.pv), 3) == 2.0
    assert round(today.kwh(today.load), 3) == 1.0
    now = energy.now(noon + timedelta(minutes=61))
    assert now.pv == 2000.0 and now.load == 1000.0


def test_consumption_is_derived_from_grid_solar_and_battery_without_a_load_meter() -> None:
    energy = HomeEnergy()
    at = MIDNIGHT + timedelta(hours=9)
    energy.feed([_r("grid.power", -500.0, at), _r("pv.power", 3000.0, at),
                 _r("battery.power", -1000.0, at)])  # selling 0.5 kW, charging 1 kW
    assert energy.now(at).load == 1500.0
    today = energy.today(at)
    assert today.load[108] == 1500.0
    assert round(today.kwh(today.battery, sign=-1), 4) == round(1000 * 5 / 60 / 1000, 4)
    assert today.kwh(today.battery) == 0.0


def test_a_new_day_starts_empty_and_old_readings_are_ignored() -> None:
    energy = HomeEnergy()
    energy.feed([_r("pv.power", 1000.0, MIDNIGHT - timedelta(minutes=10))])  # yesterday
    energy.feed([_r("pv.power", 500.0, MIDNIGHT + timedelta(minutes=1))])
    energy.feed([_r("pv.power", 9999.0, MIDNIGHT - timedelta(minutes=20))])  # late, old
    today = energy.today(MIDNIGHT + timedelta(minutes=2))
    assert today.pv[0] == 500.0 and [v for v in today.pv if v is not None] == [500.0]
    tomorrow = energy.today(MIDNIGHT + timedelta(days=1, minutes=1))
    assert all(v is None for v in tomorrow.pv)


def test_what_it_does_not_take() -> None:
    energy = HomeEnergy()
    at = MIDNIGHT + timedelta(hours=1)
    energy.feed([_r("pv.power", None, at, quality=Quality.ERROR),
                 _r("pv.power", float("nan"), at), _r("pv.power", "on", at),
                 _r("pv.power", 800.0, at, quality=Quality.STALE),
                 _r("device.serial", 1.0, at), _r("grid.energy_import", 1e6, at)])
    assert all(v is None for v in energy.today(at).pv)
    assert energy.now(at).pv is None and energy.now(at).grid is None


def test_memory_is_bounded_whatever_the_devices() -> None:
    energy = HomeEnergy()
    at = MIDNIGHT + timedelta(hours=1)
    energy.feed(_r("pv.power", 100.0, at, device=f"inv{i}") for i in range(50))
    assert energy.now(at).pv == 100.0 * MAX_DEVICES
    assert energy.footprint() == MAX_DEVICES * (2 * BUCKETS + 1)
    energy.feed(_r(p, 1.0, at, device=f"d{i}") for i in range(50)
                for p in ("load.power", "grid.power", "battery.power", "battery.soc"))
    assert energy.footprint() == 5 * MAX_DEVICES * (2 * BUCKETS + 1)  # the bound


def test_a_stale_value_is_not_shown_as_now() -> None:
    energy = HomeEnergy()
    at = MIDNIGHT + timedelta(hours=1)
    energy.feed([_r("battery.soc", 55.0, at)])
    assert energy.now(at + timedelta(minutes=15)).soc == 55.0
    assert energy.now(at + timedelta(minutes=16)).soc is None
