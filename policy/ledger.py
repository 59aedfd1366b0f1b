"""The consent ledger: append-only, hash-chained, optionally signed, written atomically.

One TinyDB file (with :class:`~policy.storage.AtomicJSONStorage`) holds three tables:
``records`` (the chain, document id = seq + 1), ``meta`` (count, head hash, current catalogue
hash, subject; signed when a signer is given) and ``catalogues`` (each catalogue the ledger was
bound to, by content hash, so a later version can be compared with the one consented to).
Every operation that changes consent writes all its records and the new head in one atomic
write. On open the whole chain is checked; any edit, reordering, deletion or truncation raises
:class:`~policy.errors.LedgerIntegrityError` naming the record. Rolling the whole file back to
an older, valid copy is only detectable against an outside anchor: the backend receives every
record's seq and hash in the consent-change items (:meth:`Ledger.head`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tinydb import TinyDB

from policy.catalogue import (
    CONSENT_KINDS,
    Catalogue,
    Purpose,
    Recipient,
    Widening,
    canonical_json,
    widening,
)
from policy.chain import check_chain, check_meta, load_catalogue_snapshot
from policy.errors import ConsentError, LedgerIntegrityError
from policy.records import (
    GENESIS,
    ConsentChange,
    ConsentRecord,
    Event,
    Grant,
    Sign,
    Source,
    Verify,
    change_for,
    seal,
    utc_iso,
)
from policy.storage import AtomicJSONStorage
from policy.tiers import Tier, parse, rank

Key = tuple[str, str]


class Ledger:
    """The household's consent state and its full history. Create with :meth:`open`."""

    def __init__(self, *, path: Path, db: TinyDB, catalogue: Catalogue, subject: str,
                 sign: Sign | None, verify: Verify | None) -> None:
        self._path, self._db, self._catalogue, self._subject = path, db, catalogue, subject
        self._sign, self._verify = sign, verify
        self._records: list[dict[str, Any]] = []
        self._catalogues: dict[str, Any] = {}
        self._latest: dict[Key, ConsentRecord] = {}
        self._contract_ended = False
        #: Changes made while opening (initial defaults, or a new catalogue applied).
        self.startup_changes: list[ConsentChange] = []

    @classmethod
    def open(cls, path: str | Path, catalogue: Catalogue, subject: str, now: datetime, *,
             sign: Sign | None = None, verify: Verify | None = None) -> Ledger:
        """Open (or create) the ledger at ``path`` for ``subject`` (the site pseudonym).

        A new ledger starts with every purpose × recipient at its default (source
        ``factory_default``). An existing one is verified; if ``catalogue`` differs from the
        one it was bound to, :meth:`apply_catalogue` runs. Either way the resulting changes are
        in :attr:`startup_changes` for the agent to deliver.
        """
        utc_iso(now)
        path = Path(path)
        ledger = cls(path=path, db=TinyDB(path, storage=AtomicJSONStorage), catalogue=catalogue,
                     subject=subject, sign=sign, verify=verify)
        if ledger._load():
            if ledger._catalogue.content_hash != catalogue.content_hash:
                ledger.startup_changes = ledger.apply_catalogue(catalogue, now)
        else:
            ledger._catalogue = catalogue
            drafts = [ledger._draft(p, r, p.default, event=Event.INITIAL,
                                    source=Source.FACTORY_DEFAULT, now=now)
                      for p in catalogue.spec.purposes for r in p.recipients]
            ledger.startup_changes = ledger._write(drafts, catalogue)
        return ledger

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue the current grants were made under."""
        return self._catalogue

    @property
    def subject(self) -> str:
        return self._subject

    @property
    def contract_running(self) -> bool:
        """Whether the contract runs: required purposes hold at least their required tier."""
        return not self._contract_ended

    def head(self) -> tuple[int, str]:
        """(number of records, hash of the last one): the anchor to compare with the backend."""
        return len(self._records), self._records[-1]["hash"] if self._records else GENESIS

    def state(self) -> dict[Key, ConsentRecord]:
        """The latest record of every purpose × recipient, including those that are off."""
        return dict(self._latest)

    def grants(self, now: datetime) -> dict[Key, Grant]:
        """Grants in force at ``now``; a grant stops at its expiry instant (exclusive)."""
        utc_iso(now)
        out: dict[Key, Grant] = {}
        for key, rec in self._latest.items():
            if rec.tier is None or (rec.valid_until is not None and now >= rec.valid_until):
                continue
            out[key] = Grant(purpose=rec.purpose, recipient=rec.recipient, tier=rec.tier,
                             since=datetime.fromisoformat(rec.data["valid_from"]),
                             expires=rec.valid_until, record_id=rec.record_id,
                             record_hash=rec.hash, catalogue_version=rec.catalogue_version)
        return out

    def set_grant(self, purpose: str, recipient: str, tier: str | None, *, source: Source | str,
                  reference: str | None = None, expires: datetime | None = None,
                  now: datetime) -> ConsentChange:
        """Set one grant (``None``/``"off"`` = no grant). Refusals raise :class:`ConsentError`.

        Refused: unknown purpose or recipient, a tier finer than the purpose's finest, a
        contract-required purpose below its required tier (use :meth:`end_contract`), an
        expiry not after ``now``. A time-boxed purpose gets its default expiry if none is given.
        """
        utc_iso(now)
        p, r = self._lookup(purpose, recipient)
        wanted = parse(tier)
        self._check_tier(p, wanted)
        src = _source(source)
        if expires is not None and expires <= now:
            raise ConsentError(f"expiry {utc_iso(expires)} is not after now ({utc_iso(now)})")
        if wanted is not None and expires is None and p.time_boxed_hours is not None:
            expires = now + timedelta(hours=p.time_boxed_hours)
        draft = self._draft(p, r, wanted, event=None, source=src, reference=reference,
                            until=None if wanted is None else expires, now=now)
        return self._write([draft], self._catalogue)[0]

    def expire(self, now: datetime) -> list[ConsentChange]:
        """Write an ``expired`` record for each grant whose expiry has passed (they already
        stopped at that instant; this records it and yields the purge and backend item)."""
        drafts = [self._draft(*self._lookup(*key), None, event=Event.EXPIRED,
                              source=Source.EXPIRY, now=now)
                  for key, rec in sorted(self._latest.items())
                  if rec.tier is not None and rec.valid_until is not None
                  and now >= rec.valid_until]
        return self._write(drafts, self._catalogue) if drafts else []

    def stop_third_party(self, *, source: Source | str, reference: str | None = None,
                         now: datetime) -> list[ConsentChange]:
        """Suspend every provision to third parties (APPI Art. 35): their grants go off."""
        return self._all_off(source, reference, now,
                             lambda p, r: r.kind == "third_party")

    def suspend(self, *, source: Source | str, reference: str | None = None,
                now: datetime) -> list[ConsentChange]:
        """Suspend every use the contract does not require (APPI Art. 35)."""
        return self._all_off(source, reference, now,
                             lambda p, r: not p.required or self._contract_ended)

    def end_contract(self, *, source: Source | str, reference: str | None = None,
                     now: datetime) -> list[ConsentChange]:
        """The contract ended: every grant, including contract-required ones, goes off."""
        p0 = self._catalogue.spec.purposes[0]
        marker = self._draft(p0, p0.recipients[0], self._latest[(p0.id, p0.recipients[0].id)].tier,
                             event=Event.CONTRACT_END, source=_source(source),
                             reference=reference, now=now)
        changes = self._write([marker], self._catalogue)
        self._contract_ended = True
        return changes + self._all_off(source, reference, now, lambda p, r: True)

    def apply_catalogue(self, new: Catalogue, now: datetime) -> list[ConsentChange]:
        """Move to a new catalogue version; a new version never widens what the household
        agreed to (docs/policy.md, "Catalogue updates").

        For a purpose in both versions that became more invasive (:func:`widening`): a grant
        in force is paused (event ``paused``, tier off, ``needs_agreement``, the record keeps
        the tier it had in ``previous_tier`` and what widened in ``catalogue_changes``); a
        grant that was off stays off; a contract-required purpose keeps its tier (event
        ``kept``, ``needs_agreement``: the household is told). A recipient new in this
        version starts off and asks for agreement when its default would be on (event
        ``initial``), whatever the purpose; so does a purpose new in this version, except a
        contract-required one, which starts at its default. A
        grant finer than the new finest tier is lowered to it; removed purposes or recipients
        go off. Everything else is kept.
        """
        old = self._catalogue
        drafts: list[dict[str, Any]] = []
        for p in new.spec.purposes:
            wider = widening(old, new, p.id) if p.id in old.purposes else None
            for r in p.recipients:
                draft = self._reconcile(new, p, r, wider, now)
                if draft is not None:
                    drafts.append(draft)
        for (pid, rid), rec in sorted(self._latest.items()):
            gone = pid not in new.purposes or new.purposes[pid].recipient(rid) is None
            if gone and rec.tier is not None:
                old_p, old_r = self._lookup(pid, rid)
                drafts.append(self._draft(old_p, old_r, None, event=Event.WITHDRAWN,
                                          source=Source.CATALOGUE_UPDATE, now=now, catalogue=new))
        changes = self._write(drafts, new)
        self._catalogue = new
        return changes

    def history(self) -> list[ConsentRecord]:
        """Every record, oldest first."""
        return [ConsentRecord.from_dict(rec) for rec in self._records]

    def verify(self) -> None:
        """Re-read the file and check chain and head; raises LedgerIntegrityError."""
        docs = self._read_records()
        check_chain(docs, str(self._path), self._verify)
        metas = self._db.table("meta").all()
        check_meta(metas[0] if metas else None, docs, str(self._path), self._verify)

    def close(self) -> None:
        self._db.close()

    # -- internals -------------------------------------------------------------------------

    def _reconcile(self, new: Catalogue, p: Purpose, r: Recipient, wider: Widening | None,
                   now: datetime) -> dict[str, Any] | None:
        rec = self._latest.get((p.id, r.id))
        common: dict[str, Any] = {"source": Source.CATALOGUE_UPDATE, "now": now,
                                  "catalogue": new}
        if rec is None:  # a purpose, or a recipient of a purpose, new in this version
            added: dict[str, Any] = ({"purpose": True} if wider is None
                                     else {"recipients": [r.id]})
            if p.default is None or (p.required and wider is None):
                # off by default, or a contract-required purpose new in this version
                return self._draft(p, r, p.default, event=Event.INITIAL, changes=added,
                                   **common)
            # A recipient new in this version, of any purpose (also a contract-required one,
            # whose default may now be finer than its required tier): off until agreed.
            return self._draft(p, r, None, event=Event.INITIAL, needs_agreement=True,
                               changes=added, **common)
        if (rec.event is Event.RESET and rec.tier is not None
                and (p.legal_basis.kind in CONSENT_KINDS or r.kind == "third_party")):
            # An older catalogue update reset this grant to a default that was on, without the
            # household's agreement: pause it; agreeing restores what it had before the reset.
            return self._draft(p, r, None, event=Event.PAUSED, needs_agreement=True,
                               changes={"reset": [rec.previous_tier or "off",
                                                  rec.tier.value]},
                               restore=rec.previous_tier, **common)
        tier = rec.tier
        finest = -1 if p.finest is None else rank(p.finest)
        if tier is not None and rank(tier) > finest:
            tier = p.finest  # the new version no longer offers the tier: coarser, never finer
        if wider:
            if p.required:
                return self._draft(p, r, tier, event=Event.KEPT, until=rec.valid_until,
                                   needs_agreement=True, changes=wider.as_dict(), **common)
            if rec.tier is not None:
                return self._draft(p, r, None, event=Event.PAUSED, needs_agreement=True,
                                   changes=wider.as_dict(), restore=rec.tier, **common)
            return None  # off stays off; nothing to agree to
        if tier != rec.tier:
            return self._draft(p, r, tier, event=Event.CHANGED, until=rec.valid_until,
                               needs_agreement=rec.needs_agreement, **common)
        return None

    def _lookup(self, purpose: str, recipient: str) -> tuple[Purpose, Recipient]:
        p = self._catalogue.purposes.get(purpose)
        if p is None:
            known = ", ".join(self._catalogue.purposes)
            raise ConsentError(f"unknown purpose {purpose!r}; catalogue "
                               f"{self._catalogue.version} has {known}")
        r = p.recipient(recipient)
        if r is None:
            raise ConsentError(f"purpose {purpose!r} has no recipient {recipient!r}; it has "
                               f"{', '.join(x.id for x in p.recipients)}")
        return p, r

    def _check_tier(self, p: Purpose, wanted: Tier | None) -> None:
        binding = p.required and not self._contract_ended and p.required_tier is not None
        if wanted is None:
            if binding:
                raise ConsentError(f"purpose {p.id!r} is required by the contract; it can only "
                                   "be switched off when the contract ends (end_contract)")
            return
        if p.finest is None:
            raise ConsentError(f"purpose {p.id!r} uses no data from the gateway; it has no tier")
        if rank(wanted) > rank(p.finest):
            raise ConsentError(f"tier {wanted} is finer than purpose {p.id!r} allows "
                               f"(finest: {p.finest})")
        if binding and p.required_tier is not None and rank(wanted) < rank(p.required_tier):
            raise ConsentError(f"purpose {p.id!r} needs at least {p.required_tier} while the "
                               "contract runs")

    def _all_off(self, source: Source | str, reference: str | None, now: datetime,
                 select: Any) -> list[ConsentChange]:
        src = _source(source)
        drafts = []
        for (pid, rid), rec in sorted(self._latest.items()):
            if rec.tier is None:
                continue
            p, r = self._lookup(pid, rid)
            if select(p, r):
                self._check_tier(p, None)
                drafts.append(self._draft(p, r, None, event=None, source=src,
                                          reference=reference, now=now))
        return self._write(drafts, self._catalogue) if drafts else []

    def _draft(self, p: Purpose, r: Recipient, tier: Tier | None, *, event: Event | None,
               source: Source, now: datetime, reference: str | None = None,
               until: datetime | None = None, needs_agreement: bool = False,
               catalogue: Catalogue | None = None, changes: dict[str, Any] | None = None,
               restore: Tier | None = None) -> dict[str, Any]:
        cat = catalogue or self._catalogue
        prev = self._latest.get((p.id, r.id))
        prev_tier = None if prev is None else prev.tier
        if event is None:
            event = (Event.WITHDRAWN if tier is None
                     else Event.GIVEN if prev_tier is None else Event.CHANGED)
        since = utc_iso(now)
        if (prev is not None and tier is not None and prev_tier == tier
                and (prev.valid_until is None or now < prev.valid_until)):
            since = prev.data["valid_from"]  # same tier, unbroken: windows continue
        record = {
            "schema": "hems-consent/1", "record_id": str(uuid.uuid4()),
            "timestamp": utc_iso(now), "subject": self._subject, "event": event.value,
            "purpose": p.id, "recipient": {"id": r.id, "kind": r.kind,
                                           "name": r.name.model_dump()},
            "tier": None if tier is None else tier.value,
            "previous_tier": None if prev_tier is None else prev_tier.value,
            "valid_from": since, "valid_until": None if until is None else utc_iso(until),
            "legal_basis": {"kind": p.legal_basis.kind,
                            "articles": list(p.legal_basis.articles)},
            "categories": list(p.categories), "collection_method": source.value,
            "reference": reference, "policy_version": cat.spec.policy_version,
            "catalogue_version": cat.version, "catalogue_hash": cat.content_hash,
            "needs_agreement": needs_agreement,
        }
        if changes is not None:
            record["catalogue_changes"] = changes  # what a catalogue update widened
        if event is Event.PAUSED:
            record["restore_tier"] = None if restore is None else restore.value
        return record

    def _write(self, drafts: list[dict[str, Any]], catalogue: Catalogue) -> list[ConsentChange]:
        records = list(self._records)
        for draft in drafts:
            draft["seq"] = len(records)
            draft["prev_hash"] = records[-1]["hash"] if records else GENESIS
            records.append(seal(draft, self._sign))
        catalogues = dict(self._catalogues)
        catalogues.setdefault(catalogue.content_hash, catalogue.content())
        meta: dict[str, Any] = {"count": len(records),
                                "head": records[-1]["hash"] if records else GENESIS,
                                "catalogue_hash": catalogue.content_hash, "subject": self._subject}
        meta["signature"] = (None if self._sign is None
                             else self._sign(canonical_json(meta)).hex())
        self._db.storage.write({
            "records": {str(i + 1): rec for i, rec in enumerate(records)},
            "meta": {"1": meta},
            "catalogues": {str(i + 1): {"hash": h, "content": c}
                           for i, (h, c) in enumerate(catalogues.items())},
        })
        # Only after the write is durable does the in-memory state move on.
        self._records, self._catalogues = records, catalogues
        new = [ConsentRecord.from_dict(rec) for rec in records[len(records) - len(drafts):]]
        for rec in new:
            self._remember(rec)
        return [change_for(rec) for rec in new]

    def _remember(self, rec: ConsentRecord) -> None:
        if rec.event is Event.CONTRACT_END:
            self._contract_ended = True
        else:
            self._latest[(rec.purpose, rec.recipient)] = rec

    def _read_records(self) -> list[tuple[int, dict[str, Any]]]:
        docs = self._db.table("records").all()
        return sorted(((doc.doc_id, dict(doc)) for doc in docs), key=lambda d: d[0])

    def _load(self) -> bool:
        source = str(self._path)
        try:
            docs = self._read_records()
            metas = self._db.table("meta").all()
            cats = {d["hash"]: d["content"] for d in self._db.table("catalogues").all()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # a damaged table name, document id or field: the file is not what was written
            raise LedgerIntegrityError(source, "(file structure)",
                                       f"damaged: {type(exc).__name__}: {exc}") from exc
        if not docs and not metas:
            return False
        check_chain(docs, source, self._verify)
        meta = check_meta(metas[0] if metas else None, docs, source, self._verify)
        if meta["subject"] != self._subject:
            raise ConsentError(f"{source}: ledger belongs to another subject; refusing to mix")
        self._catalogue = load_catalogue_snapshot(cats, meta["catalogue_hash"], source)
        self._records, self._catalogues = [rec for _, rec in docs], cats
        for rec in self._records:
            self._remember(ConsentRecord.from_dict(rec))
        return True


def _source(source: Source | str) -> Source:
    try:
        return Source(source)
    except ValueError:
        raise ConsentError(f"unknown consent source {source!r}; expected one of "
                           f"{', '.join(s.value for s in Source)}") from None
