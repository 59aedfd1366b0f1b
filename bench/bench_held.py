"""The household page's held release values: memory for the 200 releases it keeps, and the time
to keep one and to open one.

A release as the page holds it: one service window of ten inverters, 17 points each (170
records with mean, min and max), as `policy.shape` builds them. Baseline in the same process:
the records held as objects, as the page did before (`agent/web/held.py` now keeps them
pickled and compressed). Memory is what tracemalloc counts as still allocated once the 200
releases are held.
"""

from __future__ import annotations

import random
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Protocol

from agent.web.held import MAX_RELEASES, HeldValues
from bench.table import print_table
from policy.release import Record, Release
from policy.tiers import Tier

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
POINTS = ("pv.power", "pv.energy", "ac.power", "ac.voltage.a", "ac.voltage.b", "ac.current.a",
          "ac.current.b", "ac.frequency", "ac.power_factor", "dc.power", "dc.voltage",
          "dc.current", "inverter.temperature", "inverter.state", "ac.reactive_power",
          "ac.apparent_power", "inverter.events")


def release(n: int, rng: random.Random) -> Release:
    records = tuple(
        Record(device=f"inverter-{d}", point=p, kind="power", unit="W",
               values={"mean": rng.uniform(0, 5000), "min": rng.uniform(0, 100),
                       "max": rng.uniform(5000, 6000)}, coverage=1.0, good=1800, bad=0)
        for d in range(10) for p in POINTS)
    start = T0 + timedelta(minutes=30 * n)
    return Release(purpose="service", recipient="company", tier=Tier("30min"), start=start,
                   end=start + timedelta(minutes=30), records=records, missing=(),
                   consent_record_id="r", consent_record_hash="h", catalogue_version="1")


class _Store(Protocol):
    def keep(self, seq: int, release: Release) -> None: ...
    def get(self, seq: int | None) -> tuple[Record, ...] | None: ...


class AsObjects:
    """The records themselves, by seq (the baseline)."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[Record, ...]] = {}

    def keep(self, seq: int, release: Release) -> None:
        self._held[seq] = release.records

    def get(self, seq: int | None) -> tuple[Record, ...] | None:
        return None if seq is None else self._held.get(seq)


def _measure(store: _Store) -> tuple[float, float, float]:
    rng = random.Random(1)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = []
    for seq in range(MAX_RELEASES):
        r = release(seq, rng)
        started = time.perf_counter()
        store.keep(seq, r)
        keep.append(time.perf_counter() - started)
        del r
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    opened = []
    for seq in range(0, MAX_RELEASES, 10):
        started = time.perf_counter()
        store.get(seq)
        opened.append(time.perf_counter() - started)
    return held / 1e6, statistics.median(keep) * 1e3, statistics.median(opened) * 1e3


def main() -> None:
    rows: list[list[object]] = []
    base = _measure(AsObjects())
    ours = _measure(HeldValues())
    for name, (mb, keep_ms, open_ms) in (("records as objects (before)", base),
                                         ("pickled + zlib level 1 (HeldValues)", ours)):
        rows.append([name, MAX_RELEASES, round(mb, 2), round(keep_ms, 3), round(open_ms, 3)])
    print_table(["held as", "releases", "memory MB", "keep ms (median)", "open ms (median)"],
                rows)
    print(f"\nmemory, objects / held: {base[0] / ours[0]:.1f}x")


if __name__ == "__main__":
    main()
