"""Register profiles: the shipped files validate, decode as documented, and bad files are named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from drivers import codec
from drivers.errors import ProfileError
from drivers.models import PointKind
from drivers.points import spec
from drivers.profiles import PROFILE_DIR, Profile, builtin, load

SUNGROW = PROFILE_DIR / "sungrow_sh.json"


def sungrow() -> Profile:
    return builtin()["sungrow_sh"]


def raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SUNGROW.read_text())
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "family.json"
    path.write_text(json.dumps(data))
    return path


def test_every_shipped_profile_loads_and_names_its_source() -> None:
    profiles = builtin()
    assert "sungrow_sh" in profiles
    for profile in profiles.values():
        assert profile.source.title and profile.source.url.startswith("https://")
        for point in profile.points():
            assert spec(point.point).unit == point.unit
            assert point.interval > 0


def test_sungrow_points_are_input_registers_with_canonical_metadata() -> None:
    points = {p.point: p for p in sungrow().points()}
    assert points["grid.power"].function == "input"
    assert points["grid.power"].kind is PointKind.POWER
    assert (points["grid.power"].address, points["grid.power"].count) == (13009, 2)


def image_for(address: int, regs: list[int]) -> dict[int, int]:
    return {address + i: r for i, r in enumerate(regs)}


def test_sungrow_decodes_low_word_first_and_scales_to_si() -> None:
    points = {p.point: p for p in sungrow().points()}
    # 123.4 kWh total PV generation = 1234 x 0.1 kWh, low word first
    pv_energy = points["pv.energy"]
    regs = codec.encode(1234, "uint32", word_order="little")
    assert regs == [1234, 0]
    assert pv_energy.decode(image_for(13002, regs)) == pytest.approx(123_400.0)
    # exporting 2500 W: the document's export power is +2500, canonical grid.power is -2500
    grid = points["grid.power"]
    assert grid.decode(image_for(13009, codec.encode(2500, "int32", word_order="little"))) \
        == -2500.0
    assert points["battery.soc"].decode({13022: 873}) == pytest.approx(87.3)
    assert points["inverter.temperature"].decode({5007: 0xFFEC}) == pytest.approx(-2.0)
    assert points["inverter.rated_power"].decode({5000: 100}) == pytest.approx(10_000.0)


def test_sungrow_total_pv_generation_is_document_register_13003() -> None:
    # SunGather registers-sungrow.yaml: daily_pv_generation 13002 U16, total_pv_generation
    # 13003 U32 (document numbers); modbus_sungrow.yaml: "address: 13002 # reg 13003", uint32,
    # swap word, scale 0.1. The daily counter (wire 13001) must not be part of the total.
    pv_energy = {p.point: p for p in sungrow().points()}["pv.energy"]
    assert (pv_energy.address, pv_energy.count) == (13002, 2)
    image = {13001: 57, 13002: 0x4E20, 13003: 0x0001}  # today 5.7 kWh; total 85536 x 0.1 kWh
    assert pv_energy.decode(image) == pytest.approx(8_553_600.0)
    assert "battery.power" not in {p.point for p in sungrow().points()}  # unsigned magnitude


def test_sungrow_identifies_a_device_by_its_type_code() -> None:
    profile = sungrow()
    assert profile.identify_spans() == (("input", 4999, 1), ("input", 4989, 10))
    regs = {4999: 0x0E03, **image_for(4989, codec.encode("A2350415770", "string", length=10))}
    identity = profile.identity({"input": regs})
    assert identity is not None
    assert (identity.manufacturer, identity.model, identity.serial) == \
        ("Sungrow", "SH10RT", "A2350415770")
    assert profile.identity({"input": {**regs, 4999: 0x1234}}) is None


def test_sentinel_and_nan_mean_missing(tmp_path: Path) -> None:
    data = raw()
    data["registers"] = [
        {"point": "battery.soc", "address": 0, "type": "uint16", "unit": "%", "interval": 5,
         "sentinels": [65535]},
        {"point": "pv.power", "address": 2, "type": "float32", "word_order": "big",
         "unit": "W", "interval": 5},
        {"point": "device.model", "address": 4, "type": "string", "length": 2, "unit": "",
         "interval": 3600},
    ]
    soc, power, model = load(write(tmp_path, data)).points()
    assert soc.decode({0: 0xFFFF}) is None
    assert soc.decode({0: 50}) == 50.0
    assert power.decode({2: 0x7FC0, 3: 0}) is None
    assert power.decode(image_for(2, codec.encode(1.5, "float32"))) == 1.5
    assert model.decode({4: 0, 5: 0}) is None
    assert model.decode(image_for(4, codec.encode("X1", "string", length=2))) == "X1"


def mutate(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(raw())
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("registers.3.point", "pv.colour", r"registers\.3: .*unknown canonical point"),
        ("registers.0.unit", "kW", r"registers\.0: .*unit 'kW' is not 'W'"),
        ("registers.2.type", "int24", r"registers\.2\.type"),
        ("registers.2.address", 70000, r"registers\.2\.address"),
        ("registers.2.interval", 0, r"registers\.2\.interval"),
        ("registers.2.colour", "red", r"registers\.2\.colour: Extra inputs"),
        ("registers.6.address", 65535, r"registers\.6: .*run past 65535"),
        ("registers.1", raw()["registers"][0], r"registers: .*appears twice"),
        ("function", "coil", r"function"),
        ("word_order", "middle", r"word_order"),
        ("source", DELETE, r"source: Field required"),
        ("source.url", "not a url", r"source\.url"),
        ("identify.models", {"SH": "x"}, r"identify\.models: .*not a number"),
        ("identify.serial.type", "string", r"identify\.serial: .*a string needs a length"),
        ("format", 2, r"format"),
    ],
)
def test_bad_profile_errors_name_file_and_field(tmp_path: Path, path: str, value: Any,
                                                message: str) -> None:
    if path == "identify.serial.type":
        data = mutate("identify.serial", {"address": 1, "type": "string"})
    else:
        data = mutate(path, value)
    target = write(tmp_path, data)
    with pytest.raises(ProfileError, match=message) as info:
        load(target)
    assert str(target) in str(info.value)


def test_string_register_cannot_feed_a_numeric_point(tmp_path: Path) -> None:
    data = mutate("registers.0", {"point": "pv.power", "address": 0, "type": "string",
                                  "length": 2, "unit": "W", "interval": 5})
    with pytest.raises(ProfileError, match="numeric"):
        load(write(tmp_path, data))


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{ not json")
    with pytest.raises(ProfileError, match=r"broken\.json: cannot read profile"):
        load(path)
    with pytest.raises(ProfileError, match=r"missing\.json"):
        load(tmp_path / "missing.json")


def test_profiles_are_frozen() -> None:
    profile = sungrow()
    with pytest.raises(ValueError, match="frozen"):
        profile.family = "other"  # type: ignore[misc]
