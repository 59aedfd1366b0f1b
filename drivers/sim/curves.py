"""Plausible, seeded day curves for a Japanese detached home, and the energy integrator.

Pure and deterministic: PV and household load are functions of (config, instant); the battery
and the lifetime counters come from :class:`HomeModel`, which integrates fixed steps, so the
same seed, start and sequence of ``advance_to`` targets give the same numbers on every machine.

Sign conventions follow :mod:`drivers.points`: ``grid_w`` is positive when importing,
``battery_w`` is positive when discharging, and ``grid_w = load_w - pv_w - battery_w``.
Counters are Wh floats that only increase; for every step, power × dt / 3600 is exactly what
the matching counter gained.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone

JST = timezone(timedelta(hours=9), "JST")
_MASK64 = (1 << 64) - 1
# noise channels: independent streams from one seed
_CLOUD_DAY, _CLOUD_SLOW, _CLOUD_FAST, _LOAD_SLOW, _APPLIANCE, _HEAT_PUMP, _GAUGE = range(7)


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeConfig:
    """A home: a ~5 kW rooftop array on two strings, a 9.8 kWh battery, a 50 Hz supply."""

    seed: int = 1
    pv_peak_w: float = 4800.0  # AC at noon on a clear summer day
    inverter_rating_w: float = 5500.0
    inverter_efficiency: float = 0.965
    mppt_shares: tuple[float, ...] = (0.56, 0.44)  # south-east and south-west strings
    solar_noon_h: float = 11.7  # JST, around Tokyo's longitude
    base_load_w: float = 320.0  # fridge, standby, ventilation
    heat_pump_w: float = 1100.0  # night-time water heater (EcoCute), 01:00-04:00
    battery_capacity_wh: float = 9800.0
    battery_max_charge_w: float = 3000.0
    battery_max_discharge_w: float = 3000.0
    battery_efficiency: float = 0.95  # applied on charge
    battery_deadband_w: float = 60.0  # below this surplus the battery idles
    battery_tracking: float = 0.97  # share of the surplus the battery controller follows
    soc_min_pct: float = 10.0
    soc_max_pct: float = 95.0
    initial_soc_pct: float = 50.0
    mains_hz: float = 50.0
    step_s: float = 5.0  # integration step

    def __post_init__(self) -> None:
        checks = {
            "pv_peak_w": self.pv_peak_w >= 0,
            "inverter_efficiency": 0 < self.inverter_efficiency <= 1,
            "mppt_shares": bool(self.mppt_shares)
            and abs(sum(self.mppt_shares) - 1) < 1e-9
            and min(self.mppt_shares) > 0,
            "battery_capacity_wh": self.battery_capacity_wh > 0,
            "battery_efficiency": 0 < self.battery_efficiency <= 1,
            "battery_tracking": 0 <= self.battery_tracking <= 1,
            "soc_min_pct": 0 <= self.soc_min_pct < self.soc_max_pct,
            "soc_max_pct": self.soc_max_pct <= 100,
            "initial_soc_pct": self.soc_min_pct <= self.initial_soc_pct <= self.soc_max_pct,
            "step_s": self.step_s > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"HomeConfig: invalid value for {', '.join(bad)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The home at one instant. Powers are those that held during the step that ended at ``ts``."""

    ts: datetime
    pv_w: float
    pv_dc_w: float
    mppt_w: tuple[float, ...]
    mppt_v: tuple[float, ...]
    load_w: float
    battery_w: float
    grid_w: float
    soc_pct: float
    ac_voltage_v: float
    frequency_hz: float
    inverter_temp_c: float
    pv_wh: float
    mppt_wh: tuple[float, ...]
    load_wh: float
    grid_import_wh: float
    grid_export_wh: float
    battery_charged_wh: float
    battery_discharged_wh: float


def _noise(seed: int, channel: int, slot: int) -> float:
    """Uniform [0, 1) from (seed, channel, slot): splitmix64, so runs agree across machines."""
    x = (seed * 0x9E3779B97F4A7C15 + channel * 0xBF58476D1CE4E5B9 + slot * 0x94D049BB133111EB)
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) / 2.0**64


def _smooth(seed: int, channel: int, t: float, period: float) -> float:
    """Value noise in [0, 1), cosine-interpolated between knots ``period`` seconds apart."""
    slot, frac = divmod(t / period, 1.0)
    a, b = _noise(seed, channel, int(slot)), _noise(seed, channel, int(slot) + 1)
    w = (1 - math.cos(math.pi * frac)) / 2
    return a + (b - a) * w


def _local_hour(t: datetime) -> tuple[float, int]:
    local = t.astimezone(JST)
    hour = local.hour + local.minute / 60 + (local.second + local.microsecond / 1e6) / 3600
    return hour, local.timetuple().tm_yday


def _season(day_of_year: int) -> float:
    """+1 at the June solstice, -1 at the December solstice."""
    return math.sin(2 * math.pi * (day_of_year - 80) / 365.25)


def daylight(config: HomeConfig, t: datetime) -> tuple[float, float]:
    """Sunrise and sunset (JST hours) for the day of ``t``: ~9.6 h in December, ~14.4 h in June."""
    _, doy = _local_hour(t)
    length = 12.0 + 2.4 * _season(doy)
    return config.solar_noon_h - length / 2, config.solar_noon_h + length / 2


def cloud_factor(config: HomeConfig, t: datetime) -> float:
    """Share of clear-sky output that gets through, 0.05..1; some days are overcast."""
    epoch = t.timestamp()
    _, doy = _local_hour(t)
    cloudiness = math.pow(_noise(config.seed, _CLOUD_DAY, doy + 366 * t.astimezone(JST).year), 1.5)
    slow = _smooth(config.seed, _CLOUD_SLOW, epoch, 600.0)
    fast = _smooth(config.seed, _CLOUD_FAST, epoch, 45.0)
    factor = 1.0 - cloudiness * (0.75 * slow + 0.2 * fast)
    return min(1.0, max(0.05, factor))


def pv_power(config: HomeConfig, t: datetime) -> float:
    """AC output of the PV inverter in W: zero outside daylight, a bell with clouds inside."""
    hour, doy = _local_hour(t)
    sunrise, sunset = daylight(config, t)
    if not sunrise < hour < sunset:
        return 0.0
    bell = math.sin(math.pi * (hour - sunrise) / (sunset - sunrise)) ** 2
    peak = config.pv_peak_w * (0.8 + 0.2 * _season(doy))
    return min(config.inverter_rating_w, peak * bell * cloud_factor(config, t))


def _bump(hour: float, centre: float, width: float) -> float:
    """Gaussian bump on the 24 h circle (so an evening peak does not stop at midnight)."""
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return float(math.exp(-0.5 * (d / width) ** 2))


def load_power(config: HomeConfig, t: datetime) -> float:
    """Household consumption in W: base load, morning and evening peaks, appliances, heat pump."""
    hour, doy = _local_hour(t)
    epoch = t.timestamp()
    seed = config.seed
    base = config.base_load_w * (0.85 + 0.3 * _smooth(seed, _LOAD_SLOW, epoch, 300.0))
    peaks = 850 * _bump(hour, 7.0, 0.8) + 250 * _bump(hour, 12.3, 0.9) + 1500 * _bump(
        hour, 19.3, 1.5
    )
    slot = int(epoch // 180)  # a kettle, microwave or IH hob: a few minutes at a time
    appliance = 1200.0 if _noise(seed, _APPLIANCE, slot) > 0.93 and 6 <= hour < 23 else 0.0
    heat_pump = 0.0
    if 1.0 <= hour < 4.0 and _noise(seed, _HEAT_PUMP, doy) < 0.8:
        heat_pump = config.heat_pump_w
    return base + peaks + appliance + heat_pump


def battery_dispatch(config: HomeConfig, surplus_w: float, soc_pct: float, dt: float) -> float:
    """Battery power (positive discharging) following ``surplus_w`` within SoC and rate limits."""
    if abs(surplus_w) < config.battery_deadband_w or dt <= 0:
        return 0.0
    surplus_w *= config.battery_tracking  # a real controller lags: a little grid flow remains
    hours = dt / 3600.0
    cap = config.battery_capacity_wh
    if surplus_w > 0:
        room_wh = max(0.0, (config.soc_max_pct - soc_pct) / 100.0 * cap)
        limit = room_wh / config.battery_efficiency / hours
        charge = min(surplus_w, config.battery_max_charge_w, limit)
        return -charge if charge > 0 else 0.0
    avail_wh = max(0.0, (soc_pct - config.soc_min_pct) / 100.0 * cap)
    return min(-surplus_w, config.battery_max_discharge_w, avail_wh / hours)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Counters:
    pv_wh: float
    mppt_wh: tuple[float, ...]
    load_wh: float
    grid_import_wh: float
    grid_export_wh: float
    battery_charged_wh: float
    battery_discharged_wh: float


def _initial_counters(config: HomeConfig) -> _Counters:
    """Lifetime counters of a system that has run a few years (seeded, so they differ by home)."""
    years = 2.0 + 3.0 * _noise(config.seed, _GAUGE, -1)
    pv = round(years * 5600e3)
    mppt = tuple(round(pv / config.inverter_efficiency * share) for share in config.mppt_shares)
    return _Counters(
        pv_wh=float(pv), mppt_wh=tuple(float(m) for m in mppt), load_wh=round(years * 4900e3),
        grid_import_wh=round(years * 2100e3), grid_export_wh=round(years * 2300e3),
        battery_charged_wh=round(years * 1500e3), battery_discharged_wh=round(years * 1400e3),
    )


class HomeModel:
    """Integrates the home forward in time; state is the SoC and the lifetime counters."""

    def __init__(self, config: HomeConfig, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("HomeModel: start must be timezone-aware")
        self.config = config
        self._counters = _initial_counters(config)
        self._soc = config.initial_soc_pct
        self._snapshot = self._make_snapshot(start.astimezone(UTC), 0.0, self._counters)

    @property
    def snapshot(self) -> Snapshot:
        """The home as of the last step (or the start)."""
        return self._snapshot

    def advance_to(self, t: datetime) -> Snapshot:
        """Step forward to ``t`` in steps of at most ``config.step_s``; time never goes back."""
        remaining = (t - self._snapshot.ts).total_seconds()
        while remaining > 1e-6:
            dt = min(self.config.step_s, remaining)
            self.step(dt)
            remaining -= dt
        return self._snapshot

    def step(self, dt: float) -> Snapshot:
        """One integration step of ``dt`` seconds; powers are evaluated at the step's start."""
        if dt <= 0:
            raise ValueError(f"step: dt must be positive, got {dt}")
        snap = self._make_snapshot(self._snapshot.ts, dt, self._counters)
        c, cfg, hours = self._counters, self.config, dt / 3600.0
        charge, discharge = max(0.0, -snap.battery_w), max(0.0, snap.battery_w)
        self._counters = replace(
            c,
            pv_wh=c.pv_wh + snap.pv_w * hours,
            mppt_wh=tuple(e + w * hours for e, w in zip(c.mppt_wh, snap.mppt_w, strict=True)),
            load_wh=c.load_wh + snap.load_w * hours,
            grid_import_wh=c.grid_import_wh + max(0.0, snap.grid_w) * hours,
            grid_export_wh=c.grid_export_wh + max(0.0, -snap.grid_w) * hours,
            battery_charged_wh=c.battery_charged_wh + charge * hours,
            battery_discharged_wh=c.battery_discharged_wh + discharge * hours,
        )
        delta_pct = (charge * cfg.battery_efficiency - discharge) * hours / cfg.battery_capacity_wh
        soc = self._soc + 100.0 * delta_pct
        self._soc = min(cfg.soc_max_pct, max(cfg.soc_min_pct, soc))  # float rounding only
        ts = snap.ts + timedelta(seconds=dt)
        self._snapshot = _with_counters(replace(snap, ts=ts, soc_pct=self._soc), self._counters)
        return self._snapshot

    def _make_snapshot(self, ts: datetime, dt: float, counters: _Counters) -> Snapshot:
        cfg = self.config
        pv = pv_power(cfg, ts)
        load = load_power(cfg, ts)
        battery = battery_dispatch(cfg, pv - load, self._soc, dt)
        dc = pv / cfg.inverter_efficiency
        mppt_w = tuple(dc * share for share in cfg.mppt_shares)
        wobble = _smooth(cfg.seed, _GAUGE, ts.timestamp(), 30.0) - 0.5
        mppt_v = tuple(0.0 if w <= 0 else 285.0 + 35.0 * (i % 2) + 8.0 * wobble
                       for i, w in enumerate(mppt_w))
        snap = Snapshot(
            ts=ts, pv_w=pv, pv_dc_w=dc, mppt_w=mppt_w, mppt_v=mppt_v, load_w=load,
            battery_w=battery, grid_w=load - pv - battery, soc_pct=self._soc,
            ac_voltage_v=101.0 + 2.0 * wobble + 1.5 * pv / max(cfg.pv_peak_w, 1.0),
            frequency_hz=cfg.mains_hz + 0.06 * wobble,
            inverter_temp_c=24.0 + 22.0 * pv / max(cfg.inverter_rating_w, 1.0),
            pv_wh=0.0, mppt_wh=(), load_wh=0.0, grid_import_wh=0.0, grid_export_wh=0.0,
            battery_charged_wh=0.0, battery_discharged_wh=0.0,
        )
        return _with_counters(snap, counters)


def _with_counters(snap: Snapshot, c: _Counters) -> Snapshot:
    return replace(
        snap, pv_wh=c.pv_wh, mppt_wh=c.mppt_wh, load_wh=c.load_wh,
        grid_import_wh=c.grid_import_wh, grid_export_wh=c.grid_export_wh,
        battery_charged_wh=c.battery_charged_wh, battery_discharged_wh=c.battery_discharged_wh,
    )


class SimClock:
    """Simulated time: starts at ``start`` and runs ``speed`` times faster than ``wall``.

    ``wall`` is a monotonic seconds source (``time.monotonic`` by default), injectable so the
    clock is deterministic under test. Changing the speed does not make time jump.
    """

    def __init__(
        self, start: datetime, speed: float = 1.0, *, wall: Callable[[], float] = time.monotonic
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("SimClock: start must be timezone-aware")
        _check_speed(speed)
        self._wall = wall
        self._origin_sim = start.astimezone(UTC)
        self._origin_wall = wall()
        self._speed = speed

    @property
    def speed(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self._speed

    def set_speed(self, speed: float) -> None:
        """Change the acceleration from now on."""
        _check_speed(speed)
        self._origin_sim = self.now()
        self._origin_wall = self._wall()
        self._speed = speed

    def now(self) -> datetime:
        """The current simulated instant (UTC)."""
        elapsed = (self._wall() - self._origin_wall) * self._speed
        return self._origin_sim + timedelta(seconds=elapsed)


def _check_speed(speed: float) -> None:
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive number, got {speed!r}")
