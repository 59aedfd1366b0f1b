"""The purpose catalogue: factory content, validation messages, point mapping, material change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drivers.points import POINTS
from policy.catalogue import load_catalogue, material_change, parse_catalogue
from policy.errors import CatalogueError


def _raw() -> dict[str, Any]:
    return load_catalogue().spec.model_dump(mode="json")


def test_factory_catalogue_has_the_designed_purposes() -> None:
    cat = load_catalogue()
    assert list(cat.purposes) == ["service", "improvement", "proposals", "support", "survey",
                                  "maintenance_watch"]
    assert cat.purposes["support"].time_boxed_hours == 72
    assert cat.purposes["service"].required and not cat.purposes["proposals"].required
    assert {r.kind for r in cat.purposes["maintenance_watch"].recipients} == {"third_party"}
    assert "APPI Art. 27(1)" in cat.purposes["maintenance_watch"].legal_basis.articles
    assert all("Art. 23" not in a for p in cat.purposes.values() for a in p.legal_basis.articles)
    assert cat.purposes["service"].legal_basis.seed_reference_ja is not None
    assert "第23条第4項" in cat.purposes["service"].legal_basis.seed_reference_ja
    assert len(cat.content_hash) == 64 and cat.content_hash == load_catalogue().content_hash


def test_every_category_the_seed_lists_is_present() -> None:
    cat = load_catalogue()
    not_collected = {c.id for c in cat.categories.values() if not c.collected_by_gateway}
    assert {"water", "gas", "external_generation", "contract", "household",
            "contact"} <= not_collected
    assert {"consumption", "pv", "battery", "equipment", "equipment_status"} <= set(
        cat.categories) - not_collected


@pytest.mark.parametrize(("point", "category"), [
    ("pv.power", "pv"), ("pv.mppt.2.power", "pv"), ("inverter.ac_voltage", "pv"),
    ("inverter.state", "equipment_status"), ("battery.events", "equipment_status"),
    ("battery.soc", "battery"), ("grid.energy_import", "consumption"),
    ("load.power", "consumption"), ("device.serial", "equipment"),
    ("inverter.rated_power", "equipment"), ("weather.temperature", None),
])
def test_points_map_to_categories(point: str, category: str | None) -> None:
    assert load_catalogue().category_of(point) == category


def test_every_canonical_point_has_a_collected_category() -> None:
    cat = load_catalogue()
    for name in POINTS:
        category = cat.category_of(name)
        assert category is not None, name
        assert cat.categories[category].collected_by_gateway, name


def test_device_identity_goes_only_to_purposes_with_equipment() -> None:
    cat = load_catalogue()
    assert {pid for pid in cat.purposes if cat.allows(pid, "device.serial")} == {
        "service", "improvement", "support", "maintenance_watch"}
    assert not cat.allows("proposals", "device.serial")


@pytest.mark.parametrize(("mutate", "field", "problem"), [
    (lambda r: r["purposes"][2].update(default_tier="hourly"), "purposes.2.default_tier",
     "Input should be"),
    (lambda r: r["purposes"][2].update(default_tier="30min"), "purposes.2.default_tier",
     "finer than finest_tier"),
    (lambda r: r["purposes"][0]["categories"].append("dreams"), "purposes.0.categories.5",
     "unknown category"),
    (lambda r: r["purposes"][1]["recipients"][0].update(kind="friend"),
     "purposes.1.recipients.0.kind", "Input should be"),
    (lambda r: r["purposes"][1].update(colour="red"), "purposes.1.colour", "Extra inputs"),
    (lambda r: r["purposes"].append(r["purposes"][0]), "purposes.6.id", "duplicate id"),
    (lambda r: r["purposes"][1].update(required=True), "purposes.1.required_tier",
     "exactly when required"),
])
def test_validation_errors_name_file_and_field(tmp_path: Path, mutate: Any, field: str,
                                               problem: str) -> None:
    raw = _raw()
    mutate(raw)
    path = tmp_path / "site.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(CatalogueError, match=problem) as info:
        load_catalogue(path)
    assert info.value.field == field and info.value.source == str(path)
    assert str(path) in str(info.value)


def test_unreadable_and_broken_files() -> None:
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue("/nonexistent/catalogue.json")
    with pytest.raises(CatalogueError, match="not valid JSON"):
        parse_catalogue("{", source="x.json")


def _with(**purposes: dict[str, Any]) -> Any:
    raw = _raw()
    for p in raw["purposes"]:
        p.update(purposes.get(p["id"], {}))
    return parse_catalogue(json.dumps(raw))


def test_material_change_detects_more_invasive_versions() -> None:
    old = load_catalogue()
    assert material_change(old, old) == set()
    assert material_change(old, _with(proposals={"finest_tier": "30min"})) == {"proposals"}
    assert material_change(old, _with(proposals={"categories": ["pv", "battery", "consumption",
                                                                "equipment"]})) == {"proposals"}
    assert material_change(old, _with(proposals={"power_stats": ["mean", "max"]})) == {"proposals"}
    assert material_change(old, _with(proposals={"rounding": {"1d": {"energy": 10}}})) == {
        "proposals"}
    more = _raw()["purposes"][5]["recipients"] + [
        {"id": "aggregator", "kind": "third_party", "name": {"ja": "集約者", "en": "Aggregator"}}]
    assert material_change(old, _with(maintenance_watch={"recipients": more})) == {
        "maintenance_watch"}
    # less invasive: fewer categories, coarser tier — not material
    assert material_change(old, _with(proposals={"categories": ["pv"]},
                                      improvement={"finest_tier": "1d", "rounding": {
                                          "1d": {"energy": 10, "power": 10},
                                          "1mo": {"energy": 100, "power": 10}}})) == set()


def test_wider_category_pattern_is_material_for_its_purposes() -> None:
    raw = _raw()
    next(c for c in raw["categories"] if c["id"] == "battery")["points"].append("ev.*")
    changed = material_change(load_catalogue(), parse_catalogue(json.dumps(raw)))
    assert changed == {"service", "improvement", "proposals", "support", "maintenance_watch"}
