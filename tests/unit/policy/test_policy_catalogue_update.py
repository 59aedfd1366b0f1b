"""A new catalogue version never widens consent: validation of defaults, and the ledger's rule
for each kind of change (docs/policy.md, "Catalogue updates")."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.store.catalogue import CATALOGUE_FILE, newest_catalogue
from drivers.models import PointKind, Quality, Reading
from policy.catalogue import Catalogue, load_catalogue, parse_catalogue, widening
from policy.errors import CatalogueError
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.records import Event, Source
from policy.tiers import Tier

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo


def _raw(version: str = "2026.9") -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(load_catalogue().canonical_json())
    raw["version"] = version
    return raw


def _purpose(raw: dict[str, Any], pid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in raw["purposes"] if p["id"] == pid)
    return found


def _with(**changes: dict[str, Any]) -> Catalogue:
    raw = _raw()
    for pid, fields in changes.items():
        _purpose(raw, pid).update(fields)
    return parse_catalogue(json.dumps(raw))


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger.open(tmp_path / "ledger.json", load_catalogue(), "site-7f3a", T0)


# -- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize(("pid", "recipient", "words"), [
    ("proposals", "company", "rests on consent"),
    ("support", "support_centre", "rests on consent"),
    ("maintenance_watch", "sales_company", "rests on consent"),
])
def test_a_consent_purpose_that_defaults_on_is_refused_naming_purpose_and_recipient(
        tmp_path: Path, pid: str, recipient: str, words: str) -> None:
    raw = _raw()
    _purpose(raw, pid)["default_tier"] = "1d"
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(CatalogueError, match=words) as info:
        load_catalogue(path)
    assert info.value.field.endswith(".default_tier")
    assert f"purpose {pid!r}" in info.value.problem
    assert f"recipient {recipient!r}" in info.value.problem


def test_a_third_party_recipient_under_any_basis_makes_the_default_off() -> None:
    raw = _raw()
    improvement = _purpose(raw, "improvement")  # a published purpose, default 1d
    improvement["recipients"].append({"id": "broker", "kind": "third_party",
                                      "name": {"ja": "仲介業者", "en": "Broker"}})
    with pytest.raises(CatalogueError, match="recipient 'broker' of purpose 'improvement' is "
                                             "a third party") as info:
        parse_catalogue(json.dumps(raw), source="update")
    assert info.value.field == "purposes.1.default_tier"
    improvement["default_tier"] = "off"
    parse_catalogue(json.dumps(raw))  # off is accepted


def test_the_factory_catalogue_follows_the_rule() -> None:
    for p in load_catalogue().spec.purposes:
        consent = p.legal_basis.kind in ("consent", "third_party_consent")
        third = any(r.kind == "third_party" for r in p.recipients)
        if consent or third:
            assert p.default_tier == "off", p.id


# -- the ledger's rule per kind of change ---------------------------------------------------

@pytest.mark.parametrize("change", [
    {"power_stats": ["mean", "max"]},  # a statistic added
    {"categories": ["equipment", "equipment_status", "pv", "battery", "consumption",
                    "water"]},  # a category added
    {"finest_tier": "1min", "rounding": {"1mo": {"energy": 100, "power": 10},
                                         "1d": {"energy": 10, "power": 10},
                                         "30min": {"energy": 10, "power": 10},
                                         "1min": {"energy": 10, "power": 10}}},  # finer tier
])
def test_improvement_switched_off_stays_off_after_a_material_change(
        tmp_path: Path, change: dict[str, Any]) -> None:
    ledger = _ledger(tmp_path)
    ledger.set_grant("improvement", "company", None, source="household_page", now=T0)
    new = _with(improvement=change)
    assert widening(ledger.catalogue, new, "improvement")
    t1 = T0 + timedelta(days=1)
    changes = ledger.apply_catalogue(new, t1)
    assert [c for c in changes if c.record.purpose == "improvement"] == []
    assert ("improvement", "company") not in ledger.grants(t1)
    assert ledger.state()[("improvement", "company")].tier is None


def test_improvement_on_is_paused_until_the_household_agrees_again(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.grants(T0)[("improvement", "company")].tier == Tier.DAY  # factory default
    t1 = T0 + timedelta(days=1)
    changes = ledger.apply_catalogue(_with(improvement={"power_stats": ["mean", "max"]}), t1)
    [paused] = [c.record for c in changes if c.record.purpose == "improvement"]
    assert (paused.event, paused.tier, paused.previous_tier) == (Event.PAUSED, None, Tier.DAY)
    assert paused.needs_agreement and paused.source.value == "catalogue_update"
    assert paused.data["catalogue_changes"] == {"power_stats": ["max"]}
    assert ("improvement", "company") not in ledger.grants(t1)
    [change] = [c for c in changes if c.record.purpose == "improvement"]
    assert Tier.DAY in change.purge.tiers  # what was queued under the old terms is withdrawn
    # agreeing (from the page) restores the tier and clears the flag
    ledger.set_grant("improvement", "company", "1d", source="household_page", now=t1)
    assert ledger.grants(t1)[("improvement", "company")].tier == Tier.DAY
    assert not ledger.state()[("improvement", "company")].needs_agreement


def test_a_unvalidated_default_on_never_switches_an_existing_grant_on(tmp_path: Path) -> None:
    """The ledger does not rely on validation: an existing purpose × recipient never takes
    the new version's default, whatever it says."""
    ledger = _ledger(tmp_path)
    cat = _with(proposals={"finest_tier": "30min", "rounding": {
        "1mo": {"energy": 1000, "power": 100}, "1d": {"energy": 100, "power": 100},
        "30min": {"energy": 100, "power": 100}}})
    specs = tuple(p.model_copy(update={"default_tier": "1d"}) if p.id == "proposals" else p
                  for p in cat.spec.purposes)
    spec = cat.spec.model_copy(update={"purposes": specs})  # bypasses validation on purpose
    bad = Catalogue(spec=spec, source="test", content_hash="0" * 64,
                    purposes={p.id: p for p in specs}, categories=cat.categories)
    t1 = T0 + timedelta(days=1)
    changes = ledger.apply_catalogue(bad, t1)
    assert not [c for c in changes if c.record.purpose == "proposals"]
    assert ("proposals", "company") not in ledger.grants(t1)


def test_a_new_recipient_starts_off_and_asks_while_a_new_contract_purpose_starts_on(
        tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    raw = _raw()
    _purpose(raw, "improvement")["recipients"].append(
        {"id": "partner", "kind": "company", "name": {"ja": "提携会社", "en": "Partner"}})
    t1 = T0 + timedelta(days=1)
    changes = ledger.apply_catalogue(parse_catalogue(json.dumps(raw)), t1)
    by_key = {(c.record.purpose, c.record.recipient): c.record for c in changes}
    partner = by_key[("improvement", "partner")]
    assert (partner.event, partner.tier, partner.needs_agreement) == (Event.INITIAL, None, True)
    assert partner.data["catalogue_changes"] == {"recipients": ["partner"]}
    assert by_key[("improvement", "company")].event is Event.PAUSED
    assert not {k for k in ledger.grants(t1) if k[0] == "improvement"}


@pytest.mark.parametrize("first", [
    {"service": {"default_tier": "1min"}},  # the default now finer than the required tier
    {"improvement": {"required": True, "required_tier": "1d"}},  # made contract-required
])
def test_a_new_recipient_of_a_contract_required_purpose_starts_off_and_asks(
        tmp_path: Path, first: dict[str, dict[str, Any]]) -> None:
    """Found by tests/unit/daemon/test_consent_paths.py: a recipient added to a contract-required
    purpose took the new version's default (1min for service; 1d for an improvement the
    household had switched off before it became required)."""
    ledger = _ledger(tmp_path)
    ledger.set_grant("improvement", "company", None, source="household_page", now=T0)
    [(pid, fields)] = first.items()
    raw = _raw("2026.8")
    _purpose(raw, pid).update(fields)
    t1 = T0 + timedelta(days=1)
    ledger.apply_catalogue(parse_catalogue(json.dumps(raw)), t1)
    raw["version"] = "2026.9"
    _purpose(raw, pid)["recipients"].append(
        {"id": "partner", "kind": "company", "name": {"ja": "提携会社", "en": "Partner"}})
    changes = ledger.apply_catalogue(parse_catalogue(json.dumps(raw)), t1)
    [partner] = [c.record for c in changes if c.record.recipient == "partner"]
    assert (partner.event, partner.tier, partner.needs_agreement) == (Event.INITIAL, None, True)
    assert (pid, "partner") not in ledger.grants(t1)


def test_a_contract_required_purpose_keeps_its_tier_and_the_household_is_told(
        tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    t1 = T0 + timedelta(days=1)
    changes = ledger.apply_catalogue(_with(service={"categories": [
        "equipment", "equipment_status", "pv", "battery", "consumption", "water"]}), t1)
    kept = {c.record.recipient: c.record for c in changes if c.record.purpose == "service"}
    assert {r.event for r in kept.values()} == {Event.KEPT}
    assert all(r.tier == Tier.HALF_HOUR and r.needs_agreement for r in kept.values())
    assert ledger.grants(t1)[("service", "company")].since == T0  # unbroken


def test_a_less_invasive_version_keeps_grants_and_clamps_a_finer_one(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.set_grant("improvement", "company", "30min", source="household_page", now=T0)
    t1 = T0 + timedelta(days=1)
    changes = ledger.apply_catalogue(_with(improvement={"finest_tier": "1d", "rounding": {
        "1mo": {"energy": 100, "power": 10}, "1d": {"energy": 10, "power": 10}}}), t1)
    [clamped] = [c.record for c in changes]
    assert (clamped.event, clamped.tier, clamped.needs_agreement) == (Event.CHANGED, Tier.DAY,
                                                                      False)


def test_a_shorter_or_newly_stated_retention_is_not_material() -> None:
    old = _with(proposals={"retention": {"days": 365, "text": {"ja": "1年", "en": "1 year"},
                                         "source": {"ja": "規程", "en": "rules"}}})
    shorter = _with(proposals={"retention": {"days": 90, "text": {"ja": "90日", "en": "90 d"},
                                             "source": {"ja": "規程", "en": "rules"}}})
    assert not widening(old, shorter, "proposals")
    assert widening(shorter, old, "proposals").retention == (90, 365)
    assert widening(old, load_catalogue(), "proposals").retention == (365, None)


# -- pipeline level: nothing leaves for a purpose the update paused -------------------------

def _day_of_readings() -> list[Reading]:
    return [Reading(device="inv", point="pv.power", kind=PointKind.POWER, value=500.0,
                    unit="W", ts=T0 + timedelta(minutes=m), quality=Quality.GOOD)
            for m in range(0, 40 * 60, 5)]


def test_nothing_is_released_for_a_purpose_the_update_paused(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.set_grant("proposals", "company", "1d", source="household_page",
                     now=T0 - timedelta(days=1))
    new = _with(proposals={"finest_tier": "30min", "rounding": {
        "1mo": {"energy": 1000, "power": 100}, "1d": {"energy": 100, "power": 100},
        "30min": {"energy": 100, "power": 100}}})
    ledger.apply_catalogue(new, T0)
    minimiser = Minimiser(new, tz="Asia/Tokyo")
    minimiser.feed(_day_of_readings())
    end = T0 + timedelta(hours=40)  # a whole local day (the second) has ended
    releases = minimiser.flush(end, ledger.grants(end))
    assert {r.purpose for r in releases} >= {"service"}
    assert "proposals" not in {r.purpose for r in releases}
    assert "improvement" in {r.purpose for r in releases}  # not widened: still at 1d


# -- the catalogue matches the seed ---------------------------------------------------------

@pytest.mark.parametrize("point", ["inverter.state", "battery.events", "inverter.temperature",
                                   "battery.temperature", "battery.soh"])
def test_maintenance_watch_receives_no_status_or_fault_history(point: str) -> None:
    cat = load_catalogue()
    assert not cat.allows("maintenance_watch", point)
    assert cat.allows("service", point)  # the contract's own fault handling still has it


def test_a_retention_period_appears_only_with_its_source() -> None:
    for p in load_catalogue().spec.purposes:
        ret = p.retention
        assert ret.text is None or ret.source is not None, p.id
        assert ret.days is None, p.id  # the seed sets no period for any purpose


# -- ledgers written before the rule ----------------------------------------------------------

def test_a_ledger_an_older_update_switched_on_opens_and_the_grant_is_paused(
        tmp_path: Path) -> None:
    """The incident: an update with proposals defaulting to 1d reset proposals on (event
    ``reset``). Such a ledger still opens, and the next catalogue pauses that grant."""
    path = tmp_path / "ledger.json"
    ledger = _ledger(tmp_path)
    raw = _raw("2026.5")
    _purpose(raw, "proposals")["default_tier"] = "1d"
    _purpose(raw, "proposals")["power_stats"] = ["mean", "max"]
    bad = parse_catalogue(json.dumps(raw), past=True)  # what the old code accepted
    p = bad.purposes["proposals"]
    t1 = T0 + timedelta(days=1)
    old_reset = ledger._draft(p, p.recipients[0], Tier.DAY, event=Event.RESET,
                              source=Source.CATALOGUE_UPDATE, now=t1, needs_agreement=True,
                              catalogue=bad)
    ledger._write([old_reset], bad)
    ledger.close()
    assert Ledger.open(path, bad, "site-7f3a", t1).grants(t1)[("proposals", "company")]

    t2 = t1 + timedelta(days=1)
    fixed = Ledger.open(path, load_catalogue(), "site-7f3a", t2)
    [paused] = [c.record for c in fixed.startup_changes if c.record.purpose == "proposals"]
    assert (paused.event, paused.tier, paused.needs_agreement) == (Event.PAUSED, None, True)
    assert paused.data["restore_tier"] is None  # it was off before: nothing to restore
    assert paused.data["catalogue_changes"] == {"reset": ["off", "1d"]}
    assert ("proposals", "company") not in fixed.grants(t2)


def test_a_stored_catalogue_defaulting_consent_on_is_not_used_at_start_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = _raw("2030.1")
    _purpose(raw, "proposals")["default_tier"] = "1d"
    (tmp_path / CATALOGUE_FILE).write_text(json.dumps(raw), encoding="utf-8")
    factory = load_catalogue()
    with caplog.at_level(logging.WARNING, logger="agent.store.catalogue"):
        assert newest_catalogue(factory, tmp_path) is factory
    assert "'proposals'" in caplog.text and "'company'" in caplog.text
