"""The household's rights on the device (seed 2(6); APPI Arts. 29, 33, 35).

* :class:`ReleaseLog` — "what left my home": one entry per release (purpose, recipient, tier,
  window, points, record count, bytes, consent record). Entries for third-party recipients are
  the APPI Art. 29 records of provision, kept 3 years; other entries 1 year.
* :func:`export_all` — disclosure: everything policy holds, as one JSON-able dict.
* :func:`delete_household_data` — erasure: clears what policy holds, switches consent off and
  returns the deletion-request item for the backend. Consent history and provision records
  stay: they are the evidence of what was consented and provided (Art. 29 obliges keeping
  them); they hold no measurements.
* Suspension of use / of third-party provision: :meth:`Ledger.suspend`,
  :meth:`Ledger.stop_third_party`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from policy.catalogue import Catalogue
from policy.errors import LedgerIntegrityError
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.records import ConsentChange, Source, utc_iso
from policy.release import Release
from policy.storage import atomic_write, fsync_dir

PROVISION_RETENTION = timedelta(days=3 * 365 + 1)  # APPI Art. 29, enforcement rules: 3 years
LOG_RETENTION = timedelta(days=365)


class ReleaseLog:
    """Append-only JSON-lines log of releases. A torn last line (power cut) is dropped on open."""

    def __init__(self, path: str | Path, catalogue: Catalogue, subject: str) -> None:
        self._path = Path(path)
        self._catalogue = catalogue
        self._subject = subject
        self._repair()

    def set_catalogue(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def append(self, release: Release, *, size: int, now: datetime) -> dict[str, Any]:
        """Record one release that was handed to the uplink (``size``: bytes on the wire)."""
        purpose = self._catalogue.purposes[release.purpose]
        recipient = purpose.recipient(release.recipient)
        kind = recipient.kind if recipient else "unknown"
        entry = {
            "logged_at": utc_iso(now), "subject": self._subject, "purpose": release.purpose,
            "recipient": release.recipient, "recipient_kind": kind,
            "recipient_name": recipient.name.model_dump() if recipient else None,
            "tier": release.tier.value, "start": utc_iso(release.start),
            "end": utc_iso(release.end), "points": sorted(release.points),
            "categories": sorted({c for p in release.points
                                  if (c := self._catalogue.category_of(p)) is not None}),
            "records": len(release.records), "bytes": size,
            "consent_record_id": release.consent_record_id,
            "consent_record_hash": release.consent_record_hash,
            "catalogue_version": release.catalogue_version,
            "provision_record": kind == "third_party",
            "legal_basis": list(purpose.legal_basis.articles),
        }
        line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def entries(self, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Entries, oldest first (optionally only those logged at or after ``since``)."""
        if not self._path.exists():
            return
        with self._path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    entry: dict[str, Any] = json.loads(line)
                except ValueError as exc:
                    raise LedgerIntegrityError(str(self._path), f"line {number}",
                                               "not valid JSON") from exc
                if since is None or datetime.fromisoformat(entry["logged_at"]) >= since:
                    yield entry

    def provision_records(self) -> list[dict[str, Any]]:
        """The APPI Art. 29 records: releases to third parties."""
        return [e for e in self.entries() if e["provision_record"]]

    def prune(self, now: datetime) -> int:
        """Drop entries past retention; returns how many were dropped."""
        def keep(e: dict[str, Any]) -> bool:
            limit = PROVISION_RETENTION if e["provision_record"] else LOG_RETENTION
            return datetime.fromisoformat(e["logged_at"]) >= now - limit
        return self._rewrite(keep)

    def forget_household(self) -> int:
        """Deletion: drop every entry except the provision records the law says to keep."""
        return self._rewrite(lambda e: bool(e["provision_record"]))

    def _rewrite(self, keep: Any) -> int:
        entries = list(self.entries())
        kept = [e for e in entries if keep(e)]
        if len(kept) != len(entries):
            atomic_write(self._path, "".join(
                json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in kept)
                .encode("utf-8"))
        return len(entries) - len(kept)

    def _repair(self) -> None:
        if not self._path.exists():
            return
        data = self._path.read_bytes()
        if data and not data.endswith(b"\n"):  # an append cut short: it never happened
            with self._path.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(self._path.parent)


def export_all(*, ledger: Ledger, now: datetime, release_log: ReleaseLog | None = None,
               minimiser: Minimiser | None = None) -> dict[str, Any]:
    """Disclosure (APPI Art. 33, incl. 33(5) for provision records): everything policy holds."""
    cat = ledger.catalogue
    count, head = ledger.head()
    log = [] if release_log is None else list(release_log.entries())
    return {
        "format": "hems-export/1", "generated_at": utc_iso(now), "subject": ledger.subject,
        "catalogue": {"version": cat.version, "hash": cat.content_hash,
                      "content": cat.spec.model_dump(mode="json")},
        "consent": {
            "current": [rec.as_dict() for _, rec in sorted(ledger.state().items())],
            "history": [rec.as_dict() for rec in ledger.history()],
            "head": {"count": count, "hash": head},
        },
        "release_log": log,
        "provision_records": [e for e in log if e["provision_record"]],
        "held": None if minimiser is None else minimiser.held(),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Deletion:
    """Result of :func:`delete_household_data`: the backend item and the consent changes
    (each with its purge spec and consent-change item, to deliver before the deletion)."""

    item: dict[str, Any]
    changes: list[ConsentChange]


def delete_household_data(*, ledger: Ledger, now: datetime, source: Source | str,
                          reference: str | None = None, minimiser: Minimiser | None = None,
                          release_log: ReleaseLog | None = None,
                          end_contract: bool = False) -> Deletion:
    """Erasure (APPI Art. 35): consent off (all optional purposes; everything with
    ``end_contract``), local data policy holds cleared, and a deletion request for the backend.
    The agent wipes the rest (outbox, caches)."""
    if end_contract:
        changes = ledger.end_contract(source=source, reference=reference, now=now)
    else:
        changes = ledger.suspend(source=source, reference=reference, now=now)
    if minimiser is not None:
        minimiser.clear()
    if release_log is not None:
        release_log.forget_household()
    count, head = ledger.head()
    item = {"type": "deletion_request", "v": 1, "subject": ledger.subject,
            "requested_at": utc_iso(now), "source": str(Source(source)),
            "reference": reference, "scope": "all_household_data",
            "contract_ended": end_contract, "ledger_head": {"count": count, "hash": head}}
    return Deletion(item=item, changes=changes)
