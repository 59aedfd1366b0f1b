"""The household's rights on the device (seed 2(6); APPI Arts. 29, 33, 35).

* :class:`ReleaseLog` — "what left my home": one entry per release (purpose, recipient, tier,
  window, points, record count, bytes, consent record, envelope sequence number), then whether
  the broker acknowledged it, the outbox removed it after handing it to the MQTT client but
  before its acknowledgement (it may have left), or the outbox withdrew it unsent. Entries for
  third-party recipients that left or may have left are the APPI Art. 29 records of provision,
  kept 3 years; other entries 1 year.
* :func:`export_all` — disclosure: everything policy holds, as one JSON-able dict.
* :func:`delete_household_data` — erasure: clears what policy holds, switches consent off and
  returns the deletion-request item for the backend. Consent history and provision records
  stay: they are the evidence of what was consented and provided (Art. 29 obliges keeping
  them); they hold no measurements.
* Suspension of use / of third-party provision: :meth:`Ledger.suspend`,
  :meth:`Ledger.stop_third_party`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from policy import strict_json
from policy.catalogue import Catalogue
from policy.errors import LedgerIntegrityError
from policy.ledger import Ledger
from policy.log_entry import STATUS_POSSIBLY_SENT as STATUS_POSSIBLY_SENT
from policy.log_entry import STATUS_QUEUED as STATUS_QUEUED
from policy.log_entry import STATUS_SENT as STATUS_SENT
from policy.log_entry import STATUS_WITHDRAWN as STATUS_WITHDRAWN
from policy.log_entry import LogEntry as LogEntry
from policy.minimise import Minimiser
from policy.records import ConsentChange, Source, utc_iso
from policy.release import Release
from policy.storage import atomic_write, fsync_dir
from policy.strict_json import JSONRefused

PROVISION_RETENTION = timedelta(days=3 * 365 + 1)  # APPI Art. 29, enforcement rules: 3 years
LOG_RETENTION = timedelta(days=365)
EVENT_SENT, EVENT_POSSIBLY_SENT, EVENT_WITHDRAWN = "sent", "possibly_sent", "withdrawn"
# What may have left the home: acknowledged by the broker, or published and never acknowledged.
LEFT_STATUSES = frozenset({STATUS_SENT, STATUS_POSSIBLY_SENT})
WITHDRAW_REASONS = frozenset({"consent_change", "expiry", "erasure", "outbox_full"})


class ReleaseLog:
    """Append-only JSON-lines log of releases and of what became of them.

    Four kinds of line; only retention (:meth:`prune`) and erasure rewrite the file:

    * a release (purpose, recipient, tier, window, points, bytes, consent record, ``seq``: the
      sequence number of its envelope), appended once the envelope is committed to the outbox.
      It is then queued: committed, not yet gone. Its :meth:`note` is committed with the
      envelope, so an entry a power cut kept from the log is appended at the next start
      (:meth:`append_noted` with ``only_missing``): every release that can leave is listed.
    * ``{"event": "sent", "seqs": [...]}``: the broker acknowledged those envelopes. Written
      before the outbox forgets them, so a power cut in between only means a second send.
    * ``{"event": "possibly_sent", "seqs": [...], "reason": ...}``: the outbox removed them (a
      consent change, an expiry, erasure, or the outbox full) after the publisher had handed
      them to the MQTT client and before the broker acknowledged them: the PUBLISH may have
      reached the broker, which may deliver it. Written before the delete.
    * ``{"event": "withdrawn", "seqs": [...], "reason": ...}``: the outbox removed them unsent
      (never handed to the MQTT client), for the same reasons. Written before the delete.

    A release is *sent* once a sent line names it (also after a removal: its acknowledgement
    still came, so it did leave), *possibly sent* if a possibly-sent line names it and no sent
    line does, *withdrawn* if only a withdrawal names it, else *queued*. Sent and possibly sent
    releases are listed as released (:meth:`released`, :meth:`provision_records`): a record of
    provision must not leave out what may have been provided. Lines without ``seq`` predate
    this tracking and count as sent. A torn last line (power cut) is dropped on open.
    """

    def __init__(self, path: str | Path, catalogue: Catalogue, subject: str) -> None:
        self._path = Path(path)
        self._catalogue = catalogue
        self._subject = subject
        self._unsynced = False
        self._failed = False  # a write failed: the file may end in part of it
        self._repair()

    def set_catalogue(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def append(self, release: Release, *, size: int, now: datetime,
               seq: int | None = None) -> LogEntry:
        """Record one release whose envelope (``size`` bytes, sequence ``seq``) was committed."""
        return self.append_many([(release, size, seq)], now=now)[0]

    def append_many(self, releases: Sequence[tuple[Release, int, int | None]], *,
                    now: datetime) -> list[LogEntry]:
        """Record releases committed together (release, bytes, seq): one write, one fsync."""
        return self.append_noted([(seq, size, self.note(release, now=now))
                                  for release, size, seq in releases])

    def note(self, release: Release, *, now: datetime) -> str:
        """What the entry of ``release``, logged at ``now``, needs besides its envelope's size
        and sequence number, for the outbox to commit with the envelope: compact JSON with
        short keys (about 250 bytes: a 620-byte envelope's row then still fits a 1 KiB page,
        ``bench_outbox_writes``). ``at`` logged, ``p`` purpose, ``r`` recipient, ``k`` its
        kind (which makes the entry a provision record), ``t`` tier, ``w`` window start and
        end (times in epoch seconds), ``pts`` points, ``n`` records, ``c`` consent record id
        and hash, ``v`` catalogue version. Names, categories and legal basis are read from the
        catalogue when the entry is written."""
        purpose = self._catalogue.purposes.get(release.purpose)
        recipient = purpose.recipient(release.recipient) if purpose else None
        return json.dumps({
            "at": _epoch(now), "p": release.purpose, "r": release.recipient,
            "k": recipient.kind if recipient else "unknown", "t": release.tier.value,
            "w": [_epoch(release.start), _epoch(release.end)], "pts": sorted(release.points),
            "n": len(release.records),
            "c": [release.consent_record_id, release.consent_record_hash],
            "v": release.catalogue_version,
        }, ensure_ascii=False, separators=(",", ":"))

    def append_noted(self, releases: Sequence[tuple[int | None, int, str]], *,
                     only_missing: bool = False) -> list[LogEntry]:
        """Record committed releases, each (seq, bytes, :meth:`note`): one write, one fsync.

        With ``only_missing`` (at start-up, from what the outbox holds), and always after a
        failed write, those whose sequence number the log lists already are skipped: none is
        listed twice. Returns the entries written."""
        if only_missing or self._failed:
            if self._failed:
                self._repair()  # a torn last line would not parse
            listed = self.seqs()
            releases = [r for r in releases if r[0] not in listed]
        entries = [self._entry(note, size, seq) for seq, size, note in releases]
        if entries:
            self._write([e.to_json() for e in entries], sync=True)
        return entries

    def seqs(self) -> set[int]:
        """Sequence numbers of the releases listed (a read of the whole file)."""
        return {line["seq"] for line in self._lines() if "event" not in line and "seq" in line}

    def mark_sent(self, seqs: Collection[int], *, now: datetime, sync: bool = True) -> None:
        """The broker acknowledged these envelopes. With ``sync=False`` the line is written now
        and made durable by the next :meth:`sync` (the outbox calls it before it deletes)."""
        self._write([self._event(EVENT_SENT, seqs, now)], sync=sync)

    def mark_withdrawn(self, seqs: Collection[int], *, reason: str, now: datetime) -> None:
        """These envelopes are removed from the outbox unsent (call before the delete)."""
        self._write([self._removal(EVENT_WITHDRAWN, seqs, reason, now)], sync=True)

    def mark_possibly_sent(self, seqs: Collection[int], *, reason: str,
                           now: datetime) -> None:
        """These envelopes are removed from the outbox (call before the delete) after they were
        handed to the MQTT client and before the broker acknowledged them: they may have left.
        ``reason`` is why they were removed, as for :meth:`mark_withdrawn`."""
        self._write([self._removal(EVENT_POSSIBLY_SENT, seqs, reason, now)], sync=True)

    def sync(self) -> None:
        """Make lines written with ``sync=False`` durable."""
        if self._unsynced:
            fd = os.open(self._path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._unsynced = False

    def entries(self, *, since: datetime | None = None) -> Iterator[LogEntry]:
        """Release entries, oldest first, each with its ``status`` (sent, possibly_sent,
        queued, withdrawn) and ``sent_at``, or ``possibly_sent_at`` and
        ``possibly_sent_reason`` (when and why the outbox removed it unacknowledged), or
        ``withdrawn_at`` and ``withdrawn_reason``; optionally only those logged at or after
        ``since``. A release line that does not read raises :class:`LedgerIntegrityError`
        naming its line."""
        lines = self._lines()
        seen: dict[str, dict[int, tuple[str, str]]] = {
            EVENT_SENT: {}, EVENT_POSSIBLY_SENT: {}, EVENT_WITHDRAWN: {}}
        for line in lines:
            if (found := seen.get(line.get("event", ""))) is not None:
                for seq in line["seqs"]:
                    found.setdefault(seq, (line["logged_at"], line.get("reason", "")))
        for number, line in enumerate(lines, start=1):
            if "event" in line:
                continue
            entry = self._read(number, line)
            if since is None or entry.logged_at >= since:
                yield _with_status(entry, seen)

    def released(self) -> list[LogEntry]:
        """Releases that left the home or may have: the broker acknowledged them (``sent``),
        or they were published and removed before an acknowledgement (``possibly_sent``)."""
        return [e for e in self.entries() if e.status in LEFT_STATUSES]

    def provision_records(self) -> list[LogEntry]:
        """The APPI Art. 29 records: releases to third parties that left the home or may have
        (each entry's ``status`` says which)."""
        return [e for e in self.released() if e.provision_record]

    def prune(self, now: datetime) -> int:
        """Drop entries past retention; returns how many were dropped."""
        def keep(e: LogEntry) -> bool:
            limit = PROVISION_RETENTION if e.provision_record else LOG_RETENTION
            return e.logged_at >= now - limit
        return self._rewrite(keep)

    def forget_household(self) -> int:
        """Deletion: drop every entry except the provision records the law says to keep."""
        return self._rewrite(lambda e: e.provision_record)

    def _entry(self, note: str, size: int, seq: int | None) -> LogEntry:
        facts = strict_json.loads(note)
        purpose = self._catalogue.purposes.get(facts["p"])
        recipient = purpose.recipient(facts["r"]) if purpose else None
        kind, points = facts["k"], facts["pts"]
        (start, end), (consent_id, consent_hash) = facts["w"], facts["c"]
        return LogEntry(
            logged_at=_time(facts["at"]), subject=self._subject, purpose=facts["p"],
            recipient=facts["r"], recipient_kind=kind,
            recipient_name=recipient.name.model_dump() if recipient else None,
            tier=facts["t"], start=_time(start), end=_time(end), points=tuple(points),
            categories=tuple(sorted({c for p in points
                                     if (c := self._catalogue.category_of(p)) is not None})),
            records=facts["n"], size=size,
            consent_record_id=consent_id, consent_record_hash=consent_hash,
            catalogue_version=facts["v"], provision_record=kind == "third_party",
            legal_basis=tuple(purpose.legal_basis.articles) if purpose else (), seq=seq)

    def _removal(self, event: str, seqs: Collection[int], reason: str,
                 now: datetime) -> dict[str, Any]:
        if reason not in WITHDRAW_REASONS:
            raise ValueError(f"unknown withdrawal reason {reason!r}; one of "
                             f"{', '.join(sorted(WITHDRAW_REASONS))}")
        return self._event(event, seqs, now) | {"reason": reason}

    def _event(self, event: str, seqs: Collection[int], now: datetime) -> dict[str, Any]:
        return {"event": event, "logged_at": utc_iso(now), "subject": self._subject,
                "seqs": sorted(seqs)}

    def _write(self, lines: Sequence[dict[str, Any]], *, sync: bool) -> None:
        data = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in lines)
        if self._failed:
            self._repair()  # no line is appended to the remains of a failed one
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            view = memoryview(data.encode("utf-8"))
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        except BaseException:
            self._failed = True
            raise
        finally:
            os.close(fd)
        self._failed = False
        self._unsynced = not sync  # an fsync covers every earlier write to the file

    def _lines(self) -> list[dict[str, Any]]:
        if not self._path.exists():
            return []
        lines = []
        with self._path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    lines.append(strict_json.loads(line))
                except JSONRefused as exc:
                    raise LedgerIntegrityError(str(self._path), f"line {number}",
                                               "not valid JSON") from exc
        return lines

    def _read(self, number: int, line: Mapping[str, Any]) -> LogEntry:
        try:
            return LogEntry.from_json(line)
        except ValueError as exc:
            raise LedgerIntegrityError(str(self._path), f"line {number}", str(exc)) from exc

    def _rewrite(self, keep: Callable[[LogEntry], bool]) -> int:
        """Retention and erasure: keep the releases ``keep`` accepts and, of the event lines,
        only the sequence numbers of kept releases. Kept lines are written back as they
        were read."""
        lines = self._lines()
        kept = {number: keep(self._read(number, line))
                for number, line in enumerate(lines, start=1) if "event" not in line}
        kept_seqs = {line.get("seq") for number, line in enumerate(lines, start=1)
                     if kept.get(number)}
        out = []
        for number, line in enumerate(lines, start=1):
            if "event" not in line:
                if kept[number]:
                    out.append(line)
            elif seqs := [s for s in line["seqs"] if s in kept_seqs]:
                out.append(line | {"seqs": seqs})
        if len(out) != len(lines) or out != lines:
            atomic_write(self._path, "".join(
                json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in out)
                .encode("utf-8"))
        return sum(1 for k in kept.values() if not k)

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


def _epoch(moment: datetime) -> int | float:
    """Seconds since the epoch (whole ones as an integer): :func:`_time` gives back exactly what
    :func:`utc_iso` gives for ``moment``."""
    utc_iso(moment)  # refuses a naive time
    stamp = moment.timestamp()
    return int(stamp) if stamp.is_integer() else stamp


def _time(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def withdrawal_reason(change: ConsentChange) -> str:
    """Why a change's outbox purge withdraws queued releases: expiry or a consent change."""
    return "expiry" if change.record.source == Source.EXPIRY else "consent_change"


def _with_status(entry: LogEntry,
                 seen: Mapping[str, Mapping[int, tuple[str, str]]]) -> LogEntry:
    """A release's status from the event lines naming it: sent wins (its acknowledgement came),
    then possibly sent (published, removed unacknowledged), then withdrawn (removed unsent)."""
    seq, replace = entry.seq, dataclasses.replace
    if seq is None:  # logged before envelopes were tracked: counted as sent
        return replace(entry, status=STATUS_SENT)
    if seq in seen[EVENT_SENT]:
        return replace(entry, status=STATUS_SENT,
                       sent_at=datetime.fromisoformat(seen[EVENT_SENT][seq][0]))
    if seq in seen[EVENT_POSSIBLY_SENT]:
        at, reason = seen[EVENT_POSSIBLY_SENT][seq]
        return replace(entry, status=STATUS_POSSIBLY_SENT,
                       possibly_sent_at=datetime.fromisoformat(at), possibly_sent_reason=reason)
    if seq in seen[EVENT_WITHDRAWN]:
        at, reason = seen[EVENT_WITHDRAWN][seq]
        return replace(entry, status=STATUS_WITHDRAWN,
                       withdrawn_at=datetime.fromisoformat(at), withdrawn_reason=reason)
    return entry


def export_all(*, ledger: Ledger, now: datetime, release_log: ReleaseLog | None = None,
               minimiser: Minimiser | None = None) -> dict[str, Any]:
    """Disclosure (APPI Art. 33, incl. 33(5) for provision records): everything policy holds.

    ``release_log`` and ``provision_records`` hold what left the home (``status`` sent) or may
    have (``possibly_sent``: published, then removed before the broker acknowledged it); what
    the outbox still holds (committed, not yet acknowledged) and what was queued and then
    withdrawn unsent are listed apart.
    """
    cat = ledger.catalogue
    count, head = ledger.head()
    log = [] if release_log is None else list(release_log.entries())
    sent = [e.as_dict() for e in log if e.status in LEFT_STATUSES]
    return {
        "format": "hems-export/1", "generated_at": utc_iso(now), "subject": ledger.subject,
        "catalogue": {"version": cat.version, "hash": cat.content_hash,
                      "content": cat.spec.model_dump(mode="json")},
        "consent": {
            "current": [rec.as_dict() for _, rec in sorted(ledger.state().items())],
            "history": [rec.as_dict() for rec in ledger.history()],
            "head": {"count": count, "hash": head},
        },
        "release_log": sent,
        "provision_records": [e for e in sent if e["provision_record"]],
        "queued_not_yet_sent": [e.as_dict() for e in log if e.status == STATUS_QUEUED],
        "withdrawn_never_sent": [e.as_dict() for e in log if e.status == STATUS_WITHDRAWN],
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
