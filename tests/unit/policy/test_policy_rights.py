"""Rights on the device: release log / provision records, disclosure, deletion, retention."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drivers.models import PointKind, Reading
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.release import Record, Release
from policy.rights import ReleaseLog, delete_household_data, export_all
from policy.tiers import Tier, must_prune, retention_cutoffs

T0 = datetime(2026, 5, 31, 15, 0, tzinfo=UTC)


def _release(purpose: str, recipient: str) -> Release:
    rec = Record(device="meter", point="grid.energy_import", kind="energy", unit="Wh",
                 values={"delta": 100.0}, coverage=1.0, good=30, bad=0)
    return Release(purpose=purpose, recipient=recipient, tier=Tier.HALF_HOUR, start=T0,
                   end=T0 + timedelta(minutes=30), records=(rec,), missing=(),
                   consent_record_id="r1", consent_record_hash="00" * 32,
                   catalogue_version="2026.1")


def test_release_log_marks_third_party_provision_records(tmp_path: Path) -> None:
    log = ReleaseLog(tmp_path / "releases.jsonl", load_catalogue(), "site-1")
    log.append(_release("service", "company"), size=210, now=T0)
    entry = log.append(_release("maintenance_watch", "installer"), size=190, now=T0)
    assert entry.provision_record and entry.recipient_name is not None
    assert entry.recipient_name["ja"] == "施工店"
    assert entry.categories == ("consumption",) and entry.size == 190
    assert "APPI Art. 29" in entry.legal_basis
    assert [e.recipient for e in log.provision_records()] == ["installer"]
    assert len(list(log.entries(since=T0 + timedelta(seconds=1)))) == 0


def test_torn_last_line_is_dropped_on_open(tmp_path: Path) -> None:
    path = tmp_path / "releases.jsonl"
    ReleaseLog(path, load_catalogue(), "site-1").append(_release("service", "company"),
                                                        size=1, now=T0)
    with path.open("ab") as fh:
        fh.write(b'{"logged_at": "2026')
    log = ReleaseLog(path, load_catalogue(), "site-1")
    assert len(list(log.entries())) == 1


def test_prune_keeps_provision_records_three_years(tmp_path: Path) -> None:
    log = ReleaseLog(tmp_path / "releases.jsonl", load_catalogue(), "site-1")
    log.append(_release("service", "company"), size=1, now=T0)
    log.append(_release("maintenance_watch", "installer"), size=1, now=T0)
    assert log.prune(T0 + timedelta(days=366)) == 1
    assert log.prune(T0 + timedelta(days=3 * 365)) == 0
    assert log.prune(T0 + timedelta(days=3 * 365 + 2)) == 1
    assert list(log.entries()) == []


def test_export_then_delete(tmp_path: Path) -> None:
    cat = load_catalogue()
    ledger = Ledger.open(tmp_path / "l.json", cat, "site-1", T0)
    ledger.set_grant("maintenance_watch", "installer", "1d", source="household_page", now=T0)
    log = ReleaseLog(tmp_path / "releases.jsonl", cat, "site-1")
    log.append(_release("service", "company"), size=1, now=T0)
    log.append(_release("maintenance_watch", "installer"), size=1, now=T0)
    m = Minimiser(cat)
    m.feed([Reading(device="meter", point="grid.power", kind=PointKind.POWER, value=5.0,
                    unit="W", ts=T0)])
    exported = export_all(ledger=ledger, release_log=log, minimiser=m, now=T0)
    json.dumps(exported)
    assert len(exported["consent"]["history"]) == 12
    assert len(exported["provision_records"]) == 1
    assert exported["held"]["series"] == [["meter", "grid.power"]]

    deletion = delete_household_data(ledger=ledger, minimiser=m, release_log=log,
                                     source="household_page", reference="page", now=T0)
    assert deletion.item["type"] == "deletion_request" and deletion.item["subject"] == "site-1"
    assert {c.record.purpose for c in deletion.changes} == {"improvement", "maintenance_watch"}
    assert set(ledger.grants(T0)) == {("service", "company"), ("service", "contractors"),
                                      ("service", "joint_users")}
    assert m.held()["series"] == []
    assert [e.recipient for e in log.entries()] == ["installer"]  # Art. 29 record stays
    ended = delete_household_data(ledger=ledger, source="backend_command", now=T0,
                                  end_contract=True)
    assert ended.item["contract_ended"] and ledger.grants(T0) == {}


def test_device_retention_of_fine_tiers() -> None:
    now = T0 + timedelta(days=40)
    assert must_prune(Tier.RAW, now - timedelta(days=7, seconds=1), now)
    assert not must_prune(Tier.RAW, now - timedelta(days=7), now)
    assert must_prune(Tier.MINUTE, now - timedelta(days=31), now)
    assert not must_prune(Tier.HALF_HOUR, now - timedelta(days=400), now)
    assert retention_cutoffs(now) == {Tier.RAW: now - timedelta(days=7),
                                      Tier.MINUTE: now - timedelta(days=30)}
