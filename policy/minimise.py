"""Minimisation: readings in, releases out — only allowed points, only at the granted tier.

:class:`Minimiser` is pure and synchronous. :meth:`Minimiser.feed` does the per-reading work
(one dict lookup, one integer minute, a few additions into the series' current minute bucket);
everything per window happens in :meth:`Minimiser.flush`, which folds closed minutes into the
windows of the tiers granted *at that moment*, closes the windows that have ended, and builds a
:class:`~policy.release.Release` per grant. A window is released to a grant only if it started
at or after the grant took effect and the grant is still in force at flush time, so revocation
and expiry take effect at once and data from before a grant is never released under it; an
energy gap that began before the grant counts only for its share of time after it
(:func:`policy.shape.consented_delta`).

At most once per window: a flush at ``now`` closes every minute before ``now``'s minute for
good (the *cut*), so a reading stamped before it is late (dropped and counted) and cannot reopen
a window already released; and each (purpose, recipient) keeps the end of the last window
released to it (its *mark*), below which nothing is released to it again. Both are in the
snapshot, so they hold across a restart. Points of categories the gateway never collects are
refused whatever the catalogue says (:mod:`policy.collected`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from policy.aggregate import (
    ENERGY,
    EVENT,
    INFO,
    LEVEL,
    NUMERIC,
    STATE,
    Bucket,
    Series,
    event_flags,
    union,
)
from policy.catalogue import Catalogue
from policy.collected import collected_category
from policy.errors import PolicyError
from policy.minimise_state import Held, dump, load
from policy.records import Grant
from policy.release import Record, Release
from policy.shape import Carry, raw_record, record
from policy.tiers import Tier, rank
from policy.windows import Windows, to_datetime

log = logging.getLogger(__name__)
_EVENT_KINDS = frozenset({STATE, EVENT})
_OK, _BAD, _LATE = 0, 1, 2


class ReadingLike(Protocol):
    """The shape of ``drivers.models.Reading`` that policy consumes (policy never imports it)."""

    @property
    def device(self) -> str: ...
    @property
    def point(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def value(self) -> float | str | None: ...
    @property
    def unit(self) -> str: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def quality(self) -> str: ...


class Minimiser:
    """Per-purpose allow-lists, aligned aggregation windows and rounding.

    ``tz`` aligns half hours, days and months to local time. Feed readings in time order per
    series; a reading for a minute already closed (by a flush, or by a later reading of its
    series) is dropped and counted as ``late``, and so is an energy reading older than the
    last counter reading of its series. An energy counter keeps its last value in time, so
    what a late reading saw is counted by the next reading, in the window that is then open.
    """

    def __init__(self, catalogue: Catalogue, tz: str = "Asia/Tokyo") -> None:
        self._catalogue = catalogue
        self._tz = tz
        self._windows = Windows(tz)
        self._tiers: frozenset[Tier] = frozenset()
        self._series: dict[tuple[str, str], Series] = {}
        self._open: dict[Tier, dict[int, tuple[int, dict[tuple[str, str], Bucket]]]] = {}
        self._raw: list[ReadingLike] = []
        self._keep_raw = False
        self._carry: Carry = {}
        self._allowed: dict[tuple[str, tuple[str, str]], bool] = {}
        self._never: set[tuple[str, str]] = set()  # series refused as never collected
        self._cut = -1  # minutes before this one are closed (set by flush, never decreases)
        self._released: dict[tuple[str, str], int] = {}  # (purpose, recipient) -> last end
        self.stats: dict[str, int] = {"fed": 0, "dropped": 0, "late": 0, "bad_value": 0,
                                      "not_collected": 0, "repeated": 0}
        self.on_clear: Callable[[], None] | None = None
        """Called by :meth:`clear` (the agent deletes its saved snapshot there)."""

    def set_catalogue(self, catalogue: Catalogue) -> None:
        """Switch to a new catalogue version (allow-lists are re-derived)."""
        self._catalogue = catalogue
        self._allowed.clear()
        self._never.clear()
        for key, s in self._series.items():
            s.category, never = collected_category(catalogue, s.point)
            if never:
                self._never.add(key)
            if s.kind < 0:
                s.category = None

    def feed(self, readings: Iterable[ReadingLike]) -> None:
        """Add readings. Points no category allows, or never collected, are dropped here
        (counted); so are late readings."""
        series = self._series
        raw = self._raw if self._keep_raw else None
        fed = dropped = late = bad_value = never = 0
        for r in readings:
            fed += 1
            s = series.get((r.device, r.point))
            if s is None:
                s = self._add(r)
            if s.category is None:
                dropped += 1
                if (r.device, r.point) in self._never:
                    never += 1
                continue
            t = r.ts.timestamp()
            minute = int(t) // 60
            b = s.bucket
            if minute != b.minute:
                if minute < b.minute:
                    late += 1
                    continue
                b = s.roll(minute)
            v = r.value
            if v is None or r.quality != "good":
                b.bad += 1
            else:
                outcome = _add_value(s, b, v, t)
                if outcome:
                    if outcome == _LATE:
                        late += 1
                        continue
                    b.bad += 1
                    bad_value += 1
            if raw is not None:
                raw.append(r)
        stats = self.stats
        stats["fed"] += fed
        stats["dropped"] += dropped
        stats["late"] += late
        stats["bad_value"] += bad_value
        stats["not_collected"] += never

    def flush(self, now: datetime, grants: Mapping[Any, Grant]) -> list[Release]:
        """Close every window that ended at or before ``now`` and release it to the grants
        (normally ``ledger.grants(now)``) whose tier it is."""
        if now.tzinfo is None:
            raise PolicyError("flush needs an aware UTC time")
        now_s = int(now.timestamp())
        self._cut = max(self._cut, now_s // 60)
        active = [g for g in grants.values() if self._usable(g, now)]
        tiers = {g.tier for g in active}
        self._tiers = frozenset(tiers)
        self._keep_raw = Tier.RAW in tiers
        for tier in [t for t in self._open if t not in tiers]:
            del self._open[tier]  # nobody may receive it any more: forget the partial windows
        self._fold(tiers - {Tier.RAW})
        releases: list[Release] = []
        for tier, wins in self._open.items():
            for start in sorted(s for s, (end, _) in wins.items() if end <= now_s):
                end, data = wins.pop(start)
                for g in active:
                    if g.tier == tier:
                        releases.extend(self._release(g, start, end, data))
        releases.extend(self._flush_raw(now_s, [g for g in active if g.tier is Tier.RAW]))
        releases.sort(key=lambda r: (r.end, r.purpose, r.recipient))
        return releases

    def clear(self) -> None:
        """Forget everything held (deletion of the household's local data).

        The cut and the released-window marks stay: they hold no household data, and a
        window released before the erasure must not be released again after it."""
        self._series.clear()
        self._open.clear()
        self._raw.clear()
        self._carry.clear()
        self.stats = dict.fromkeys(self.stats, 0)
        if self.on_clear is not None:
            self.on_clear()

    def snapshot(self, *, site: str, taken: datetime) -> dict[str, Any]:
        """Everything held, JSON-able, for :meth:`restore` after a restart (no I/O here).

        Call it after :meth:`flush`, with ``taken`` the flush's ``now``: windows that ended
        are then already released, and what is saved is what is still open."""
        held = Held(series=self._series, open=self._open, raw=self._raw,
                    keep_raw=self._keep_raw, carry=self._carry, tiers=self._tiers,
                    stats=self.stats, cut=self._cut, released=self._released)
        return dump(held, site=site, catalogue=self._catalogue, tz=self._tz, taken=taken)

    def restore(self, snapshot: Any, *, site: str, now: datetime) -> None:
        """Take over what a snapshot holds; raises ``SnapshotError`` (nothing changed) when
        it is for another site, catalogue or zone, newer, stale or damaged.

        Only into a minimiser that was fed nothing yet. Windows that ended meanwhile are
        released by the next :meth:`flush` with the coverage they have; an energy counter
        continues from its saved value, so the increment across the restart is counted in
        the minute of the first reading after it (as for any gap); a decrease is a reset.
        The cut and the released-window marks come back too, so a window released before the
        restart is not released again after it."""
        if self._series or self._raw:
            raise PolicyError("restore needs a minimiser that was fed nothing yet")
        held = load(snapshot, site=site, catalogue=self._catalogue, tz=self._tz, now=now,
                    stats=tuple(self.stats))
        self._series, self._open, self._raw = held.series, held.open, held.raw
        self._keep_raw, self._carry, self._tiers = held.keep_raw, held.carry, held.tiers
        self.stats = held.stats
        self._cut = max(self._cut, held.cut)
        for key, end in held.released.items():
            self._released[key] = max(end, self._released.get(key, end))
        self._never = {key for key, s in held.series.items()
                       if collected_category(self._catalogue, s.point)[1]}
        self._allowed.clear()

    def holds_nothing(self) -> bool:
        """True before the first reading (and after :meth:`clear`)."""
        return not self._series and not self._raw

    def held(self) -> dict[str, Any]:
        """What the minimiser holds right now, JSON-able (for disclosure)."""
        return {
            "series": sorted([s.device, s.point] for s in self._series.values()
                             if s.category is not None),
            "open_windows": {t.value: sorted(to_datetime(s).isoformat() for s in w)
                             for t, w in self._open.items()},
            "raw_readings": [{"device": r.device, "point": r.point, "ts": r.ts.isoformat(),
                              "value": r.value, "unit": r.unit, "quality": str(r.quality)}
                             for r in self._raw],
        }

    # -- internals -------------------------------------------------------------------------

    def _add(self, r: ReadingLike) -> Series:
        kind = str(r.kind)
        category, never = collected_category(self._catalogue, r.point)
        s = Series(r.device, r.point, kind, r.unit, category)
        s.bucket.minute = self._cut  # minutes before the cut are closed for it too
        if never:
            self._never.add((r.device, r.point))
            log.warning("refusing point %s: the gateway does not collect its category",
                        r.point)
        if s.kind < 0:
            s.category = None
        if s.category is None and not never:
            log.debug("dropping point %s: no category allows it", r.point)
        self._series[(r.device, r.point)] = s
        return s

    def _usable(self, g: Grant, now: datetime) -> bool:
        purpose = self._catalogue.purposes.get(g.purpose)
        if purpose is None or purpose.finest is None or purpose.recipient(g.recipient) is None:
            return False
        return rank(g.tier) <= rank(purpose.finest) and g.active(now)

    def _fold(self, tiers: set[Tier]) -> None:
        window = self._windows.window
        cut = self._cut
        for key, s in self._series.items():
            b = s.bucket
            if b.minute < cut:  # its minute ended: close it; later readings before cut are late
                if b.good or b.bad:
                    s.roll(cut)
                else:
                    b.minute = cut
            if not s.closed:
                continue
            for tier in tiers:
                wins = self._open.setdefault(tier, {})
                for m in s.closed:
                    start, end = window(tier, m.minute * 60)
                    entry = wins.get(start)
                    if entry is None:
                        entry = wins[start] = (end, {})
                    agg = entry[1].get(key)
                    if agg is None:
                        agg = entry[1][key] = Bucket(m.minute)
                    agg.merge(m)
            s.closed.clear()

    def _allows(self, purpose: str, key: tuple[str, str], s: Series) -> bool:
        found = self._allowed.get((purpose, key))
        if found is None:
            found = s.category is not None and s.category in (
                self._catalogue.purposes[purpose].categories)
            self._allowed[(purpose, key)] = found
        return found

    def _opens(self, g: Grant, start: int) -> bool:
        """Whether the window starting at ``start`` may go to ``g``: it began under the grant,
        and nothing at or after its start was released to the grant's purpose and recipient."""
        if start < g.since.timestamp():
            return False
        mark = self._released.get((g.purpose, g.recipient))
        if mark is None or start >= mark:
            return True
        self.stats["repeated"] += 1
        log.warning("not releasing a %s window of %s to %s: a window ending after its start "
                    "was released already", g.tier.value, g.purpose, g.recipient)
        return False

    def _release(self, g: Grant, start: int, end: int,
                 data: dict[tuple[str, str], Bucket]) -> list[Release]:
        if not self._opens(g, start):
            return []
        since = g.since.timestamp()
        purpose = self._catalogue.purposes[g.purpose]
        minutes = (end - start) // 60
        events_only = g.tier is Tier.EVENTS
        records: list[Record] = []
        for key, agg in sorted(data.items()):
            s = self._series.get(key)
            if s is None or not self._allows(g.purpose, key, s):
                continue
            if events_only and (s.kind not in _EVENT_KINDS or not agg.changed):
                continue
            ck = (g.purpose, g.recipient, g.tier.value, key[0], key[1])
            records.append(record(purpose, g.tier.value, s, agg, minutes, self._carry, ck,
                                  since))
        missing = () if events_only else tuple(sorted(
            key for key, s in self._series.items()
            if key not in data and self._allows(g.purpose, key, s)))
        if not records:
            return []
        return [self._make(g, start, end, tuple(records), missing)]

    def _flush_raw(self, now_s: int, grants: list[Grant]) -> list[Release]:
        cut = now_s - now_s % 60
        keep: list[ReadingLike] = []
        by_minute: dict[int, dict[tuple[str, str], list[ReadingLike]]] = {}
        for r in self._raw:
            t = int(r.ts.timestamp())
            if t >= cut:
                keep.append(r)  # its minute is still open
            else:
                by_minute.setdefault(t - t % 60, {}).setdefault((r.device, r.point), []).append(r)
        self._raw = keep if grants else []
        out: list[Release] = []
        for g in grants:
            for start, per_series in sorted(by_minute.items()):
                if not self._opens(g, start):
                    continue
                records = [self._raw_record(key, rs) for key, rs in sorted(per_series.items())
                           if self._allows(g.purpose, key, self._series[key])]
                if records:
                    out.append(self._make(g, start, start + 60, tuple(records), ()))
        return out

    def _raw_record(self, key: tuple[str, str], readings: list[ReadingLike]) -> Record:
        good = [(r.ts, r.value) for r in readings
                if r.quality == "good" and r.value is not None]
        return raw_record(self._series[key], good, len(readings) - len(good))

    def _make(self, g: Grant, start: int, end: int, records: tuple[Record, ...],
              missing: tuple[tuple[str, str], ...]) -> Release:
        key = (g.purpose, g.recipient)
        self._released[key] = max(end, self._released.get(key, end))
        return Release(purpose=g.purpose, recipient=g.recipient, tier=g.tier,
                       start=to_datetime(start), end=to_datetime(end), records=records,
                       missing=missing, consent_record_id=g.record_id,
                       consent_record_hash=g.record_hash,
                       catalogue_version=self._catalogue.version)


def _add_value(s: Series, b: Bucket, v: float | str, t: float) -> int:
    """Account one good value read at ``t`` (epoch s): ``_OK``, ``_BAD`` if it does not fit
    the point kind, ``_LATE`` for an energy reading older than the series' last counter."""
    k = s.kind
    if k in NUMERIC:
        if isinstance(v, str) or v != v:  # text or NaN where a number belongs
            return _BAD
        if k == ENERGY:
            last = s.last_counter
            if last is not None and t < s.last_t:
                return _LATE  # older than the counter we have: it would look like a reset
            if last is None or v < last:  # the first reading, or a reset: count from here
                delta, since = 0.0, t
            else:
                delta, since = v - last, s.last_t
                b.delta += delta
            if not b.good:  # the bucket's first counter reading: the gap it closes
                b.lead, b.lead_from, b.lead_to = delta, since, t
            s.last_counter, s.last_t = v, t
        elif k != LEVEL:
            b.sum += v
            if b.max is None or v > b.max:
                b.max = v
    elif k == STATE:
        if v != s.last_state:
            if s.last_state is not None:
                b.changes += 1
            b.changed = True
            s.last_state = v
    elif k == EVENT:
        b.union = union(b.union, event_flags(v))
    elif k != INFO:
        return _BAD
    b.good += 1
    b.last = v
    return _OK
