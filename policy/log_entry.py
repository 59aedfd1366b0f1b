"""One release of the release log ("what left my home"), as policy hands it on.

:class:`LogEntry` is a release line of :class:`policy.rights.ReleaseLog` (``release-log.jsonl``)
with its status, which the event lines naming its ``seq`` decide. :meth:`LogEntry.from_json`
reads a release line, :meth:`LogEntry.to_json` gives it back key for key (the file's format:
times as :func:`policy.records.utc_iso` writes them, ``seq`` absent in lines older than that
tracking); :meth:`LogEntry.as_dict` adds the status for the export and the provision-records
download.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from policy.records import utc_iso

STATUS_SENT, STATUS_QUEUED, STATUS_WITHDRAWN = "sent", "queued", "withdrawn"
STATUS_POSSIBLY_SENT = "possibly_sent"
STATUSES = frozenset({STATUS_SENT, STATUS_QUEUED, STATUS_WITHDRAWN, STATUS_POSSIBLY_SENT})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    """One release: what it held, for whom, under which consent, and what became of it."""

    logged_at: datetime
    """When it was committed to the outbox (and logged)."""
    subject: str
    """The site (the household) it is about."""
    purpose: str
    recipient: str
    recipient_kind: str
    """``company``, ``third_party`` (which makes it a record of provision) or ``unknown``."""
    recipient_name: Mapping[str, str] | None
    """The recipient's name in the catalogue (``ja``, ``en``); None if it was not listed."""
    tier: str
    start: datetime
    """The start of its window."""
    end: datetime
    points: tuple[str, ...]
    """The point names it held (``pv.power``, ...), sorted: which items, never their values."""
    categories: tuple[str, ...]
    records: int
    """How many records it held: one per point of each device, over its window."""
    size: int
    """Bytes of its envelope (``bytes`` in the file)."""
    consent_record_id: str
    consent_record_hash: str
    catalogue_version: str
    provision_record: bool
    """A release to a third party: an APPI Art. 29 record of provision (kept 3 years)."""
    legal_basis: tuple[str, ...]
    seq: int | None = None
    """The sequence number of its envelope (None in entries older than that tracking)."""
    status: str = STATUS_QUEUED
    """``sent``, ``possibly_sent``, ``withdrawn`` or ``queued``."""
    sent_at: datetime | None = None
    """When the broker's acknowledgement was logged (status sent; None in untracked lines)."""
    possibly_sent_at: datetime | None = None
    """When the outbox removed it unacknowledged after handing it to the MQTT client."""
    possibly_sent_reason: str | None = None
    withdrawn_at: datetime | None = None
    """When the outbox removed it unsent."""
    withdrawn_reason: str | None = None

    @classmethod
    def from_json(cls, line: Mapping[str, Any]) -> LogEntry:
        """A release line of the file (status queued); :class:`ValueError` names a key missing,
        unknown or of the wrong type."""
        if unknown := sorted(set(line) - _KEYS):
            raise ValueError(f"release entry has an unknown key {unknown[0]!r}")
        name: dict[str, Any] | None = _get(line, "recipient_name", (dict, type(None)))
        if name is not None and not all(isinstance(v, str) for v in name.values()):
            raise ValueError("release entry key 'recipient_name' is not a name in each language")
        return cls(
            logged_at=_time(line, "logged_at"), subject=_get(line, "subject", str),
            purpose=_get(line, "purpose", str), recipient=_get(line, "recipient", str),
            recipient_kind=_get(line, "recipient_kind", str), recipient_name=name,
            tier=_get(line, "tier", str), start=_time(line, "start"), end=_time(line, "end"),
            points=_strs(line, "points"), categories=_strs(line, "categories"),
            records=_int(line, "records"), size=_int(line, "bytes"),
            consent_record_id=_get(line, "consent_record_id", str),
            consent_record_hash=_get(line, "consent_record_hash", str),
            catalogue_version=_get(line, "catalogue_version", str),
            provision_record=_get(line, "provision_record", bool),
            legal_basis=_strs(line, "legal_basis"),
            seq=_int(line, "seq") if "seq" in line else None)

    def to_json(self) -> dict[str, Any]:
        """The release line as the file holds it (no status: event lines say that)."""
        out: dict[str, Any] = {
            "logged_at": utc_iso(self.logged_at), "subject": self.subject,
            "purpose": self.purpose, "recipient": self.recipient,
            "recipient_kind": self.recipient_kind,
            "recipient_name": None if self.recipient_name is None else dict(self.recipient_name),
            "tier": self.tier, "start": utc_iso(self.start), "end": utc_iso(self.end),
            "points": list(self.points), "categories": list(self.categories),
            "records": self.records, "bytes": self.size,
            "consent_record_id": self.consent_record_id,
            "consent_record_hash": self.consent_record_hash,
            "catalogue_version": self.catalogue_version,
            "provision_record": self.provision_record, "legal_basis": list(self.legal_basis),
        }
        if self.seq is not None:
            out["seq"] = self.seq
        return dict(sorted(out.items()))  # the file's order: its lines are written sorted

    def as_dict(self) -> dict[str, Any]:
        """The line with its ``status`` and the time (and reason) of what decided it, as the
        export and the provision-records download list it."""
        out = self.to_json() | {"status": self.status}
        for key in ("sent_at", "possibly_sent_at", "withdrawn_at"):
            if (moment := getattr(self, key)) is not None:
                out[key] = utc_iso(moment)
        for key in ("possibly_sent_reason", "withdrawn_reason"):
            if (reason := getattr(self, key)) is not None:
                out[key] = reason
        return out


_KEYS = frozenset({
    "logged_at", "subject", "purpose", "recipient", "recipient_kind", "recipient_name", "tier",
    "start", "end", "points", "categories", "records", "bytes", "consent_record_id",
    "consent_record_hash", "catalogue_version", "provision_record", "legal_basis", "seq"})


def _get(line: Mapping[str, Any], key: str, kind: type[_T] | tuple[type, ...]) -> _T:
    if key not in line:
        raise ValueError(f"release entry lacks key {key!r}")
    value = line[key]
    if not isinstance(value, kind):
        raise ValueError(f"release entry key {key!r} has the wrong type")
    return value  # type: ignore[return-value]  # the isinstance above checks it


def _int(line: Mapping[str, Any], key: str) -> int:
    value = _get(line, key, int)
    if isinstance(value, bool):
        raise ValueError(f"release entry key {key!r} is not a whole number")
    return value


def _strs(line: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = _get(line, key, list)
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"release entry key {key!r} is not a list of strings")
    return tuple(values)


def _time(line: Mapping[str, Any], key: str) -> datetime:
    """An ISO 8601 time with its offset (policy never guesses a time zone)."""
    text = _get(line, key, str)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"release entry key {key!r} is not an ISO 8601 time") from exc
    if moment.utcoffset() is None:
        raise ValueError(f"release entry key {key!r} has no time zone")
    return moment
