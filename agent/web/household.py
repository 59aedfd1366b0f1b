"""The household page's one door into the device: consent, releases, the outbox and rights.

:class:`HouseholdService` wraps the consent :class:`~policy.ledger.Ledger`, the release log and
the outbox, and calls back into the daemon for what only it can do (apply a consent change
through the pipeline, which purges and delivers it to the backend; wipe local data and send the
deletion request). Every change it makes is recorded in the ledger with the source
``household_page`` and takes effect at once: the queued items the new grant no longer covers
are purged, once, before the method returns. Its methods are synchronous and
fast (a ledger write, a sqlite delete); the clock is injectable so tests can drive expiry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from agent.paths import PENDING_REQUESTS_FILE
from agent.pipeline import erase_local_data
from agent.web.counts import ReadingCounts
from agent.web.energy import HomeEnergy
from agent.web.held import HeldValues
from agent.web.pending import LIFETIME, AgreementRequest, PendingRequests
from agent.web.pending import PendingRequest as PendingRequest
from policy.catalogue import Catalogue, Purpose
from policy.errors import ConsentError
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.records import ConsentChange, ConsentRecord, Event, Grant, Source
from policy.rights import (
    LEFT_STATUSES,
    STATUS_POSSIBLY_SENT,
    STATUS_QUEUED,
    STATUS_WITHDRAWN,
    LogEntry,
    ReleaseLog,
    export_all,
)
from policy.tiers import Tier, rank

log = logging.getLogger(__name__)

Key = tuple[str, str]
SOURCE = Source.HOUSEHOLD_PAGE


class OutboxStatsLike(Protocol):
    """What the page reads of :class:`agent.store.outbox.OutboxStats`."""

    @property
    def depth(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def drops(self) -> Mapping[str, int]: ...


class ConsentApplier(Protocol):
    """How the page applies consent changes: :meth:`agent.pipeline.Pipeline.apply_changes`.
    It purges what each change no longer allows (once) and hands the change to the uplink;
    it returns how many queued items it purged."""

    def __call__(self, changes: Sequence[ConsentChange], *,
                 reason: str | None = None) -> int: ...


class OutboxLike(Protocol):
    """What the page needs of :class:`agent.store.outbox.Outbox`."""

    def purge(self, purpose: str, recipient: str | None = None,
              tiers: Sequence[str] | None = None, *, reason: str = "consent_change") -> int: ...
    def stats(self) -> OutboxStatsLike: ...


@dataclass(frozen=True, kw_only=True)
class ReleaseEntry:
    """One upload as the page shows it ("what left my home")."""

    time: datetime
    purpose: str
    recipient: str
    window_start: datetime
    window_end: datetime
    tier: str
    points: int
    size: int
    possibly_sent: bool = False
    """Published, then removed before the broker acknowledged it: it may have left."""
    items: tuple[str, ...] = ()
    """The point names it held (``pv.power``, ...): which items, never their values."""
    seq: int | None = None
    """The sequence number of its envelope (None in entries older than that tracking)."""
    records: int = 0
    """How many records it held: one per point of each device, over its window."""

    @classmethod
    def from_log(cls, entry: LogEntry) -> ReleaseEntry:
        """From a :class:`policy.rights.ReleaseLog` entry; the time it was sent (acknowledged
        by the broker) when known, else when it was committed."""
        return cls(time=entry.sent_at or entry.logged_at, purpose=entry.purpose,
                   recipient=entry.recipient, window_start=entry.start, window_end=entry.end,
                   tier=entry.tier, points=len(entry.points), size=entry.size,
                   possibly_sent=entry.status == STATUS_POSSIBLY_SENT, items=entry.points,
                   seq=entry.seq, records=entry.records)


@dataclass(frozen=True, kw_only=True)
class WithdrawnEntry:
    """A release that was queued, then withdrawn before it was sent: it never left."""

    time: datetime
    purpose: str
    recipient: str
    window_start: datetime
    window_end: datetime
    tier: str
    reason: str

    @classmethod
    def from_log(cls, entry: LogEntry) -> WithdrawnEntry:
        """From a withdrawn :class:`policy.rights.ReleaseLog` entry."""
        if entry.withdrawn_at is None or entry.withdrawn_reason is None:
            raise ValueError(f"release {entry.seq} is {entry.status}, not withdrawn")
        return cls(time=entry.withdrawn_at, purpose=entry.purpose, recipient=entry.recipient,
                   window_start=entry.start, window_end=entry.end, tier=entry.tier,
                   reason=entry.withdrawn_reason)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What a household action did: the ledger records written and queued items purged."""

    changes: tuple[ConsentChange, ...]
    purged: int


class HouseholdService:
    """The facade the household page calls; the daemon builds one and passes it to the app.

    ``recipient_names`` names the real companies behind generic recipients (e.g. the installer
    of ``maintenance_watch``), as set at provisioning. ``apply_consent`` applies the ledger's
    changes: it purges what they no longer allow and hands them to the uplink (signed consent
    message, sent before any data), returning the count purged. ``on_deletion`` receives the
    deletion-request item (:func:`policy.rights.delete_household_data`) after policy's own data
    is cleared and the outbox purged: the daemon signs and queues it and wipes the rest of the
    household's local data. ``extra_export`` adds what other parts of the device hold.
    ``state_dir`` keeps pending support requests and the page's sessions across a restart
    (None: in memory only). ``receivers`` are the recipients that can receive at all (a key
    is configured for them); the page lists only those (None: every recipient).
    """

    def __init__(self, *, ledger: Ledger, release_log: ReleaseLog, outbox: OutboxLike,
                 apply_consent: ConsentApplier,
                 on_deletion: Callable[[Mapping[str, Any]], None],
                 minimiser: Minimiser | None = None,
                 recipient_names: Mapping[str, str] | None = None,
                 extra_export: Callable[[], Mapping[str, Any]] | None = None,
                 clock: Callable[[], datetime] | None = None,
                 state_dir: Path | None = None,
                 receivers: Collection[str] | None = None) -> None:
        self._ledger = ledger
        self._release_log = release_log
        self._minimiser = minimiser
        self._outbox = outbox
        self._apply_consent = apply_consent
        self._on_deletion = on_deletion
        self.recipient_names: Mapping[str, str] = dict(recipient_names or {})
        self._extra_export = extra_export
        self._clock = clock or (lambda: datetime.now(UTC))
        self.state_dir = state_dir
        self._receivers = None if receivers is None else frozenset(receivers)
        self.energy = HomeEnergy()
        """The household's own energy, in memory only: the daemon feeds it every poll."""
        self.readings = ReadingCounts()
        """Readings taken per day, in memory only: the daemon feeds it every poll."""
        self.held = HeldValues()
        """The values of the last releases queued, in memory only: the daemon hands it every
        release (``Pipeline.on_release``) so the page can show what leaves."""
        self._pending = PendingRequests(
            None if state_dir is None else state_dir / PENDING_REQUESTS_FILE, clock=self.now)

    # -- reading ----------------------------------------------------------------------------

    def now(self) -> datetime:
        """The service's clock (UTC)."""
        return self._clock()

    def receives(self, recipient: str) -> bool:
        """Whether anything can be sent to ``recipient`` (a key is configured for it)."""
        return self._receivers is None or recipient in self._receivers

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue the current grants were made under."""
        return self._ledger.catalogue

    def grants(self) -> dict[Key, Grant]:
        """Grants in force now; grants past their expiry are recorded as expired first."""
        now = self.now()
        self._apply(self._ledger.expire(now))
        return self._ledger.grants(now)

    def needs_agreement(self) -> set[str]:
        """Purposes a new catalogue version changed and that wait for the household."""
        return {a.purpose for a in self.agreements()}

    def agreements(self) -> list[AgreementRequest]:
        """Each purpose × recipient a catalogue update asks the household about, in catalogue
        order. Agreeing or declining is an ordinary :meth:`set_grant` (to ``offered`` or off):
        any change the household makes to that grant ends the request."""
        state = self._ledger.state()
        out = []
        for p in self.catalogue.spec.purposes:
            for r in p.recipients:
                rec = state.get((p.id, r.id))
                if rec is not None and rec.needs_agreement:
                    offered = _offered(p, rec, self._ledger.contract_running)
                    if offered is not None:
                        out.append(AgreementRequest(
                            purpose=p.id, recipient=r.id,
                            catalogue_version=rec.catalogue_version,
                            changes=dict(rec.data.get("catalogue_changes") or {}),
                            current=None if rec.tier is None else rec.tier.value,
                            offered=offered, required=p.required))
        return out

    def history(self) -> list[ConsentRecord]:
        """Every consent record, newest first."""
        return list(reversed(self._ledger.history()))

    def release_entries(self) -> list[LogEntry]:
        """Every release log entry with its status (one read of the log), for a page that
        lists several kinds of release to pass to the methods below."""
        return list(self._release_log.entries())

    def _entries(self, entries: Sequence[LogEntry] | None,
                 status: Collection[str]) -> list[LogEntry]:
        found = self._release_log.entries() if entries is None else entries
        return [e for e in found if e.status in status]

    def recent_releases(self, limit: int = 5, entries: Sequence[LogEntry] | None = None
                        ) -> dict[Key, list[ReleaseEntry]]:
        """The last ``limit`` releases that left the home or may have (published, removed
        before an acknowledgement), of each purpose × recipient, newest first (one pass over
        the release log, or over ``entries`` from :meth:`release_entries`)."""
        found: dict[Key, list[ReleaseEntry]] = {}
        for entry in self._entries(entries, LEFT_STATUSES):
            found.setdefault((entry.purpose, entry.recipient), []).append(
                ReleaseEntry.from_log(entry))
        return {key: sorted(entries, key=lambda e: e.time, reverse=True)[:limit]
                for key, entries in found.items()}

    def all_releases(self, entries: Sequence[LogEntry] | None = None
                     ) -> list[ReleaseEntry]:
        """Every release that left the home or may have, newest first (the CSV download)."""
        return sorted((ReleaseEntry.from_log(e) for e in self._entries(entries, LEFT_STATUSES)),
                      key=lambda e: e.time, reverse=True)

    def queued_releases(self, limit: int = 20,
                        entries: Sequence[LogEntry] | None = None
                        ) -> list[ReleaseEntry]:
        """The last ``limit`` releases committed to the outbox and not yet acknowledged (about
        to leave), newest first."""
        found = [ReleaseEntry.from_log(e) for e in self._entries(entries, {STATUS_QUEUED})]
        return sorted(found, key=lambda e: e.time, reverse=True)[:limit]

    def withdrawn_releases(self, limit: int = 20,
                           entries: Sequence[LogEntry] | None = None
                           ) -> list[WithdrawnEntry]:
        """The last ``limit`` releases queued and then withdrawn unsent, newest first."""
        found = [WithdrawnEntry.from_log(e) for e in self._entries(entries, {STATUS_WITHDRAWN})]
        return sorted(found, key=lambda e: e.time, reverse=True)[:limit]

    def outbox_stats(self) -> OutboxStatsLike:
        """What is queued now and what the bound dropped."""
        return self._outbox.stats()

    def provision_records(self) -> list[LogEntry]:
        """Records of provision to third parties (APPI Art. 29; disclosed under Art. 33(5)):
        releases to them that left the home or may have (``status`` possibly_sent)."""
        return list(self._release_log.provision_records())

    def withdrawn_provisions(self) -> list[LogEntry]:
        """Releases to third parties queued and then withdrawn unsent: never provided."""
        return [e for e in self._release_log.entries()
                if e.status == STATUS_WITHDRAWN and e.provision_record]

    def export_all(self) -> dict[str, Any]:
        """Everything the device holds about the household, as JSON-ready data: policy's
        export (catalogue, consent, release log, provision records, held data), the queue,
        pending requests, and what ``extra_export`` adds."""
        data = export_all(ledger=self._ledger, now=self.now(), release_log=self._release_log,
                          minimiser=self._minimiser)
        stats = self._outbox.stats()
        data["outbox"] = {"depth": stats.depth, "bytes": stats.bytes, "drops": dict(stats.drops)}
        data["pending_requests"] = [p.to_json() for p in self.pending_requests()]
        if self._extra_export is not None:
            data.update(self._extra_export())
        return data

    # -- changing ---------------------------------------------------------------------------

    def set_grant(self, purpose: str, recipient: str, tier: str | None, *,
                  hours: int | None = None, reference: str | None = None) -> Outcome:
        """Change one grant now. ``hours`` bounds a time-boxed grant; refusals raise
        :class:`~policy.errors.ConsentError` and change nothing."""
        now = self.now()
        if hours is not None and not 1 <= hours <= 24 * 30:
            raise ConsentError(f"a grant lasts 1 to {24 * 30} hours, not {hours}")
        expires = None if hours is None or tier is None else now + timedelta(hours=hours)
        change = self._ledger.set_grant(purpose, recipient, tier, source=SOURCE,
                                        reference=reference, expires=expires, now=now)
        return self._apply([change])

    def stop_third_party(self) -> Outcome:
        """Stop every provision to third parties in one action (APPI Art. 35)."""
        return self._apply(self._ledger.stop_third_party(source=SOURCE, now=self.now()))

    def delete_local_data(self) -> Outcome:
        """Erasure: every queued upload purged, consent for every optional purpose off,
        policy's local data cleared, then the deletion request handed to the daemon.

        The consent history and the records of provision to third parties stay: they are the
        evidence the law asks to keep, and hold no measurements.
        """
        deletion, purged = erase_local_data(self._outbox.purge, ledger=self._ledger,
                                            now=self.now(), source=SOURCE,
                                            minimiser=self._minimiser,
                                            release_log=self._release_log)
        self.held.clear()
        outcome = self._apply(deletion.changes, reason="erasure")
        self._on_deletion(deletion.item)
        log.info("household page: local data deleted, deletion request handed on")
        return Outcome(changes=outcome.changes, purged=outcome.purged + purged)

    # -- pending requests from the support centre -------------------------------------------

    def add_pending_request(self, *, purpose: str, recipient: str, tier: str, hours: int,
                            reference: str, lifetime: timedelta = LIFETIME) -> PendingRequest:
        """Hook for the daemon: a support-centre request arrived; the household decides within
        ``lifetime`` (the request is stored before this returns)."""
        return self._pending.add(purpose=purpose, recipient=recipient, tier=tier, hours=hours,
                                 reference=reference, lifetime=lifetime)

    def pending_requests(self) -> list[PendingRequest]:
        """Requests waiting for the household, oldest first (expired ones are dropped)."""
        return self._pending.live()

    def accept_request(self, request_id: str) -> Outcome:
        """Grant what a pending request asked for, time-boxed, citing its reference."""
        request = self._pending.get(request_id)
        if request is None:
            raise ConsentError("no such pending request (or it expired)")
        outcome = self.set_grant(request.purpose, request.recipient, request.tier,
                                 hours=request.hours, reference=request.reference)
        self._pending.remove(request_id)
        return outcome

    def decline_request(self, request_id: str) -> None:
        """Forget a pending request; nothing is granted."""
        if self._pending.remove(request_id) is None:
            raise ConsentError("no such pending request (or it expired)")

    # -- internals --------------------------------------------------------------------------

    def _apply(self, changes: Sequence[ConsentChange], *,
               reason: str | None = None) -> Outcome:
        purged = self._apply_consent(changes, reason=reason) if changes else 0
        return Outcome(changes=tuple(changes), purged=purged)


def _offered(p: Purpose, rec: ConsentRecord, contract_running: bool) -> str | None:
    """The tier agreeing sets: what the household had before the pause (or has now), else the
    purpose's default; coarsened to the finest tier offered, and, for a purpose the contract
    requires while it runs, no coarser than its required tier (the ledger refuses less); None
    if there is nothing to offer (then no card: the household may opt in as usual)."""
    if rec.event is Event.PAUSED:
        restore = rec.data.get("restore_tier")
        if restore is None:
            return None  # nothing the household had agreed to: it may opt in as usual
        offered = _coarsened(p, Tier(restore))
    else:
        tier = rec.tier or p.default or p.required_tier
        offered = None if tier is None else _coarsened(p, tier)
    floor = p.required_tier if p.required and contract_running else None
    if offered is not None and floor is not None and rank(offered) < rank(floor):
        return _coarsened(p, floor)
    return offered


def _coarsened(p: Purpose, tier: str) -> str | None:
    if p.finest is None:
        return None
    return p.finest.value if rank(tier) > rank(p.finest) else Tier(tier).value
