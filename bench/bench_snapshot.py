"""Minimiser snapshot cost: size and time to save and restore the state of 10 devices.

The agent saves the snapshot every 60 s of its time and at a clean stop, and restores it once
at start (``agent/store/snapshots.py``). Measured at the costliest moment of a half hour: 29 of its
minutes folded into the open windows, every series mid-minute. 10 devices (4 inverters,
3 batteries, 3 meters of ``bench_policy``'s ~20 points each), 1-second readings, the default
grants plus maintenance watch at 30 minutes and support at 1 minute or raw (raw holds the open
minute's readings themselves).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from agent.wire.keys import write_file_atomic
from bench.bench_policy import _POINTS, START, _Reading
from bench.table import print_table
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.records import Grant

SITE = "bench-site"
DEVICES = {"inverter": 4, "battery": 3, "meter": 3}
SECONDS = 29 * 60 + 30  # up to the middle of the half hour's last minute
ROUNDS = 20


def _readings() -> list[_Reading]:
    out = []
    for second in range(SECONDS):
        ts = START + timedelta(seconds=second)
        for family, count in DEVICES.items():
            for n in range(count):
                for point, kind, unit in _POINTS[family]:
                    value: float | str = ("mppt" if kind == "state" else "" if kind == "event"
                                          else "SN-1" if kind == "info" else
                                          float(second) if kind == "energy"
                                          else 230.0 + second % 7)
                    out.append(_Reading(f"{family}-{n}", point, kind, value, unit, ts))
    return out


def _grants(support_tier: str) -> dict[tuple[str, str], Grant]:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.open(Path(tmp) / "ledger.json", load_catalogue(), SITE, START)
        ledger.set_grant("maintenance_watch", "installer", "30min", source="installer",
                         now=START)
        ledger.set_grant("support", "support_centre", support_tier, source="support_request",
                         expires=START + timedelta(days=2), now=START)
        return ledger.grants(START)


def _measure(support_tier: str, readings: list[_Reading], directory: Path) -> list[object]:
    grants = _grants(support_tier)
    minimiser = Minimiser(load_catalogue())
    minimiser.flush(START, grants)
    for i in range(0, len(readings), 3600):
        minimiser.feed(readings[i:i + 3600])
    now = START + timedelta(seconds=SECONDS)
    minimiser.flush(now, grants)
    path = directory / "minimiser-state.json"
    build, encode, write, restore = [], [], [], []
    data = b""
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        snapshot = minimiser.snapshot(site=SITE, taken=now)
        t1 = time.perf_counter()
        data = json.dumps(snapshot, separators=(",", ":")).encode()
        t2 = time.perf_counter()
        write_file_atomic(path, data, mode=0o600)
        t3 = time.perf_counter()
        Minimiser(load_catalogue()).restore(json.loads(path.read_bytes()), site=SITE, now=now)
        t4 = time.perf_counter()
        build.append(t1 - t0)
        encode.append(t2 - t1)
        write.append(t3 - t2)
        restore.append(t4 - t3)
    held = minimiser.held()
    windows = sum(len(w) for w in held["open_windows"].values())
    ms = [statistics.median(x) * 1000 for x in (build, encode, write)]
    return [f"support {support_tier}", len(held["series"]), windows,
            len(held["raw_readings"]), len(data), *ms, sum(ms),
            statistics.median(restore) * 1000]


def main() -> None:
    readings = _readings()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_measure(tier, readings, Path(tmp)) for tier in ("1min", "raw")]
    print_table(["10 devices, defaults + maintenance 30min", "series", "open windows",
                 "raw readings", "bytes", "snapshot ms", "JSON ms", "write+fsync ms",
                 "save ms", "read+restore ms"], rows)


if __name__ == "__main__":
    main()
