"""The household's own consent, modelled apart from the ledger, and catalogue updates to drive it.

:class:`ConsentModel` is the oracle of ``tests/unit/daemon/test_consent_paths.py``. It never asks
the ledger: it records, per purpose × recipient, the *authorisations* the household itself gave
(the page: a tier set, a re-agreement card agreed, a support request accepted), the factory
defaults of the purposes the contract or a published purpose covers, and every action that can only
take consent away (a decline, stop-all-third-party, erasure, an operator's suspension, an expiry, a
catalogue update that widened an optional purpose: off until agreed again). It raises nothing by
itself; :meth:`ConsentModel.allows` says whether a release fits.

:func:`mutate` makes one catalogue update of a given kind and says which purpose it widened.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from policy.catalogue import load_catalogue
from policy.tiers import ORDER, rank

OFF = -1
COLLECTED = ("equipment", "equipment_status", "pv", "battery", "consumption")
#: Recipients an update may add: a company-kind one to any purpose but the third-party one,
#: a third party to maintenance_watch (both have keys in tests/support/consent_site.py).
NEW_RECIPIENTS = {
    "partner": {"id": "partner", "kind": "company", "name": {"ja": "提携会社", "en": "Partner"}},
    "broker": {"id": "broker", "kind": "third_party", "name": {"ja": "仲介業者", "en": "Broker"}},
}
UPDATE_KINDS = ("category", "recipient", "finer", "default", "stats", "retention", "required",
                "narrow", "unchanged", "invalid")
PURPOSES = ("service", "improvement", "proposals", "support", "maintenance_watch")


def factory_raw() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(load_catalogue().canonical_json())
    return raw


def _purpose(raw: dict[str, Any], pid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in raw["purposes"] if p["id"] == pid)
    return found


def _rank(tier: str) -> int:
    return OFF if tier == "off" else rank(tier)


def mutate(raw: dict[str, Any], kind: str, pid: str, version: str
           ) -> tuple[dict[str, Any], bool]:
    """A new catalogue (``version``) from ``raw`` with one change of ``kind`` to purpose
    ``pid``, and whether that change widens ``pid`` (docs/policy.md, "Catalogue updates").
    A change that does not fit the purpose (nothing left to add, a tier that would break the
    catalogue's own rules) is left out: the update is then unchanged apart from its version.
    ``invalid`` makes a catalogue the device must refuse (a consent purpose on by default)."""
    new = copy.deepcopy(raw)
    new["version"] = version
    p = _purpose(new, pid)
    finest, default = _rank(p["finest_tier"]), _rank(p["default_tier"])
    consent = p["legal_basis"]["kind"] in ("consent", "third_party_consent")
    if kind == "category":
        missing = [c for c in COLLECTED if c not in p["categories"]]
        if missing:
            p["categories"].append(missing[0])
            return new, True
    elif kind == "recipient":
        rid = "broker" if pid == "maintenance_watch" else "partner"
        if all(r["id"] != rid for r in p["recipients"]):
            p["recipients"].append(copy.deepcopy(NEW_RECIPIENTS[rid]))
            return new, True
    elif kind == "finer":
        if OFF < finest < len(ORDER) - 1:
            p["finest_tier"] = ORDER[finest + 1].value
            return new, True
    elif kind == "default":
        if not consent and OFF < default < finest:
            p["default_tier"] = ORDER[default + 1].value
            return new, True
    elif kind == "stats":
        if "max" not in p["power_stats"]:
            p["power_stats"].append("max")
            return new, True
    elif kind == "retention":
        days = p["retention"]["days"]
        text = {"ja": "期間の例", "en": "example period"}
        p["retention"] = {"days": 365 if days is None else days * 2, "text": text,
                          "source": {"ja": "規約", "en": "Terms"}}
        return new, days is not None  # a period where there was none is not longer
    elif kind == "required":
        if not p["required"] and not consent and default > OFF:
            p["required"], p["required_tier"] = True, p["default_tier"]
            return new, True
    elif kind == "narrow":
        floor = max(default, OFF if p["required_tier"] is None else rank(p["required_tier"]))
        if finest > max(floor, 0):
            p["finest_tier"] = ORDER[finest - 1].value
            p["rounding"] = {t: s for t, s in p["rounding"].items() if rank(t) < finest}
            return new, False
    elif kind == "invalid":
        _purpose(new, "proposals")["default_tier"] = "1d"
    return new, False


@dataclass(frozen=True)
class Step:
    """One change of what is authorised: at ``clock``, level ``level`` (a tier's rank, or
    OFF) until ``expires`` (None: until changed)."""

    clock: datetime
    level: int
    expires: datetime | None = None


@dataclass
class ConsentModel:
    """What the household authorised, per purpose × recipient, as an ordered history."""

    raw: dict[str, Any]
    floors: dict[str, int] = field(default_factory=dict)
    history: dict[tuple[str, str], list[Step]] = field(default_factory=dict)

    @classmethod
    def factory(cls, raw: dict[str, Any], now: datetime) -> ConsentModel:
        """At the factory: each purpose at its default (only contract and published-purpose
        purposes can be on, validation ensures it); a contract-required purpose never below
        its required tier, for any of its recipients, while the contract runs."""
        model = cls(raw=raw)
        for p in raw["purposes"]:
            if p["required"]:
                model.floors[p["id"]] = rank(p["required_tier"])
            for r in p["recipients"]:
                model.history[(p["id"], r["id"])] = [Step(now, _rank(p["default_tier"]))]
        return model

    def purpose(self, pid: str) -> dict[str, Any]:
        return _purpose(self.raw, pid)

    def pairs(self) -> list[tuple[str, str]]:
        return [(p["id"], r["id"]) for p in self.raw["purposes"] for r in p["recipients"]]

    def level(self, key: tuple[str, str], step: Step) -> int:
        return max(step.level, self.floors.get(key[0], OFF))

    def current(self, key: tuple[str, str]) -> int:
        steps = self.history.get(key)
        return self.level(key, steps[-1]) if steps else self.floors.get(key[0], OFF)

    # -- what changes it ------------------------------------------------------------------

    def household(self, key: tuple[str, str], tier: str | None, now: datetime,
                  hours: int | None = None) -> None:
        """The household set ``tier`` (None: off) on the page; a time-boxed purpose's grant
        without hours lasts its catalogue's hours."""
        expires = None
        if tier is not None:
            boxed = self.purpose(key[0])["time_boxed_hours"]
            if hours is not None:
                expires = now + timedelta(hours=hours)
            elif boxed is not None:
                expires = now + timedelta(hours=boxed)
        self.history.setdefault(key, []).append(
            Step(now, OFF if tier is None else rank(tier), expires))

    def withdraw(self, keys: Iterable[tuple[str, str]], now: datetime) -> None:
        """Consent taken away (never given) for ``keys``."""
        for key in keys:
            self.history.setdefault(key, []).append(Step(now, OFF))

    def expire(self, now: datetime) -> None:
        for steps in self.history.values():
            last = steps[-1]
            if last.expires is not None and now >= last.expires and last.level > OFF:
                steps.append(Step(now, OFF))

    def optional(self, pid: str) -> bool:
        return not self.purpose(pid)["required"]

    def third_party(self) -> list[tuple[str, str]]:
        return [(p["id"], r["id"]) for p in self.raw["purposes"] for r in p["recipients"]
                if r["kind"] == "third_party"]

    def catalogue(self, new: dict[str, Any], widened: str | None, now: datetime) -> list[
            tuple[str, str]]:
        """A catalogue update was applied; ``widened`` names the purpose it widened. An
        optional widened purpose is off for every recipient until the household agrees; a
        contract-required one keeps what it had; a recipient new in this version starts with
        nothing the household gave. Returns the keys paused while they were on."""
        old_keys = set(self.pairs())
        self.raw = new
        paused = []
        for key in self.pairs():
            if key not in old_keys:
                self.history.setdefault(key, []).append(Step(now, OFF))
            elif key[0] == widened and self.optional(widened):
                if self.current(key) > OFF:
                    paused.append(key)
                self.history[key].append(Step(now, OFF))
        for key in old_keys - set(self.pairs()):
            self.history[key].append(Step(now, OFF))
        return paused

    # -- the oracle -----------------------------------------------------------------------

    def allows(self, key: tuple[str, str], tier: str, start: datetime, at: datetime) -> bool:
        """Whether a window of ``tier`` from ``start``, released at ``at``, fits: an unbroken
        run of authorisations at ``tier`` or finer that began at or before ``start`` (the
        earliest clock reading in the run) and is still in force, unexpired, at ``at``."""
        want = rank(tier)
        steps = self.history.get(key, [])
        run: list[Step] = []
        for step in steps:
            run = [*run, step] if self.level(key, step) >= want else []
        if not run:
            return False
        last = run[-1]
        if last.expires is not None and at >= last.expires and last.level >= want:
            return False
        return start >= min(s.clock for s in run)
