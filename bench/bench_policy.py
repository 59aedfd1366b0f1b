"""Policy throughput: a day of 1-second readings from three devices (~20 points each).

Measures :meth:`Minimiser.feed` (readings per second) and :meth:`Minimiser.flush` (releases
per second) with the factory catalogue's default grants plus maintenance watch at 30 minutes.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.table import print_table
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.records import Grant

START = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)  # local midnight in Tokyo


@dataclass(frozen=True, slots=True)
class _Reading:
    device: str
    point: str
    kind: str
    value: float | str | None
    unit: str
    ts: datetime
    quality: str = "good"


_POINTS = {
    "inverter": [("pv.power", "power", "W"), ("pv.energy", "energy", "Wh"),
                 ("pv.dc_power", "power", "W"), ("pv.dc_voltage", "gauge", "V"),
                 ("pv.dc_current", "gauge", "A"), ("inverter.ac_voltage", "gauge", "V"),
                 ("inverter.ac_current", "gauge", "A"), ("inverter.frequency", "gauge", "Hz"),
                 ("inverter.power_factor", "gauge", "%"),
                 ("inverter.temperature", "gauge", "Cel"), ("inverter.state", "state", ""),
                 ("inverter.events", "event", "")]
    + [(f"pv.mppt.{n}.{q}", k, u) for n in (1, 2) for q, k, u in
       (("power", "power", "W"), ("voltage", "gauge", "V"), ("current", "gauge", "A"),
        ("energy", "energy", "Wh"))],
    "battery": [("battery.power", "power", "W"), ("battery.soc", "level", "%"),
                ("battery.soh", "level", "%"), ("battery.energy_charged", "energy", "Wh"),
                ("battery.energy_discharged", "energy", "Wh"),
                ("battery.energy_available", "level", "Wh"), ("battery.voltage", "gauge", "V"),
                ("battery.temperature", "gauge", "Cel"), ("battery.state", "state", ""),
                ("battery.events", "event", "")]
    + [(f"battery.cell.{n}.voltage", "gauge", "V") for n in range(10)],
    "meter": [("grid.power", "power", "W"), ("grid.energy_import", "energy", "Wh"),
              ("grid.energy_export", "energy", "Wh"), ("grid.voltage", "gauge", "V"),
              ("grid.frequency", "gauge", "Hz"), ("load.power", "power", "W"),
              ("load.energy", "energy", "Wh"), ("device.serial", "info", "")]
    + [(f"grid.phase.{n}.{q}", "gauge", u) for n in (1, 2, 3)
       for q, u in (("voltage", "V"), ("current", "A"), ("power", "W"), ("pf", "%"))],
}


def _hour(hour: int) -> list[_Reading]:
    out = []
    for second in range(hour * 3600, (hour + 1) * 3600):
        ts = START + timedelta(seconds=second)
        for device, points in _POINTS.items():
            for point, kind, unit in points:
                value: float | str = ("mppt" if kind == "state" else "" if kind == "event"
                                      else "SN-1" if kind == "info" else
                                      float(second) if kind == "energy" else 230.0 + second % 7)
                out.append(_Reading(device, point, kind, value, unit, ts))
    return out


@dataclass
class _Scenario:
    name: str
    minimiser: Minimiser
    grants: dict[tuple[str, str], Grant]
    feed_s: float = 0.0
    flush_s: float = 0.0
    releases: int = 0

    def run_hour(self, hour: int, batch: list[_Reading]) -> None:
        started = time.perf_counter()
        for i in range(0, len(batch), 3600):  # the agent feeds small batches
            self.minimiser.feed(batch[i:i + 3600])
        self.feed_s += time.perf_counter() - started
        for minute in range(1, 61, 5):  # and flushes every few minutes
            started = time.perf_counter()
            now = START + timedelta(hours=hour, minutes=minute)
            self.releases += len(self.minimiser.flush(now, self.grants))
            self.flush_s += time.perf_counter() - started


def _scenario(support_tier: str) -> _Scenario:
    catalogue = load_catalogue()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.open(Path(tmp) / "ledger.json", catalogue, "bench-site", START)
        ledger.set_grant("maintenance_watch", "installer", "30min", source="installer",
                         now=START)
        ledger.set_grant("support", "support_centre", support_tier, source="support_request",
                         expires=START + timedelta(days=2), now=START)
        grants = ledger.grants(START)
    minimiser = Minimiser(catalogue)
    minimiser.flush(START, grants)  # learns which tiers are wanted
    return _Scenario(name=f"support {support_tier}", minimiser=minimiser, grants=grants)


def main() -> None:
    scenarios = [_scenario("1min"), _scenario("raw")]
    readings = 0
    for hour in range(24):
        batch = _hour(hour)  # built outside the timed part
        readings += len(batch)
        for scenario in scenarios:
            scenario.run_hour(hour, batch)
    series = sum(len(p) for p in _POINTS.values())
    print_table(["scenario (defaults + maintenance 30min)", "readings", "series", "grants",
                 "feed readings/s", "releases", "flush releases/s", "total readings/s"],
                [[s.name, readings, series, len(s.grants), readings / s.feed_s, s.releases,
                  s.releases / s.flush_s, readings / (s.feed_s + s.flush_s)]
                 for s in scenarios])


if __name__ == "__main__":
    main()
