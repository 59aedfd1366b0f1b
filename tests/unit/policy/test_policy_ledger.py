"""Consent ledger: grants, refusals, expiry, catalogue updates, hash chain and signatures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policy.catalogue import Catalogue, load_catalogue, parse_catalogue
from policy.errors import ConsentError, LedgerIntegrityError
from policy.ledger import Ledger
from policy.records import Event, Source
from policy.tiers import Tier

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


def _open(path: Path, catalogue: Catalogue | None = None, **kw: Any) -> Ledger:
    return Ledger.open(path, catalogue or load_catalogue(), "site-7f3a", T0, **kw)


def _signer() -> tuple[Any, Any]:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()

    def verify(message: bytes, signature: bytes) -> bool:
        try:
            pub.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return key.sign, verify


def test_new_ledger_starts_at_the_catalogue_defaults(tmp_path: Path) -> None:
    ledger = _open(tmp_path / "l.json")
    grants = ledger.grants(T0)
    assert {k: g.tier for k, g in grants.items()} == {
        ("service", "company"): Tier.HALF_HOUR, ("service", "contractors"): Tier.HALF_HOUR,
        ("service", "joint_users"): Tier.HALF_HOUR, ("improvement", "company"): Tier.DAY}
    assert len(ledger.startup_changes) == len(ledger.history()) == 11
    assert all(r.source is Source.FACTORY_DEFAULT for r in ledger.history())
    ledger.verify()


def test_record_carries_the_consent_receipt_fields(tmp_path: Path) -> None:
    ledger = _open(tmp_path / "l.json")
    change = ledger.set_grant("maintenance_watch", "installer", "1d", source="household_page",
                              reference="form-12", now=T0 + timedelta(hours=1))
    data = change.record.data
    for field in ("record_id", "subject", "purpose", "legal_basis", "categories", "recipient",
                  "tier", "valid_from", "valid_until", "collection_method", "policy_version",
                  "catalogue_version", "prev_hash", "hash"):
        assert field in data
    assert data["legal_basis"]["articles"][0] == "APPI Art. 27(1)"
    assert change.record.event is Event.GIVEN and change.purge.tiers == frozenset(
        {Tier.HALF_HOUR, Tier.MINUTE, Tier.RAW})
    assert change.item["type"] == "consent_change" and change.item["tier"] == "1d"
    json.dumps(change.item)


@pytest.mark.parametrize(("purpose", "recipient", "tier", "message"), [
    ("nope", "company", "1d", "unknown purpose 'nope'"),
    ("service", "nobody", "1d", "no recipient 'nobody'"),
    ("proposals", "company", "30min", "finer than purpose 'proposals' allows"),
    ("service", "company", None, "required by the contract"),
    ("service", "company", "1d", "needs at least 30min"),
    ("survey", "company", "1d", "uses no data from the gateway"),
    ("improvement", "company", "hourly", "unknown tier 'hourly'"),
])
def test_refusals_name_the_problem(tmp_path: Path, purpose: str, recipient: str,
                                   tier: str | None, message: str) -> None:
    ledger = _open(tmp_path / "l.json")
    before = ledger.head()
    with pytest.raises(ConsentError, match=message):
        ledger.set_grant(purpose, recipient, tier, source="household_page", now=T0)
    assert ledger.head() == before


def test_unknown_source_and_naive_time_are_refused(tmp_path: Path) -> None:
    ledger = _open(tmp_path / "l.json")
    with pytest.raises(ConsentError, match="unknown consent source"):
        ledger.set_grant("proposals", "company", "1d", source="gossip", now=T0)
    with pytest.raises(ConsentError, match="no time zone"):
        ledger.set_grant("proposals", "company", "1d", source="installer",
                         now=datetime(2026, 1, 1))


def test_support_grant_expires_at_the_exact_instant(tmp_path: Path) -> None:
    ledger = _open(tmp_path / "l.json")
    change = ledger.set_grant("support", "support_centre", "raw", source="support_request",
                              reference="REQ-9", now=T0)
    end = T0 + timedelta(hours=72)
    assert change.record.valid_until == end
    key = ("support", "support_centre")
    assert key in ledger.grants(end - timedelta(microseconds=1))
    assert key not in ledger.grants(end)
    assert ledger.expire(end - timedelta(microseconds=1)) == []
    expired = ledger.expire(end)
    assert [c.record.event for c in expired] == [Event.EXPIRED]
    assert expired[0].purge.tiers == frozenset(Tier)


def test_revocation_is_immediate_and_contract_end_is_the_only_way_off(tmp_path: Path) -> None:
    ledger = _open(tmp_path / "l.json")
    ledger.set_grant("maintenance_watch", "installer", "30min", source="household_page", now=T0)
    t1 = T0 + timedelta(minutes=5)
    changes = ledger.stop_third_party(source="household_page", now=t1)
    assert [(c.record.purpose, c.record.tier) for c in changes] == [("maintenance_watch", None)]
    assert ("maintenance_watch", "installer") not in ledger.grants(t1)
    suspended = ledger.suspend(source="household_page", now=t1)
    assert {c.record.purpose for c in suspended} == {"improvement"}
    assert set(ledger.grants(t1)) == {("service", "company"), ("service", "contractors"),
                                      ("service", "joint_users")}
    ended = ledger.end_contract(source="backend_command", reference="C-1", now=t1)
    assert ended[0].record.event is Event.CONTRACT_END
    assert ledger.grants(t1) == {}
    reopened = _open(tmp_path / "l.json")
    assert reopened.grants(t1) == {} and reopened.head() == ledger.head()


def test_same_tier_again_keeps_the_window_start(tmp_path: Path) -> None:
    ledger = _open(tmp_path / "l.json")
    ledger.set_grant("improvement", "company", "1d", source="household_page",
                     now=T0 + timedelta(days=1))
    assert ledger.grants(T0 + timedelta(days=1))[("improvement", "company")].since == T0


def _changed_catalogue(**changes: Any) -> Catalogue:
    raw = load_catalogue().spec.model_dump(mode="json")
    raw["version"] = "2026.2"
    purposes = {p["id"]: p for p in raw["purposes"]}
    for pid, fields in changes.items():
        purposes[pid].update(fields)
    return parse_catalogue(json.dumps(raw))


def test_material_change_pauses_a_grant_and_asks_for_agreement(tmp_path: Path) -> None:
    ledger = _open(tmp_path / "l.json")
    ledger.set_grant("improvement", "company", "30min", source="household_page", now=T0)
    ledger.set_grant("proposals", "company", "1d", source="household_page", now=T0)
    new = _changed_catalogue(proposals={"categories": ["pv", "battery", "consumption",
                                                       "equipment"]},
                             improvement={"finest_tier": "1d", "rounding": {
                                 "1mo": {"energy": 100, "power": 10},
                                 "1d": {"energy": 10, "power": 10}}})
    t1 = T0 + timedelta(days=2)
    changes = ledger.apply_catalogue(new, t1)
    by_purpose = {c.record.purpose: c.record for c in changes}
    assert by_purpose["proposals"].event is Event.PAUSED and by_purpose["proposals"].tier is None
    assert by_purpose["proposals"].needs_agreement
    assert by_purpose["proposals"].previous_tier == Tier.DAY
    improvement = by_purpose["improvement"]
    assert improvement.tier == Tier.DAY and not improvement.needs_agreement
    assert ledger.catalogue.version == "2026.2"
    reopened = Ledger.open(tmp_path / "l.json", new, "site-7f3a", t1)
    assert reopened.startup_changes == [] and reopened.head() == ledger.head()


def test_opening_with_a_new_catalogue_applies_it(tmp_path: Path) -> None:
    _open(tmp_path / "l.json").set_grant("maintenance_watch", "installer", "1d",
                                         source="installer", now=T0)
    new = _changed_catalogue(maintenance_watch={"recipients": [
        {"id": "installer", "kind": "third_party", "name": {"ja": "施工店", "en": "Installer"}},
        {"id": "aggregator", "kind": "third_party", "name": {"ja": "集約者", "en": "Aggregator"}},
    ]})
    ledger = Ledger.open(tmp_path / "l.json", new, "site-7f3a", T0 + timedelta(days=1))
    events = {(c.record.recipient, c.record.event) for c in ledger.startup_changes}
    assert ("installer", Event.PAUSED) in events and ("aggregator", Event.INITIAL) in events
    assert ("maintenance_watch", "installer") not in ledger.grants(T0 + timedelta(days=1))


def test_other_subject_is_refused(tmp_path: Path) -> None:
    _open(tmp_path / "l.json")
    with pytest.raises(ConsentError, match="another subject"):
        Ledger.open(tmp_path / "l.json", load_catalogue(), "site-other", T0)


# -- tampering ---------------------------------------------------------------------------------

def _edit(path: Path, edit: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _records(data: dict[str, Any]) -> dict[str, Any]:
    return data["records"]  # type: ignore[no-any-return]


def _drop_last(data: dict[str, Any]) -> None:
    del _records(data)[str(len(_records(data)))]


def _swap(data: dict[str, Any]) -> None:
    r = _records(data)
    r["2"], r["3"] = r["3"], r["2"]


def _drop_middle(data: dict[str, Any]) -> None:
    r = _records(data)
    for i in range(3, len(r)):
        r[str(i)] = {**r[str(i + 1)], "seq": i - 1}
    del r[str(len(r))]


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda d: _records(d)["4"].update(tier="raw"), "edited"),
    (lambda d: _records(d)["12"].update(collection_method="installer"), "edited"),
    (_drop_last, "truncated"),
    (_swap, "out of sequence"),
    (_drop_middle, "does not follow"),
    (lambda d: d["meta"]["1"].update(count=3), "truncated"),
])
def test_tampering_is_detected_on_open(tmp_path: Path, edit: Any, problem: str) -> None:
    path = tmp_path / "l.json"
    _open(path).set_grant("proposals", "company", "1d", source="household_page", now=T0)
    _edit(path, edit)
    with pytest.raises(LedgerIntegrityError, match=problem) as info:
        _open(path)
    assert info.value.record


def test_rewritten_chain_is_caught_by_the_signature(tmp_path: Path) -> None:
    sign, verify = _signer()
    path = tmp_path / "l.json"
    _open(path, sign=sign, verify=verify).set_grant("proposals", "company", "1d",
                                                    source="household_page", now=T0)
    _open(path, sign=sign, verify=verify).verify()

    def forge(data: dict[str, Any]) -> None:  # truncate and fix up the head, without the key
        _drop_last(data)
        records = _records(data)
        data["meta"]["1"].update(count=len(records), head=records[str(len(records))]["hash"])

    _edit(path, forge)
    with pytest.raises(LedgerIntegrityError, match="head signature"):
        _open(path, sign=sign, verify=verify)


def test_signature_from_another_key_is_rejected(tmp_path: Path) -> None:
    sign, _ = _signer()
    _, other_verify = _signer()
    _open(tmp_path / "l.json", sign=sign)
    with pytest.raises(LedgerIntegrityError, match="signature missing or invalid"):
        _open(tmp_path / "l.json", verify=other_verify)


def test_garbage_file_is_an_integrity_error(tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    path.write_bytes(b'{"records": {"1": {"seq"')
    with pytest.raises(LedgerIntegrityError, match="not valid JSON"):
        _open(path)


def test_verify_catches_an_edit_made_while_open(tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    ledger = _open(path)
    ledger.verify()
    _edit(path, lambda d: _records(d)["2"].update(reference="forged"))
    with pytest.raises(LedgerIntegrityError, match="edited"):
        ledger.verify()
