"""What leaves the policy engine: a :class:`Release` per purpose × recipient × window."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policy.tiers import Tier

Value = float | int | str | list[str] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One point of one device over one window.

    ``values`` is empty when no good reading arrived (a gap: nothing is filled in).
    ``coverage`` is the share of the window's minutes with readings, each minute weighted by
    its share of good readings (1.0 = every minute had only good readings). ``samples`` holds
    the ``(time, value)`` pairs of the ``raw`` tier, and is empty for every other tier.
    """

    device: str
    point: str
    kind: str
    unit: str
    values: Mapping[str, Value]
    coverage: float
    good: int
    bad: int
    samples: tuple[tuple[datetime, float | str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self.device, "point": self.point, "kind": self.kind,
                               "unit": self.unit, "values": dict(self.values),
                               "coverage": round(self.coverage, 4), "good": self.good,
                               "bad": self.bad}
        if self.samples:
            out["samples"] = [[ts.isoformat(), v] for ts, v in self.samples]
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """The data one purpose may send to one recipient for one window ``[start, end)``.

    Only points on the purpose's allow-list appear, at exactly the granted tier, rounded as the
    catalogue says. ``missing`` lists allowed series seen before but silent in this window.
    """

    purpose: str
    recipient: str
    tier: Tier
    start: datetime
    end: datetime
    records: tuple[Record, ...]
    missing: tuple[tuple[str, str], ...]
    consent_record_id: str
    consent_record_hash: str
    catalogue_version: str

    @property
    def points(self) -> frozenset[str]:
        return frozenset(r.point for r in self.records)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what the envelope serialises)."""
        return {"purpose": self.purpose, "recipient": self.recipient, "tier": self.tier.value,
                "start": self.start.isoformat(), "end": self.end.isoformat(),
                "records": [r.to_dict() for r in self.records],
                "missing": [list(m) for m in self.missing],
                "consent_record_id": self.consent_record_id,
                "consent_record_hash": self.consent_record_hash,
                "catalogue_version": self.catalogue_version}
