"""Day curves and the energy integrator of the simulated home."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sim.curves import (
    JST,
    HomeConfig,
    HomeModel,
    SimClock,
    Snapshot,
    battery_dispatch,
    load_power,
    pv_power,
)

seeds = st.integers(min_value=0, max_value=2**31)
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(JST)
)
steps = st.lists(st.floats(min_value=0.5, max_value=600.0), min_size=1, max_size=60)
COUNTERS = ("pv_wh", "load_wh", "grid_import_wh", "grid_export_wh", "battery_charged_wh",
            "battery_discharged_wh")


def _run(seed: int, start: datetime, dts: list[float]) -> tuple[Snapshot, list[Snapshot]]:
    model = HomeModel(HomeConfig(seed=seed), start)
    first = model.snapshot
    return first, [model.step(dt) for dt in dts]


@settings(max_examples=60, deadline=None)
@given(seed=seeds, start=instants, dts=steps)
def test_counters_never_decrease(seed: int, start: datetime, dts: list[float]) -> None:
    first, snaps = _run(seed, start, dts)
    for before, after in zip([first, *snaps], snaps, strict=False):
        for name in COUNTERS:
            assert getattr(after, name) >= getattr(before, name), name
        assert all(a >= b for a, b in zip(after.mppt_wh, before.mppt_wh, strict=True))


@settings(max_examples=60, deadline=None)
@given(seed=seeds, start=instants, dts=steps)
def test_integrated_power_equals_counter_difference(
    seed: int, start: datetime, dts: list[float]
) -> None:
    first, snaps = _run(seed, start, dts)
    sums = dict.fromkeys(COUNTERS, 0.0)
    for dt, s in zip(dts, snaps, strict=True):
        hours = dt / 3600
        sums["pv_wh"] += s.pv_w * hours
        sums["load_wh"] += s.load_w * hours
        sums["grid_import_wh"] += max(0.0, s.grid_w) * hours
        sums["grid_export_wh"] += max(0.0, -s.grid_w) * hours
        sums["battery_charged_wh"] += max(0.0, -s.battery_w) * hours
        sums["battery_discharged_wh"] += max(0.0, s.battery_w) * hours
    last = snaps[-1]
    for name, total in sums.items():
        assert getattr(last, name) - getattr(first, name) == pytest.approx(total, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, start=instants, dts=steps)
def test_power_balance_and_soc_limits(seed: int, start: datetime, dts: list[float]) -> None:
    config = HomeConfig(seed=seed)
    _, snaps = _run(seed, start, dts)
    for s in snaps:
        assert s.grid_w == pytest.approx(s.load_w - s.pv_w - s.battery_w)
        assert config.soc_min_pct <= s.soc_pct <= config.soc_max_pct
        assert -config.battery_max_charge_w <= s.battery_w <= config.battery_max_discharge_w
        assert s.pv_w >= 0 and s.load_w > 0
        assert sum(s.mppt_w) == pytest.approx(s.pv_dc_w)


@settings(max_examples=200, deadline=None)
@given(seed=seeds, day=instants, hour=st.one_of(st.floats(0.0, 4.0), st.floats(19.5, 23.99)))
def test_no_pv_at_night(seed: int, day: datetime, hour: float) -> None:
    night = day.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=hour)
    assert pv_power(HomeConfig(seed=seed), night) == 0.0


@settings(max_examples=100, deadline=None)
@given(seed=seeds, day=instants)
def test_pv_produces_around_noon(seed: int, day: datetime) -> None:
    noon = day.replace(hour=11, minute=40, second=0, microsecond=0)
    config = HomeConfig(seed=seed)
    assert 0.0 < pv_power(config, noon) <= config.inverter_rating_w


def test_evening_load_exceeds_small_hours_load() -> None:
    config = HomeConfig(seed=7, heat_pump_w=0.0)
    day = datetime(2026, 3, 2, tzinfo=JST)
    minutes = range(0, 60, 5)
    evening = sum(load_power(config, day + timedelta(hours=19, minutes=m)) for m in minutes)
    night = sum(load_power(config, day + timedelta(hours=3, minutes=m)) for m in minutes)
    assert evening > 2 * night


def test_battery_follows_surplus_within_limits() -> None:
    config = HomeConfig(battery_tracking=1.0)
    assert battery_dispatch(config, 1500.0, 50.0, 5.0) == -1500.0  # charge the surplus
    assert battery_dispatch(config, -800.0, 50.0, 5.0) == 800.0  # cover the deficit
    lagging = HomeConfig(battery_tracking=0.9)
    assert battery_dispatch(lagging, 1000.0, 50.0, 5.0) == pytest.approx(-900.0)
    assert battery_dispatch(config, 9000.0, 50.0, 5.0) == -config.battery_max_charge_w
    assert battery_dispatch(config, 1500.0, config.soc_max_pct, 5.0) == 0.0  # full
    assert battery_dispatch(config, -800.0, config.soc_min_pct, 5.0) == 0.0  # empty
    assert battery_dispatch(config, 30.0, 50.0, 5.0) == 0.0  # inside the deadband


def test_same_seed_same_day_and_different_seed_different_day() -> None:
    start = datetime(2026, 5, 10, 6, tzinfo=JST)
    def day(seed: int) -> list[tuple[float, float, float]]:
        model = HomeModel(HomeConfig(seed=seed), start)
        return [(s.pv_w, s.load_w, s.soc_pct)
                for s in (model.advance_to(start + timedelta(minutes=30 * i)) for i in range(24))]
    assert day(3) == day(3)
    assert day(3) != day(4)


def test_advance_to_never_goes_back_and_lands_exactly() -> None:
    start = datetime(2026, 8, 1, 9, tzinfo=UTC)
    model = HomeModel(HomeConfig(), start)
    target = start + timedelta(seconds=123.5)
    assert model.advance_to(target).ts == target
    assert model.advance_to(start).ts == target


def test_clock_accelerates_from_any_start_and_speed_changes_do_not_jump() -> None:
    wall = [100.0]
    start = datetime(2026, 1, 15, 23, 30, tzinfo=JST)
    clock = SimClock(start, speed=60, wall=lambda: wall[0])
    assert clock.now() == start
    wall[0] += 10  # ten wall seconds at speed 60: ten simulated minutes
    assert clock.now() == start + timedelta(minutes=10)
    clock.set_speed(3600)
    assert clock.now() == start + timedelta(minutes=10)
    wall[0] += 1
    assert clock.now() == start + timedelta(minutes=70)
    assert clock.speed == 3600


@pytest.mark.parametrize("speed", [0, -1, math.inf, math.nan])
def test_clock_rejects_bad_speed(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        SimClock(datetime(2026, 1, 1, tzinfo=UTC), speed=speed)


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        HomeModel(HomeConfig(), datetime(2026, 1, 1))


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="initial_soc_pct"):
        HomeConfig(initial_soc_pct=99.0)
    with pytest.raises(ValueError, match="mppt_shares"):
        HomeConfig(mppt_shares=(0.5, 0.6))
