"""What waits for the household's decision: support-centre grant requests (kept across a
restart in their own file) and re-agreements after a catalogue update (kept by the ledger).

A ``grant_request`` command never grants anything by itself: it waits here until the household
accepts or declines it on the page, or until it expires. The requests are written to
``<state_dir>/pending-requests.json`` (mode 0600, atomically) at every change, so an update or a
power cut does not silently drop a request the support centre is waiting on. They hold no
measurement and no personal data: purpose, recipient, tier, hours, the centre's reference.

File format (version 1)::

    {"v": 1, "requests": [{"request_id", "purpose", "recipient", "tier", "hours",
                           "reference", "received", "expires"}, ...]}
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.web import statefile

log = logging.getLogger(__name__)

_VERSION = 1
LIFETIME = timedelta(days=7)
"""How long a request waits when its sender gives no lifetime (the longest a command lives)."""
CAPACITY = 32
"""Requests kept at most; the oldest gives way (commands are signed and rate-limited anyway)."""


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
    expires: datetime

    def to_json(self) -> dict[str, Any]:
        """The stored (and exported) form: times as ISO 8601."""
        data = asdict(self)
        data["received"], data["expires"] = self.received.isoformat(), self.expires.isoformat()
        return data

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> PendingRequest:
        """From :meth:`to_json`; anything else raises :class:`statefile.DamagedFile`."""
        texts = ("request_id", "purpose", "recipient", "tier", "reference")
        if not all(isinstance(row[name], str) for name in texts):
            raise statefile.DamagedFile(f"a pending request has a non-text field: {sorted(row)}")
        if type(row["hours"]) is not int:
            raise statefile.DamagedFile("a pending request's hours is not a whole number")
        return cls(**{name: row[name] for name in texts}, hours=row["hours"],
                   received=statefile.when(row["received"]),
                   expires=statefile.when(row["expires"]))


@dataclass(frozen=True, kw_only=True)
class AgreementRequest:
    """A purpose × recipient a catalogue update widened: the household agrees again or not.

    It lives in the consent ledger (the latest record's ``needs_agreement``), so it survives a
    restart and ends with the household's next change of that grant. ``changes`` is what the
    update widened (:meth:`policy.catalogue.Widening.as_dict`, or ``{"purpose": true}`` /
    ``{"recipients": [...]}`` for something new); ``current`` the tier in force now (off
    while paused); ``offered`` the tier agreeing sets (the one the household had, else the
    purpose's default, never finer than the new finest tier); ``required``: a contract-required
    purpose, which keeps its tier and can only be acknowledged.
    """

    purpose: str
    recipient: str
    catalogue_version: str
    changes: Mapping[str, Any]
    current: str | None
    offered: str
    required: bool


class PendingRequests:
    """The waiting requests, written to ``path`` on every change (None: memory only)."""

    def __init__(self, path: Path | None, *, clock: Callable[[], datetime]) -> None:
        self._path = path
        self._clock = clock
        self._items: dict[str, PendingRequest] = {}
        if path is not None:
            self._items = statefile.load(path, _VERSION, _parse) or {}
            self.live()  # forget what expired while the daemon was down

    def add(self, *, purpose: str, recipient: str, tier: str, hours: int, reference: str,
            lifetime: timedelta) -> PendingRequest:
        """Record a new request (written before it is returned)."""
        now = self._clock()
        request = PendingRequest(request_id=secrets.token_urlsafe(12), purpose=purpose,
                                 recipient=recipient, tier=tier, hours=hours,
                                 reference=reference, received=now, expires=now + lifetime)
        self._items[request.request_id] = request
        while len(self._items) > CAPACITY:
            oldest = min(self._items.values(), key=lambda r: r.received)
            del self._items[oldest.request_id]
            log.warning("pending support request %s dropped: more than %d waiting",
                        oldest.reference, CAPACITY)
        self._save()
        return request

    def live(self) -> list[PendingRequest]:
        """Requests still waiting, oldest first; expired ones are forgotten (and written)."""
        now = self._clock()
        expired = [r for r in self._items.values() if now >= r.expires]
        for request in expired:
            del self._items[request.request_id]
            log.info("pending support request %s expired unanswered", request.reference)
        if expired:
            self._save()
        return sorted(self._items.values(), key=lambda r: r.received)

    def get(self, request_id: str) -> PendingRequest | None:
        """The request if it is still waiting."""
        request = self._items.get(request_id)
        return None if request is None or self._clock() >= request.expires else request

    def remove(self, request_id: str) -> PendingRequest | None:
        """Forget a request (accepted or declined); None if it was not waiting."""
        request = self.get(request_id)
        if request is not None:
            del self._items[request_id]
            self._save()
        return request

    def _save(self) -> None:
        if self._path is not None:
            rows = [r.to_json() for r in sorted(self._items.values(), key=lambda r: r.received)]
            statefile.save(self._path, {"v": _VERSION, "requests": rows})


def _parse(data: dict[str, Any]) -> dict[str, PendingRequest]:
    requests = [PendingRequest.from_json(row) for row in data["requests"]]
    return {r.request_id: r for r in requests}
