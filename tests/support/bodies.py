"""Envelope bodies as the agent builds them (agent/wire/schemas/*.schema.json), for sealing in
tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.wire import envelope
from policy.release import Record, Release
from policy.tiers import Tier

HASH = "ab" * 32


def release_body(header: envelope.Header, points: tuple[str, ...] = ("pv.energy",),
                 value: float = 1.0) -> dict[str, Any]:
    """A data body that agrees with ``header`` (purpose, tier, window, consent, catalogue)."""
    assert header.window_start is not None and header.window_end is not None
    records = tuple(Record(device="inverter", point=p, kind="energy", unit="Wh",
                           values={"delta": value}, coverage=1.0, good=30, bad=0)
                    for p in points)
    return Release(purpose=header.purpose, recipient="company", tier=Tier(header.tier),
                   start=datetime.fromtimestamp(header.window_start, UTC),
                   end=datetime.fromtimestamp(header.window_end, UTC), records=records,
                   missing=(), consent_record_id=header.consent_id,
                   consent_record_hash=header.consent_hash,
                   catalogue_version=header.catalogue).to_dict()


def consent_body(*, purpose: str = "service", tier: str | None = None,
                 event: str = "withdrawn", record_id: str = "r-9") -> dict[str, Any]:
    return {"type": "consent_change", "v": 1, "subject": "s-0002", "seq": 3,
            "record_id": record_id, "record_hash": HASH, "prev_hash": "cd" * 32,
            "timestamp": "2026-01-02T03:04:05+00:00", "event": event, "purpose": purpose,
            "recipient": "company", "recipient_kind": "company", "tier": tier,
            "previous_tier": "30min", "valid_until": None, "source": "household_page",
            "reference": None, "catalogue_version": "test", "catalogue_hash": "ef" * 32,
            "needs_agreement": False, "purge_tiers": ["1min", "raw"], "signature": None}


def deletion_body() -> dict[str, Any]:
    return {"type": "deletion_request", "v": 1, "subject": "s-0002",
            "requested_at": "2026-01-03T00:00:00+00:00", "source": "household_page",
            "reference": None, "scope": "all_household_data", "contract_ended": False,
            "ledger_head": {"count": 4, "hash": HASH}}


def event_body() -> dict[str, Any]:
    return {"type": "command_result", "v": 1, "command_id": "0f1e2d3c4b5a6978",
            "command_type": "diagnostics", "status": "done", "reason": None, "result": {},
            "completed_at": "2026-01-03T00:00:01+00:00"}
