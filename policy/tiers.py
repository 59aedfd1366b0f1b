"""Granularity tiers, their order, and how long the device may keep each.

Tiers are ordered by how much they reveal about the household, coarsest first:

=========  ====  ==============================================================
tier       rank  what a release at this tier carries
=========  ====  ==============================================================
``events``  0    only state and event points, and only when they change
                 (1-minute windows); no measurement of energy or power
``1mo``     1    one aggregate per local calendar month
``1d``      2    one aggregate per local day
``30min``   3    one aggregate per local half hour (the Japanese meter interval)
``1min``    4    one aggregate per minute
``raw``     5    the readings as they came (allowed points only), in 1-minute batches
=========  ====  ==============================================================

``None`` (spelled ``off`` in files and on the page) is no grant at all. A grant at tier *T*
releases windows of tier *T* only; a queued item of tier *U* stays covered by a grant at *T*
as long as ``rank(U) <= rank(T)``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from policy.errors import ConsentError


class Tier(StrEnum):
    """A granularity tier (compares equal to its string form, e.g. ``"30min"``)."""

    EVENTS = "events"
    MONTH = "1mo"
    DAY = "1d"
    HALF_HOUR = "30min"
    MINUTE = "1min"
    RAW = "raw"


ORDER: tuple[Tier, ...] = (Tier.EVENTS, Tier.MONTH, Tier.DAY, Tier.HALF_HOUR, Tier.MINUTE,
                           Tier.RAW)
_RANK: dict[str, int] = {tier.value: i for i, tier in enumerate(ORDER)}
OFF = "off"

#: How long the device may hold items of a tier (DESIGN §5); tiers not listed: no extra limit.
RETENTION: dict[Tier, timedelta] = {Tier.RAW: timedelta(days=7), Tier.MINUTE: timedelta(days=30)}


def rank(tier: str) -> int:
    """Position of ``tier`` in :data:`ORDER` (0 = coarsest)."""
    try:
        return _RANK[tier]
    except KeyError:
        raise ConsentError(f"unknown tier {tier!r}; expected off or one of "
                           f"{', '.join(ORDER)}") from None


def parse(value: str | None) -> Tier | None:
    """``None``/``"off"`` → ``None``, otherwise the :class:`Tier`; unknown names raise."""
    if value is None or value == OFF:
        return None
    rank(value)
    return Tier(value)


def finer(a: str, b: str) -> bool:
    """True when ``a`` reveals more than ``b``."""
    return rank(a) > rank(b)


def covered(item_tier: str, grant: str | None) -> bool:
    """Whether an item produced at ``item_tier`` is still allowed under ``grant``."""
    return grant is not None and rank(item_tier) <= rank(grant)


def not_allowed(grant: str | None) -> frozenset[Tier]:
    """The tiers whose queued items a grant at ``grant`` no longer covers."""
    return frozenset(t for t in ORDER if not covered(t, grant))


def retention_cutoffs(now: datetime) -> dict[Tier, datetime]:
    """For each limited tier, the instant before which items (by window end) must be pruned."""
    return {tier: now - keep for tier, keep in RETENTION.items()}


def must_prune(tier: str, window_end: datetime, now: datetime) -> bool:
    """True when an item of ``tier`` whose window ended at ``window_end`` is past retention."""
    keep = RETENTION.get(Tier(tier))
    return keep is not None and window_end < now - keep
