"""Per-series accumulators: one bucket per UTC minute, merged into windows at flush time.

Aggregation by point kind (DESIGN §5): power → mean (and max), energy counter → delta,
level → last, gauge → mean, state → last and number of changes, event → union, info → last.

Energy counters: the delta between consecutive good readings goes to the minute of the later
reading, also across gaps and window edges, so the sum of deltas over any run of windows equals
the sum of increments of the counter. A decrease is a reset (counter replaced or wrapped): it
contributes nothing, and later deltas count from the new value. A glitch that reads low once
is therefore indistinguishable from a reset; drivers should mark such readings bad.

Each bucket also keeps its *lead gap*: the delta of its first good counter reading and the
interval ``[lead_from, lead_to]`` it was measured over (the previous good counter reading to
this one). It is the only gap of a window that can begin before the window does, hence the only
one that can straddle the start of a grant; :mod:`policy.shape` releases the share of it that
falls after the grant's start, in proportion to time.
"""

from __future__ import annotations

from typing import Any

POWER, ENERGY, LEVEL, GAUGE, STATE, EVENT, INFO = range(7)
KIND_CODES = {"power": POWER, "energy": ENERGY, "level": LEVEL, "gauge": GAUGE, "state": STATE,
              "event": EVENT, "info": INFO}
NUMERIC = frozenset({POWER, ENERGY, LEVEL, GAUGE})


class Bucket:
    """What one series did in one minute (or, merged, in one window)."""

    __slots__ = ("bad", "changed", "changes", "cover", "delta", "good", "last", "lead",
                 "lead_from", "lead_to", "max", "minute", "sum", "union")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.good = 0
        self.bad = 0
        self.sum = 0.0
        self.max: float | None = None
        self.last: Any = None
        self.changes = 0
        self.changed = False  # events tier: the state or the set of active events changed
        self.union: set[str] | int | None = None
        self.delta = 0.0
        self.cover = 0.0  # Σ over minutes of good / (good + bad)
        self.lead = 0.0  # energy: delta of the first good counter reading (its gap) ...
        self.lead_from = 0.0  # ... measured from this instant (epoch s; the previous reading)
        self.lead_to = 0.0  # ... to this one (the first good counter reading itself)

    def close(self) -> None:
        total = self.good + self.bad
        self.cover = self.good / total if total else 0.0

    def merge(self, other: Bucket) -> None:
        """Fold a later minute into this window aggregate."""
        if not self.good and other.good:  # the window's first good reading: its lead gap
            self.lead, self.lead_from, self.lead_to = other.lead, other.lead_from, other.lead_to
        self.good += other.good
        self.bad += other.bad
        self.sum += other.sum
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max
        if other.good:
            self.last = other.last
        self.changes += other.changes
        self.changed = self.changed or other.changed
        self.union = union(self.union, other.union)
        self.delta += other.delta
        self.cover += other.cover


class Series:
    """State of one device × point across minutes."""

    __slots__ = ("bucket", "category", "closed", "device", "kind", "kind_name", "last_counter",
                 "last_state", "last_t", "last_union", "point", "unit")

    def __init__(self, device: str, point: str, kind_name: str, unit: str,
                 category: str | None) -> None:
        self.device, self.point, self.unit, self.category = device, point, unit, category
        self.kind_name = kind_name
        self.kind = KIND_CODES.get(kind_name, -1)
        self.bucket = Bucket(-1)
        self.closed: list[Bucket] = []
        self.last_counter: float | None = None
        self.last_t = 0.0  # epoch seconds of the reading that set last_counter
        self.last_state: Any = None
        self.last_union: set[str] | int | None = None

    def roll(self, minute: int) -> Bucket:
        """Close the current minute (if it saw anything) and open ``minute``."""
        old = self.bucket
        if old.good or old.bad:
            if self.kind == EVENT and old.good:
                prev = self.last_union
                old.changed = bool(old.union) if prev is None else old.union != prev
                self.last_union = old.union
            old.close()
            self.closed.append(old)
        self.bucket = Bucket(minute)
        return self.bucket


def union(a: set[str] | int | None, b: set[str] | int | None) -> set[str] | int | None:
    """Union of active event flags: sets of names, or integer bit masks."""
    if a is None:
        return b if not isinstance(b, set) else set(b)
    if b is None:
        return a
    if isinstance(a, int) and isinstance(b, int):
        return a | b
    return _as_set(a) | _as_set(b)


def _as_set(value: set[str] | int) -> set[str]:
    return value if isinstance(value, set) else {f"bit{i}" for i in range(value.bit_length())
                                                 if value >> i & 1}


def event_flags(value: float | str) -> set[str] | int:
    """Flags from an event reading: comma-separated names, or a numeric bit mask."""
    if isinstance(value, str):
        return {flag.strip() for flag in value.split(",") if flag.strip()}
    return int(value)
