"""EPC tables as data, and decoding of PV, battery and smart-meter values."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from drivers.echonet import meter
from drivers.echonet.tables import (
    ClassTable,
    MeterContext,
    decode_value,
    load_tables,
    unit_kwh,
)
from drivers.errors import ProfileError

TABLES = load_tables()
PV, BATTERY, METER = (TABLES[c].by_epc() for c in (0x0279, 0x027D, 0x0288))
CTX = MeterContext(coefficient=1, unit_kwh=0.1)


def test_every_table_names_its_source_and_maps_to_canonical_points() -> None:
    assert set(TABLES) == {0x0279, 0x027D, 0x0288}
    for table in TABLES.values():
        assert "APPENDIX" in table.source.title and table.source.version.startswith("Release")
    assert PV[0xE0].point == "pv.power" and PV[0xE3].point == "pv.energy_sold"
    assert {p.point for p in TABLES[0x027D].polled()} >= {
        "battery.power", "battery.soc", "battery.energy_available", "battery.state",
        "battery.energy_charged", "battery.energy_discharged"}


def test_pv_values() -> None:
    assert decode_value(PV[0xE0], bytes.fromhex("0BB8")) == 3000.0
    assert decode_value(PV[0xE1], (1234567).to_bytes(4, "big")) == 1234567.0  # 0.001 kWh = Wh
    assert decode_value(PV[0xE0], bytes.fromhex("FFFF")) is None  # overflow code: MISSING
    with pytest.raises(ValueError, match="expected 2 bytes"):
        decode_value(PV[0xE0], b"\x01")


def test_battery_sign_is_positive_when_discharging() -> None:
    # APPENDIX 0x027D EPC 0xD3: positive while charging, negative while discharging.
    charging = (1500).to_bytes(4, "big", signed=True)
    discharging = (-800).to_bytes(4, "big", signed=True)
    assert decode_value(BATTERY[0xD3], charging) == -1500.0
    assert decode_value(BATTERY[0xD3], discharging) == 800.0
    assert decode_value(BATTERY[0xE4], b"\x37") == 55.0
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        decode_value(BATTERY[0xE4], b"\x65")
    assert decode_value(BATTERY[0xCF], b"\x43") == "discharging"
    assert decode_value(BATTERY[0xDA], b"\x46") == "automatic"
    with pytest.raises(ValueError, match="unknown code 0x47"):
        decode_value(BATTERY[0xCF], b"\x47")


def test_meter_instantaneous_power_and_sentinels() -> None:
    assert decode_value(METER[0xE7], bytes.fromhex("00000278")) == 632.0
    assert decode_value(METER[0xE7], bytes.fromhex("FFFFFF38")) == -200.0  # exporting
    # futomi/node-wisunrb README, echonet-data example: EPC E7, EDT FFFFFDF4 -> -524 W.
    assert decode_value(METER[0xE7], bytes.fromhex("FFFFFDF4")) == -524.0
    # MRA 0x0288 0xE7: -2147483647..2147483645 W, 0x7FFFFFFE no data; 0x7FFFFFFF overflow and
    # 0x80000000 underflow are the signed long codes.
    assert decode_value(METER[0xE7], bytes.fromhex("80000001")) == -2147483647.0
    assert decode_value(METER[0xE7], bytes.fromhex("7FFFFFFD")) == 2147483645.0
    for code in ("7FFFFFFE", "7FFFFFFF", "80000000"):
        assert decode_value(METER[0xE7], bytes.fromhex(code)) is None


def test_meter_cumulative_codes_follow_the_mra() -> None:
    # MRA 0x0288 0xE0/0xE3: 0..99,999,999 (0x05F5E0FF), overflowCode/underflowCode false,
    # 0xFFFFFFFE no data. So 0xFFFFFFFF is garbage (ERROR), not a missing value.
    assert decode_value(METER[0xE0], bytes.fromhex("05F5E0FF"), CTX) == 9_999_999_900.0
    assert decode_value(METER[0xE0], bytes.fromhex("FFFFFFFE"), CTX) is None
    for code in ("FFFFFFFF", "05F5E100"):
        with pytest.raises(ValueError, match=r"outside 0\.\.99999999"):
            decode_value(METER[0xE0], bytes.fromhex(code), CTX)
    # 0xD3 coefficient: MRA number_0-999999, OpenECHO 0x00000000-0x000F423F.
    assert METER[0xD3].min == 0 and METER[0xD3].max == 0x000F423F


def test_sentinels_are_per_property() -> None:
    assert METER[0xE0].sentinels() == {0xFFFFFFFE}
    assert METER[0xE7].sentinels() == {0x7FFFFFFE, 0x7FFFFFFF, -0x80000000}
    assert PV[0xE0].sentinels() == {0xFFFF, 0xFFFE}  # unsigned overflow, underflow
    assert BATTERY[0xD3].sentinels() == {0x7FFFFFFF, -0x80000000}
    bad = {**METER[0xE0].model_dump(), "no_data": ["0x00000010"]}
    with pytest.raises(ValueError, match="no-data code 0x00000010 is inside the valid range"):
        type(METER[0xE0]).model_validate(bad)


def test_pv_and_battery_ranges_from_openecho() -> None:
    # OpenECHO HouseholdSolarPowerGeneration.java: 0xE0 0x0000-0xFFFD W; 0xE1/0xE3
    # 0x00000000-0x3B9AC9FF in 0.001 kWh.
    assert decode_value(PV[0xE0], bytes.fromhex("FFFD")) == 65533.0
    assert decode_value(PV[0xE3], bytes.fromhex("3B9AC9FF")) == 999_999_999.0
    with pytest.raises(ValueError, match="outside"):
        decode_value(PV[0xE1], bytes.fromhex("3B9ACA00"))
    # OpenECHO Battery.java 0xD3: 0x00000001-0x3B9AC9FF charging (positive),
    # 0xFFFFFFFF-0xC4653601 discharging (negative); canonical battery.power is the opposite.
    assert decode_value(BATTERY[0xD3], bytes.fromhex("3B9AC9FF")) == -999_999_999.0
    assert decode_value(BATTERY[0xD3], bytes.fromhex("FFFFFFFF")) == 1.0
    assert decode_value(BATTERY[0xD3], bytes.fromhex("C4653601")) == 999_999_999.0
    # EL-WebAPI storageBattery 0xA8/0xA9: kWh 0..999999.999, minimumDigit 0.001 -> Wh.
    assert decode_value(BATTERY[0xA8], bytes.fromhex("3B9AC9FF")) == 999_999_999.0
    assert decode_value(BATTERY[0xA9], bytes.fromhex("000004D2")) == 1234.0


@pytest.mark.parametrize(("code", "kwh"), [("00", 1.0), ("01", 0.1), ("03", 0.001),
                                           ("0A", 10.0), ("0B", 100.0), ("0D", 10000.0)])
def test_meter_unit_codes(code: str, kwh: float) -> None:
    assert unit_kwh(METER[0xE1], bytes.fromhex(code)) == kwh


def test_meter_cumulative_uses_coefficient_and_unit() -> None:
    raw = (65139).to_bytes(4, "big")
    assert decode_value(METER[0xE0], raw, CTX) == 6513900.0
    assert decode_value(METER[0xE0], raw, MeterContext(coefficient=10, unit_kwh=0.01)) \
        == 6513900.0
    assert decode_value(METER[0xE3], bytes.fromhex("FFFFFFFE"), CTX) is None
    with pytest.raises(ValueError, match=r"unit \(0xE1\) is unknown"):
        decode_value(METER[0xE0], raw, MeterContext())
    with pytest.raises(ValueError, match="unknown unit code"):
        unit_kwh(METER[0xE1], b"\x05")


def test_fixed_time_value_is_jst_converted_to_utc() -> None:
    edt = bytes.fromhex("07EA05140E0000" "0000FE68")  # 2026-05-20 14:00:00 JST, 65128
    item = meter.decode_fixed_time(METER[0xEA], edt, CTX)
    assert item.ts == datetime(2026, 5, 20, 5, 0, tzinfo=UTC)
    assert item.value == 6512800.0
    empty = meter.decode_fixed_time(METER[0xEB], edt[:7] + bytes.fromhex("FFFFFFFE"), CTX)
    assert empty.value is None and empty.error is None
    with pytest.raises(ValueError, match="bad timestamp"):
        meter.decode_fixed_time(METER[0xEA], bytes.fromhex("07EA0D140E0000") + bytes(4), CTX)


def test_history_has_48_half_hours_and_no_data_slots() -> None:
    values = [1000 + i for i in range(40)] + [0xFFFFFFFE] * 8
    edt = (1).to_bytes(2, "big") + b"".join(v.to_bytes(4, "big") for v in values)
    items = meter.decode_history(METER[0xE2], edt, CTX, today=date(2026, 5, 21))
    assert len(items) == 48
    assert items[0].ts == datetime(2026, 5, 19, 15, 0, tzinfo=UTC)  # 2026-05-20 00:00 JST
    assert items[1].value == 100100.0
    assert [i.value for i in items[40:]] == [None] * 8
    reading = meter.timed_reading("meter", METER[0xE2], items[47])
    assert reading.quality == "missing" and reading.value is None
    with pytest.raises(ValueError, match="expected 194 bytes"):
        meter.decode_history(METER[0xE2], edt[:-1], CTX, today=date(2026, 5, 21))


def test_history_before_any_day_is_set_has_no_values() -> None:
    # MRA 0x0288 0xE2/0xE4: the day is an unsigned short 0-99, or 0x00FF (default value).
    edt = bytes.fromhex("00FF") + bytes.fromhex("FFFFFFFE") * 48
    assert meter.decode_history(METER[0xE4], edt, CTX, today=date(2026, 5, 21)) == []
    with pytest.raises(ValueError, match=r"day 100 is outside 0\.\.99"):
        meter.decode_history(METER[0xE4], bytes.fromhex("0064") + edt[2:], CTX,
                             today=date(2026, 5, 21))


def test_bad_table_file_is_named(tmp_path: Path) -> None:
    good = json.loads((Path(__file__).parents[3] / "drivers/echonet/classes/pv_0279.json")
                      .read_text(encoding="utf-8"))
    good["properties"][0]["point"] = "pv.nonsense"
    (tmp_path / "broken.json").write_text(json.dumps(good), encoding="utf-8")
    with pytest.raises(ProfileError, match=r"(?s)broken\.json.*properties.0.*pv\.nonsense"):
        load_tables(tmp_path)
    assert ClassTable.model_validate(json.loads(json.dumps(
        {**good, "properties": good["properties"][1:]}))).code == 0x0279
