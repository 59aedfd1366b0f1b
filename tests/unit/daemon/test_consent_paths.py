"""Only the household widens consent: every path that touches consent, in random order.

A :class:`~hypothesis.stateful.RuleBasedStateMachine` drives the daemon's own state on real
files (``open_state``: stored catalogue, hash-chained ledger, minimiser and its snapshot file,
release log, sqlite outbox, pipeline; see ``tests/support/consent_site.py``) through random
interleavings of:

* readings (pv.power, inverter.state, battery.soc, grid.energy_import, and a never-collected
  water.flow) and pipeline ticks as simulated time advances, minutes to more than a day;
  small backward clock jumps;
* the household page (``HouseholdService``): set a tier (with or without hours), agree to or
  decline a re-agreement card, accept or decline a pending support request, stop all third
  parties, delete local data;
* downlink commands as ``Actions.apply`` receives them after verification: catalogue_update
  (widening by categories, recipients, finer finest or default tier, statistics, retention,
  becoming contract-required; narrowing; unchanged; a catalogue the device must refuse),
  grant_request, suspend (one purpose, one recipient, all), stop_third_party, delete, export;
* snapshot saves, and restarts from the state directory (clean: last tick and snapshot save;
  or a power cut after the last commit), with the daemon's snapshot restore.

The oracle (:class:`tests.support.consent_model.ConsentModel`) is kept apart from the ledger.
Per purpose × recipient it holds, in the order they happened, the *authorisations*: the
factory default of each purpose (on only for the contract's ``service`` and the published
purpose ``improvement``: the catalogue validation keeps consent purposes and third parties
off), each tier the household set on the page (a card agreed, a request accepted: the tier on
it), and everything that only takes consent away (a decline, stop-third-party, erasure, an
operator's suspension, an expiry, a catalogue update that widened an optional purpose: off for
all its recipients; a recipient new in an update: nothing given). A contract-required purpose
counts at least at its factory required tier for every recipient (the contract); a catalogue
update never raises anything. On every release the pipeline commits to the outbox:

1. its tier is no finer than every authorisation of an unbroken run that began (earliest clock
   reading in the run) at or before the window's start and is still in force, unexpired, at
   the release: nothing finer than the finest tier the household itself chose (or the
   contract's required tier) over the whole window, nothing while paused or off;
2. no two releases to one purpose and recipient cover the same time (at most once);
3. its tier is no finer than the purpose's finest in the catalogue in force, and it carries no
   point the gateway never collects.

The short profile runs in ``make test``; ``tests/proof/test_consent_paths_long.py`` runs the
same machine for thousands of sequences.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agent.wire.commands import CommandType
from drivers.models import PointKind, Quality, Reading
from policy.errors import ConsentError
from policy.tiers import rank
from tests.support.consent_model import PURPOSES, UPDATE_KINDS, ConsentModel, factory_raw, mutate
from tests.support.consent_site import ConsentSite, Released

T0 = datetime(2026, 3, 1, 14, 50, tzinfo=UTC)  # 23:50 in Tokyo: a day ends in ten minutes
TIERS = ("off", "events", "1mo", "1d", "30min", "1min", "raw")
POINTS = (("inv", "pv.power", PointKind.POWER, "W"),
          ("inv", "inverter.state", PointKind.STATE, ""),
          ("bat", "battery.soc", PointKind.LEVEL, "%"),
          ("meter", "grid.energy_import", PointKind.ENERGY, "Wh"),
          ("meter", "water.flow", PointKind.GAUGE, "L/min"))
NEVER = ("water.", "gas.", "external.")
TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None  # many fsyncs: memory when there is


class ConsentPaths(RuleBasedStateMachine):
    """The gateway, the household and the operator, with the model beside them."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="consent-", dir=TMP))
        self.now = T0
        self.site = ConsentSite(self.dir / "gw", lambda: self.now)
        self.model = ConsentModel.factory(factory_raw(), T0)
        self.version = 2
        self.checked = 0
        self.counter = 1_000_000.0
        self.seen: dict[tuple[str, str], list[Released]] = {}
        self.stats = STATS

    def teardown(self) -> None:
        self.site.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _key(self, index: int) -> tuple[str, str]:
        keys = self.model.pairs()
        return keys[index % len(keys)]

    # -- time and readings ------------------------------------------------------------------

    def _tick(self) -> None:
        self.model.expire(self.now)
        self.site.tick()
        self._check()

    @rule(minutes=st.sampled_from([1, 5, 29, 30, 31, 61, 180, 600, 1440, 1570]),
          seed=st.integers(0, 2**16))
    def advance(self, minutes: int, seed: int) -> None:
        """Readings every five minutes (some bad) and a tick every half hour of the span."""
        rng = random.Random(seed)
        end = self.now + timedelta(minutes=minutes)
        while self.now < end:
            chunk = min(end, self.now + timedelta(minutes=30))
            readings = []
            ts = self.now + timedelta(seconds=rng.randint(1, 59))
            while ts < chunk:
                for device, point, kind, unit in POINTS:
                    good = rng.random() > 0.1
                    value: float | str | None
                    if kind is PointKind.ENERGY:
                        self.counter += rng.randint(0, 300)
                        value = self.counter
                    elif kind is PointKind.STATE:
                        value = rng.choice(["mppt", "standby"])
                    else:
                        value = float(rng.randint(0, 5000))
                    readings.append(Reading(device=device, point=point, kind=kind, unit=unit,
                                            ts=ts, value=value if good else None,
                                            quality=Quality.GOOD if good else Quality.ERROR))
                ts += timedelta(minutes=5)
            self.site.state.pipeline.submit(readings)
            self.now = chunk
            self._tick()
        self.site.save_snapshot()

    @rule(minutes=st.integers(1, 10))
    def clock_back(self, minutes: int) -> None:
        self.now -= timedelta(minutes=minutes)
        self._tick()

    @rule()
    def save_snapshot(self) -> None:
        self.site.save_snapshot()

    @rule(clean=st.booleans())
    def restart(self, clean: bool) -> None:
        if clean:
            self.model.expire(self.now)
        self.site.restart(clean=clean)
        self._check()
        self._tick()

    # -- the household page -----------------------------------------------------------------

    @rule(index=st.integers(0, 30), tier=st.sampled_from(TIERS),
          hours=st.sampled_from([None, None, 1, 2, 30]))
    def page_set(self, index: int, tier: str, hours: int | None) -> None:
        key = self._key(index)
        wanted = None if tier == "off" else tier
        self.model.expire(self.now)
        try:
            self.site.household.set_grant(*key, wanted, hours=hours)
        except ConsentError:
            return  # refused: nothing changed
        self.model.household(key, wanted, self.now, hours)

    @rule(index=st.integers(0, 30), agree=st.booleans())
    def page_agreement(self, index: int, agree: bool) -> None:
        cards = self.site.household.agreements()
        if not cards:
            return
        card = cards[index % len(cards)]
        tier = card.offered if agree else None
        key = (card.purpose, card.recipient)
        self.model.expire(self.now)
        try:
            self.site.household.set_grant(*key, tier)
        except ConsentError:
            assert card.required and tier is None, card  # only a required one cannot decline
            return
        self.model.household(key, tier, self.now)

    @rule()
    def page_stop_third_party(self) -> None:
        self.site.household.stop_third_party()
        self.model.withdraw(self.model.third_party(), self.now)

    @rule()
    def page_delete(self) -> None:
        self.site.household.delete_local_data()
        self._erased()

    @rule(index=st.integers(0, 30), accept=st.booleans())
    def page_request(self, index: int, accept: bool) -> None:
        pending = self.site.household.pending_requests()
        if not pending:
            return
        request = pending[index % len(pending)]
        if not accept:
            self.site.household.decline_request(request.request_id)
            return
        self.model.expire(self.now)
        try:
            self.site.household.accept_request(request.request_id)
        except ConsentError:
            return  # the catalogue changed since: the tier is not offered any more
        self.model.household((request.purpose, request.recipient), request.tier, self.now,
                             request.hours)

    def _erased(self) -> None:
        self.model.withdraw([k for k in self.model.pairs() if self.model.optional(k[0])],
                            self.now)

    # -- downlink commands --------------------------------------------------------------------

    @rule(index=st.integers(0, 30), tier=st.sampled_from(TIERS[1:]),
          hours=st.sampled_from([1, 4, 72]))
    def command_grant_request(self, index: int, tier: str, hours: int) -> None:
        purpose, recipient = self._key(index)
        outcome = self.site.command(CommandType.GRANT_REQUEST, {
            "purpose": purpose, "recipient": recipient, "tier": tier, "hours": hours,
            "reference": "SR-1"})
        assert outcome.status in ("pending", "refused"), outcome  # never granted here

    @rule(which=st.sampled_from(("all", *PURPOSES)), one=st.booleans(),
          index=st.integers(0, 5))
    def command_suspend(self, which: str, one: bool, index: int) -> None:
        args: dict[str, Any] = {"purpose": which, "reference": "SR-2"}
        keys = ([k for k in self.model.pairs() if self.model.optional(k[0])] if which == "all"
                else [k for k in self.model.pairs() if k[0] == which])
        if one and which != "all" and keys:
            key = keys[index % len(keys)]
            args["recipient"], keys = key[1], [key]
        outcome = self.site.command(CommandType.SUSPEND, args)
        if outcome.status == "done":
            self.model.withdraw(keys, self.now)
        else:
            assert which != "all" and not self.model.optional(which), outcome

    @rule()
    def command_stop_third_party(self) -> None:
        assert self.site.command(CommandType.STOP_THIRD_PARTY,
                                 {"reference": "SR-3"}).status == "done"
        self.model.withdraw(self.model.third_party(), self.now)

    @rule()
    def command_delete(self) -> None:
        assert self.site.command(CommandType.DELETE, {"reference": "SR-4"}).status == "done"
        self._erased()

    @rule()
    def command_export(self) -> None:
        assert self.site.command(CommandType.EXPORT, {"reference": "SR-5"}).status == "done"

    @rule(kind=st.sampled_from(UPDATE_KINDS), purpose=st.sampled_from(PURPOSES))
    def command_catalogue_update(self, kind: str, purpose: str) -> None:
        self.version += 1
        new, widened = mutate(self.model.raw, kind, purpose, f"2026.{self.version}")
        self.model.expire(self.now)
        outcome = self.site.command(CommandType.CATALOGUE_UPDATE, {"catalogue": new})
        if kind == "invalid":
            assert outcome.status == "refused" and "broken catalogue" in str(outcome.reason)
            return
        assert outcome.status == "done", outcome
        paused = self.model.catalogue(new, purpose if widened else None, self.now)
        cards = {(c.purpose, c.recipient) for c in self.site.household.agreements()}
        assert set(paused) <= cards, (paused, cards)  # each pause asks the household again

    # -- the invariant --------------------------------------------------------------------

    @invariant()
    def releases_fit(self) -> None:
        self._check()

    @invariant()
    def grants_fit(self) -> None:
        """Every grant in force (what the next flush would release to) fits the model too."""
        for key, grant in self.site.state.ledger.grants(self.now).items():
            self.stats["grants"] += 1
            assert self.model.allows(key, grant.tier, grant.since, self.now), (
                f"{key} granted {grant.tier} since {grant.since} without the household: "
                f"{self.model.history.get(key)}")

    def _check(self) -> None:
        new = self.site.released[self.checked:]
        self.checked = len(self.site.released)
        for rel in new:
            key = (rel.purpose, rel.recipient)
            self.stats["releases"] += 1
            assert self.model.allows(key, rel.tier, rel.start, rel.at), (
                f"{rel} not authorised by the household: {self.model.history.get(key)}")
            finest = self.model.purpose(rel.purpose)["finest_tier"]
            assert rank(rel.tier) <= rank(finest), f"{rel} finer than finest {finest}"
            for earlier in self.seen.get(key, []):
                assert rel.end <= earlier.start or rel.start >= earlier.end, (
                    f"{rel} overlaps {earlier}")
            self.seen.setdefault(key, []).append(rel)


STATS = {"releases": 0, "grants": 0}
SHORT = settings(max_examples=25, stateful_step_count=30, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def run(machine: type[RuleBasedStateMachine], profile: settings) -> int:
    """Run the machine; the number of releases checked."""
    STATS["releases"] = STATS["grants"] = 0
    test = machine.TestCase
    test.settings = profile
    test().runTest()
    return STATS["releases"]


def test_only_the_household_widens_consent() -> None:
    assert run(ConsentPaths, SHORT) > 0  # the machine does reach releases

