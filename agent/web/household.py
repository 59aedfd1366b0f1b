"""The household page's one door into the device: consent, releases, the outbox and rights.

:class:`HouseholdService` wraps the consent :class:`~policy.ledger.Ledger`, the release log and
the outbox, and calls back into the daemon for what only it can do (deliver a consent change to
the backend, wipe local data and send the deletion request). Every change it makes is recorded
in the ledger with the source ``household_page`` and takes effect at once: the queued items the
new grant no longer covers are purged before the method returns. Its methods are synchronous and
fast (a ledger write, a sqlite delete); the clock is injectable so tests can drive expiry.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from policy.catalogue import Catalogue
from policy.errors import ConsentError
from policy.ledger import Ledger
from policy.records import ConsentChange, ConsentRecord, Grant, Source

log = logging.getLogger(__name__)

Key = tuple[str, str]
SOURCE = Source.HOUSEHOLD_PAGE


class OutboxStatsLike(Protocol):
    """What the page reads of :class:`agent.outbox.OutboxStats`."""

    @property
    def depth(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def drops(self) -> Mapping[str, int]: ...


class OutboxLike(Protocol):
    """What the page needs of :class:`agent.outbox.Outbox`."""

    def purge(self, purpose: str, recipient: str | None = None,
              tiers: Sequence[str] | None = None) -> int: ...
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


class ReleaseLogLike(Protocol):
    """The release log as the page reads it: newest entries first, per purpose × recipient."""

    def recent(self, purpose: str, recipient: str, limit: int) -> Sequence[ReleaseEntry]: ...
    def provision_records(self) -> Sequence[Mapping[str, Any]]: ...
    def export(self) -> Sequence[Mapping[str, Any]]: ...


@dataclass(frozen=True, kw_only=True)
class PendingRequest:
    """A support-centre request for a grant that only the household can accept."""

    request_id: str
    purpose: str
    recipient: str
    tier: str
    hours: int
    reference: str
    received: datetime


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What a household action did: the ledger records written and queued items purged."""

    changes: tuple[ConsentChange, ...]
    purged: int


class HouseholdService:
    """The facade the household page calls; the daemon builds one and passes it to the app.

    ``recipient_names`` names the real companies behind generic recipients (e.g. the installer
    of ``maintenance_watch``), as set at provisioning. ``on_consent_change`` must hand the change
    to the uplink (signed consent message, sent before any data); ``on_deletion`` wipes the
    household's local data and queues the signed deletion request; ``extra_export`` adds what
    other parts of the device hold to the export.
    """

    def __init__(self, *, ledger: Ledger, releases: ReleaseLogLike, outbox: OutboxLike,
                 on_consent_change: Callable[[ConsentChange], None],
                 on_deletion: Callable[[datetime], None],
                 recipient_names: Mapping[str, str] | None = None,
                 extra_export: Callable[[], Mapping[str, Any]] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._ledger = ledger
        self._releases = releases
        self._outbox = outbox
        self._on_change = on_consent_change
        self._on_deletion = on_deletion
        self.recipient_names: Mapping[str, str] = dict(recipient_names or {})
        self._extra_export = extra_export
        self._clock = clock or (lambda: datetime.now(UTC))
        self._pending: dict[str, PendingRequest] = {}

    # -- reading ----------------------------------------------------------------------------

    def now(self) -> datetime:
        """The service's clock (UTC)."""
        return self._clock()

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
        """Purposes a new catalogue version reset to their default until agreed again."""
        return {rec.purpose for rec in self._ledger.state().values() if rec.needs_agreement}

    def history(self) -> list[ConsentRecord]:
        """Every consent record, newest first."""
        return list(reversed(self._ledger.history()))

    def recent_releases(self, purpose: str, recipient: str,
                        limit: int = 5) -> Sequence[ReleaseEntry]:
        """The last releases of one purpose to one recipient, newest first."""
        return self._releases.recent(purpose, recipient, limit)

    def outbox_stats(self) -> OutboxStatsLike:
        """What is queued now and what the bound dropped."""
        return self._outbox.stats()

    def provision_records(self) -> list[Mapping[str, Any]]:
        """Records of provision to third parties (APPI Art. 29; disclosed under Art. 33(5))."""
        return list(self._releases.provision_records())

    def export_all(self) -> dict[str, Any]:
        """Everything the device holds about the household, as JSON-ready data."""
        now = self.now()
        stats = self._outbox.stats()
        data: dict[str, Any] = {
            "exported_at": now.isoformat(),
            "subject": self._ledger.subject,
            "catalogue": self.catalogue.spec.model_dump(mode="json"),
            "grants": [_grant_json(g) for g in self.grants().values()],
            "consent_history": [rec.as_dict() for rec in self._ledger.history()],
            "releases": list(self._releases.export()),
            "third_party_provision_records": self.provision_records(),
            "outbox": {"depth": stats.depth, "bytes": stats.bytes, "drops": dict(stats.drops)},
            "pending_requests": [_pending_json(p) for p in self.pending_requests()],
        }
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
        """Purge every queued upload, then let the daemon wipe local data and send the request.

        The consent ledger itself stays: it is the household's proof of what was agreed.
        """
        purged = sum(self._outbox.purge(pid) for pid in self.catalogue.purposes)
        self._on_deletion(self.now())
        log.info("household page: local data deletion requested")
        return Outcome(changes=(), purged=purged)

    # -- pending requests from the support centre -------------------------------------------

    def add_pending_request(self, *, purpose: str, recipient: str, tier: str, hours: int,
                            reference: str) -> PendingRequest:
        """Hook for the daemon: a support-centre request arrived; the household decides."""
        request = PendingRequest(request_id=secrets.token_urlsafe(12), purpose=purpose,
                                 recipient=recipient, tier=tier, hours=hours,
                                 reference=reference, received=self.now())
        self._pending[request.request_id] = request
        return request

    def pending_requests(self) -> list[PendingRequest]:
        """Requests waiting for the household, oldest first."""
        return sorted(self._pending.values(), key=lambda r: r.received)

    def accept_request(self, request_id: str) -> Outcome:
        """Grant what a pending request asked for, time-boxed, citing its reference."""
        request = self._pending.get(request_id)
        if request is None:
            raise ConsentError("no such pending request")
        outcome = self.set_grant(request.purpose, request.recipient, request.tier,
                                 hours=request.hours, reference=request.reference)
        del self._pending[request_id]
        return outcome

    def decline_request(self, request_id: str) -> None:
        """Forget a pending request; nothing is granted."""
        if self._pending.pop(request_id, None) is None:
            raise ConsentError("no such pending request")

    # -- internals --------------------------------------------------------------------------

    def _apply(self, changes: Sequence[ConsentChange]) -> Outcome:
        purged = 0
        for change in changes:
            spec = change.purge
            if spec.tiers:
                purged += self._outbox.purge(spec.purpose, spec.recipient,
                                             sorted(t.value for t in spec.tiers))
            self._on_change(change)
        return Outcome(changes=tuple(changes), purged=purged)


def _grant_json(grant: Grant) -> dict[str, Any]:
    return {"purpose": grant.purpose, "recipient": grant.recipient, "tier": grant.tier.value,
            "since": grant.since.isoformat(),
            "expires": None if grant.expires is None else grant.expires.isoformat(),
            "record_id": grant.record_id}


def _pending_json(request: PendingRequest) -> dict[str, Any]:
    return {"request_id": request.request_id, "purpose": request.purpose,
            "recipient": request.recipient, "tier": request.tier, "hours": request.hours,
            "reference": request.reference, "received": request.received.isoformat()}
