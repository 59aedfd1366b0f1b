"""Integrity checks run when the ledger is opened: hash chain, signatures, head, catalogues."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policy.catalogue import Catalogue, canonical_json, parse_catalogue
from policy.errors import CatalogueError, LedgerIntegrityError
from policy.records import GENESIS, ConsentRecord, Verify, record_hash


def check_chain(docs: list[tuple[int, dict[str, Any]]], source: str,
                verify: Verify | None) -> None:
    """Each record in sequence, linked to the previous hash, matching its own hash, signed."""
    prev = GENESIS
    for index, (doc_id, rec) in enumerate(docs):
        name = str(rec.get("record_id", f"#{index}"))

        def fail(problem: str, name: str = name) -> None:
            raise LedgerIntegrityError(source, name, problem)

        if doc_id != index + 1 or rec.get("seq") != index:
            fail(f"out of sequence: expected seq {index} (a record was removed or inserted)")
        if rec.get("prev_hash") != prev:
            fail("does not follow the previous record (removed, inserted or reordered)")
        if record_hash(rec) != rec.get("hash"):
            fail("content does not match its hash (edited)")
        if verify is not None and not _signed(verify, rec["hash"], rec.get("signature")):
            fail("signature missing or invalid")
        try:
            ConsentRecord.from_dict(rec)
        except (KeyError, ValueError, TypeError) as exc:
            raise LedgerIntegrityError(source, name, f"malformed record: {exc!r}") from exc
        prev = rec["hash"]


def check_meta(meta: Mapping[str, Any] | None, docs: list[tuple[int, dict[str, Any]]],
               source: str, verify: Verify | None) -> Mapping[str, Any]:
    """The head must name exactly the last record: anything else is truncation or splicing."""
    last = f"#{len(docs) - 1}" if docs else "#0"
    if meta is None:
        raise LedgerIntegrityError(source, last, "head (meta) missing")
    if meta.get("count") != len(docs):
        raise LedgerIntegrityError(source, f"#{len(docs)}",
                                   f"head says {meta.get('count')} records, file has "
                                   f"{len(docs)} (truncated or extended)")
    if meta.get("head") != (docs[-1][1]["hash"] if docs else GENESIS):
        raise LedgerIntegrityError(source, last, "head hash does not match the last record")
    if verify is not None:
        body = {k: v for k, v in meta.items() if k != "signature"}
        if not _signed(verify, canonical_json(body).hex(), meta.get("signature")):
            raise LedgerIntegrityError(source, "head", "head signature missing or invalid")
    return meta


def load_catalogue_snapshot(catalogues: Mapping[str, Any], content_hash: str,
                            source: str) -> Catalogue:
    """The catalogue the ledger is bound to, re-validated and re-hashed."""
    content = catalogues.get(content_hash)
    if content is None:
        raise LedgerIntegrityError(source, "catalogues", f"catalogue {content_hash[:12]} missing")
    try:
        cat = parse_catalogue(canonical_json(content), source=f"{source}#catalogue", past=True)
    except CatalogueError as exc:
        raise LedgerIntegrityError(source, "catalogues", str(exc)) from exc
    if cat.content_hash != content_hash:
        raise LedgerIntegrityError(source, "catalogues", "stored catalogue does not match its hash")
    return cat


def _signed(verify: Verify, message_hex: str, signature: object) -> bool:
    if not isinstance(signature, str):
        return False
    try:
        return verify(bytes.fromhex(message_hex), bytes.fromhex(signature))
    except ValueError:
        return False
