"""Consent records: the ledger's hash-chained entries, grants, and the changes the agent acts on.

Each record is a plain JSON object carrying the ISO/IEC TS 27560 (Kantara consent receipt)
fields: ``record_id``, ``subject`` (the site pseudonym), ``purpose``, ``legal_basis``,
``categories``, ``recipient``, ``tier``, validity (``valid_from``/``valid_until``),
``collection_method`` (the source of the change) and ``reference``, ``policy_version`` and
the catalogue it was made under; the ledger itself is the event history. ``hash`` is the sha256
of the record's canonical JSON without ``hash`` and ``signature`` — which includes
``prev_hash``, so each hash covers the whole chain before it. ``signature`` (optional) signs the
32-byte hash digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from policy.catalogue import canonical_json
from policy.errors import ConsentError
from policy.tiers import Tier, not_allowed

GENESIS = "0" * 64
Sign = Callable[[bytes], bytes]
Verify = Callable[[bytes, bytes], bool]


class Source(StrEnum):
    """Who made a consent change (the record's collection method)."""

    HOUSEHOLD_PAGE = "household_page"
    INSTALLER = "installer"
    SUPPORT_REQUEST = "support_request"
    BACKEND_COMMAND = "backend_command"
    FACTORY_DEFAULT = "factory_default"
    CATALOGUE_UPDATE = "catalogue_update"
    EXPIRY = "expiry"


class Event(StrEnum):
    """What a record did to its grant."""

    INITIAL = "initial"  # the default state of a purpose × recipient, first written
    GIVEN = "given"  # off → a tier
    CHANGED = "changed"  # one tier → another
    WITHDRAWN = "withdrawn"  # a tier → off
    EXPIRED = "expired"  # a time-boxed grant ran out
    RESET = "reset"  # (older ledgers) a material catalogue change put back the default
    PAUSED = "paused"  # a catalogue update widened the purpose: off until agreed again
    KEPT = "kept"  # a catalogue update widened a contract-required purpose: tier kept, told
    CONTRACT_END = "contract_end"  # the contract ended: required purposes may go off


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentRecord:
    """One ledger record, read-only; :attr:`data` is the full stored JSON object."""

    seq: int
    record_id: str
    hash: str
    event: Event
    timestamp: datetime
    purpose: str
    recipient: str
    tier: Tier | None
    previous_tier: Tier | None
    valid_until: datetime | None
    source: Source
    needs_agreement: bool
    catalogue_version: str
    data: Mapping[str, Any]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsentRecord:
        until = data["valid_until"]
        return cls(seq=data["seq"], record_id=data["record_id"], hash=data["hash"],
                   event=Event(data["event"]), timestamp=datetime.fromisoformat(data["timestamp"]),
                   purpose=data["purpose"], recipient=data["recipient"]["id"],
                   tier=_tier(data["tier"]), previous_tier=_tier(data["previous_tier"]),
                   valid_until=None if until is None else datetime.fromisoformat(until),
                   source=Source(data["collection_method"]),
                   needs_agreement=data["needs_agreement"],
                   catalogue_version=data["catalogue_version"],
                   data=MappingProxyType(dict(data)))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """An active grant: ``purpose`` may go to ``recipient`` at ``tier`` from ``since``.

    ``expires`` (exclusive) is when it stops by itself; ``None`` means until changed.
    """

    purpose: str
    recipient: str
    tier: Tier
    since: datetime
    expires: datetime | None
    record_id: str
    record_hash: str
    catalogue_version: str

    def active(self, now: datetime) -> bool:
        return self.expires is None or now < self.expires


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeSpec:
    """Queued items of ``purpose`` to ``recipient`` at any of ``tiers`` must be dropped."""

    purpose: str
    recipient: str
    tiers: frozenset[Tier]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentChange:
    """A committed change: the record, what to purge, and the message for the backend."""

    record: ConsentRecord
    purge: PurgeSpec
    item: dict[str, Any]  # JSON-able; the agent signs and sends it before anything else


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of ``record`` without ``hash`` and ``signature``."""
    body = {k: v for k, v in record.items() if k not in ("hash", "signature")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def seal(record: dict[str, Any], sign: Sign | None) -> dict[str, Any]:
    """Add ``hash`` and, if a signer is given, ``signature`` (hex) to a new record."""
    record["hash"] = record_hash(record)
    record["signature"] = None if sign is None else sign(bytes.fromhex(record["hash"])).hex()
    return record


def change_for(record: ConsentRecord) -> ConsentChange:
    """The purge spec and backend item that follow from a committed record."""
    purge = PurgeSpec(purpose=record.purpose, recipient=record.recipient,
                      tiers=not_allowed(record.tier))
    data = record.data
    item = {
        "type": "consent_change", "v": 1, "subject": data["subject"], "seq": record.seq,
        "record_id": record.record_id, "record_hash": record.hash,
        "prev_hash": data["prev_hash"], "timestamp": data["timestamp"],
        "event": record.event.value, "purpose": record.purpose,
        "recipient": record.recipient, "recipient_kind": data["recipient"]["kind"],
        "tier": data["tier"], "previous_tier": data["previous_tier"],
        "valid_until": data["valid_until"], "source": record.source.value,
        "reference": data["reference"], "catalogue_version": record.catalogue_version,
        "catalogue_hash": data["catalogue_hash"], "needs_agreement": record.needs_agreement,
        "purge_tiers": sorted(purge.tiers), "signature": data["signature"],
    }
    return ConsentChange(record=record, purge=purge, item=item)


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC; refuses naive datetimes (policy never guesses a time zone)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConsentError(f"time {moment!r} has no time zone; policy needs aware UTC times")
    return moment.astimezone(UTC).isoformat()


def _tier(value: str | None) -> Tier | None:
    return None if value is None else Tier(value)

