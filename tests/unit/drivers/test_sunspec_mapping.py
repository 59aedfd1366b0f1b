"""Canonical points from SunSpec models: choice of source, units, signs, scale-factor spans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path as FsPath

import pytest

from drivers.models import DeviceIdentity, PointKind
from drivers.points import spec
from drivers.registers import RegisterPoint
from drivers.sunspec.decode import Path, layout
from drivers.sunspec.discovery import ModelInfo, SunSpecDevice
from drivers.sunspec.mapping import RULES, map_points
from drivers.sunspec.models import load_model

BASE = 40000


def u16(value: int) -> list[int]:
    return [value & 0xFFFF]


def u32(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def text(value: str, size: int) -> list[int]:
    raw = value.encode().ljust(2 * size, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * size, 2)]


class Image:
    """A device: its chain of models and every register, built from per-point values."""

    def __init__(self) -> None:
        self.models: list[ModelInfo] = []
        self.registers: dict[int, int] = {}
        self.address = BASE + 2

    def add(self, model_id: int, values: Mapping[Path, list[int]], *, length: int | None = None,
            count_regs: Sequence[int] | None = None) -> None:
        definition = load_model(model_id)
        assert definition is not None
        length = length if length is not None else definition.group.points_size - 2
        block = [0] * (length + 2)
        block[0], block[1] = model_id, length
        if count_regs is not None:  # count points must be set before the layout is known
            block[: len(count_regs)] = count_regs
        for path, words in values.items():
            placed = layout(definition, length, block).find(path)
            assert placed is not None, (model_id, path)
            block[placed.offset : placed.offset + len(words)] = words
        self.models.append(ModelInfo(id=model_id, start=self.address, length=length))
        self.registers.update({self.address + i: r for i, r in enumerate(block)})
        self.address += length + 2

    def device(self) -> SunSpecDevice:
        return SunSpecDevice(unit=1, base=BASE, models=tuple(self.models), identity=DeviceIdentity(
            manufacturer="ACME", model="X", serial=None))

    def blocks(self) -> dict[int, list[int]]:
        return {m.start: [self.registers[a] for a in range(m.start, m.start + m.length + 2)]
                for m in self.models}


def by_name(points: tuple[RegisterPoint, ...]) -> dict[str, RegisterPoint]:
    names = [p.point for p in points]
    assert len(names) == len(set(names)), "a canonical point is mapped twice"
    return {p.point: p for p in points}


def read(points: dict[str, RegisterPoint], image: Image) -> dict[str, float | str | None]:
    return {name: p.decode(image.registers) for name, p in points.items()}


def common(image: Image) -> None:
    image.add(1, {("Mn",): text("ACME", 16), ("Md",): text("PV-5000", 16),
                  ("SN",): text("A1B2", 16), ("Vr",): text("1.0", 8)})


def inverter() -> Image:
    image = Image()
    common(image)
    image.add(103, {("W",): u16(4520), ("W_SF",): u16(-1), ("WH",): u32(12345),
                    ("WH_SF",): u16(1), ("PhVphA",): u16(2301), ("V_SF",): u16(-1),
                    ("Hz",): u16(5002), ("Hz_SF",): u16(-2), ("St",): u16(4),
                    ("Evt1",): u32(0b1000_0001), ("PF",): u16(0x8000), ("A",): u16(0xFFFF)})
    image.add(120, {("WRtg",): u16(5000), ("WHRtg",): u16(0xFFFF)})
    definition = load_model(160)
    assert definition is not None
    fixed = definition.group.points_size - 2
    modules = definition.group.groups[0].points_size
    image.add(160, {("DCW_SF",): u16(0), ("DCWH_SF",): u16(0), ("module", 0, "DCW"): u16(2100),
                    ("module", 1, "DCW"): u16(2300), ("module", 1, "DCWH"): u32(777)},
              length=fixed + 2 * modules)
    return image


def test_inverter_points_values_units_and_intervals() -> None:
    image = inverter()
    points = by_name(map_points(image.device()))
    values = read(points, image)
    assert values["pv.power"] == 452.0
    assert values["pv.energy"] == 123450.0
    assert values["inverter.ac_voltage"] == 230.1
    assert values["inverter.frequency"] == 50.02
    assert values["inverter.state"] == "MPPT"
    assert values["inverter.events"] == "GROUND_FAULT,OVER_TEMP"
    assert values["inverter.power_factor"] is None  # int16 0x8000: not implemented
    assert values["inverter.ac_current"] is None
    assert values["inverter.rated_power"] == 5000.0
    assert values["device.manufacturer"] == "ACME" and values["device.serial"] == "A1B2"
    assert values["pv.mppt.1.power"] == 2100.0 and values["pv.mppt.2.power"] == 2300.0
    assert values["pv.mppt.2.energy"] == 777.0
    assert "pv.mppt.3.power" not in points
    assert "battery.capacity" not in points  # 120's WHRtg counts only for storage devices
    assert not any(name.startswith(("grid.", "battery.")) for name in points)
    for name, point in points.items():
        assert (point.kind, point.unit) == (spec(name).kind, spec(name).unit)
    assert points["pv.power"].interval < points["pv.energy"].interval < points[
        "device.model"].interval
    assert points["pv.power"].kind is PointKind.POWER


def test_scale_factor_registers_are_listed_for_the_poller() -> None:
    image = inverter()
    points = by_name(map_points(image.device()))
    w_sf = load_model(103)
    assert w_sf is not None
    sf_offset = layout(w_sf, image.models[1].length).find(("W_SF",))
    assert sf_offset is not None
    assert points["pv.power"].extra == ((image.models[1].start + sf_offset.offset, 1),)
    assert points["device.model"].extra == ()
    spans = points["pv.power"].spans()
    partial = {a: image.registers[a] for a, n in spans for a in range(a, a + n)}
    assert points["pv.power"].decode(partial) == 452.0


def test_meter_export_is_negative_grid_power() -> None:
    image = Image()
    common(image)
    image.add(203, {("W",): u16(-1500), ("W_SF",): u16(0), ("TotWhImp",): u32(2000),
                    ("TotWhExp",): u32(3000), ("TotWh_SF",): u16(3), ("PhV",): u16(1012),
                    ("V_SF",): u16(-1), ("Hz",): u16(0x8000)})
    values = read(by_name(map_points(image.device())), image)
    assert values["grid.power"] == -1500.0
    assert values["grid.energy_import"] == 2_000_000.0  # kWh-scaled counter -> Wh
    assert values["grid.energy_export"] == 3_000_000.0
    assert values["grid.voltage"] == 101.2
    assert values["grid.frequency"] is None


def test_battery_discharging_is_positive() -> None:
    image = Image()
    common(image)
    image.add(802, {("W",): u16(1200), ("W_SF",): u16(0), ("SoC",): u16(655),
                    ("SoC_SF",): u16(-1), ("WHRtg",): u16(10), ("WHRtg_SF",): u16(3),
                    ("ChaSt",): u16(3), ("SoH",): u16(0xFFFF), ("Evt1",): u32(0)})
    values = read(by_name(map_points(image.device())), image)
    assert values["battery.power"] == 1200.0
    assert values["battery.soc"] == 65.5
    assert values["battery.capacity"] == 10000.0
    assert values["battery.state"] == "DISCHARGING"
    assert values["battery.events"] == ""
    assert values["battery.soh"] is None


def der_device() -> Image:
    image = Image()
    common(image)
    image.add(701, {("W",): u16(3000), ("W_SF",): u16(0), ("PF",): u16(985),
                    ("PF_SF",): u16(-3), ("InvSt",): u16(3), ("TotWhInj",): [0, 0, 0, 9000],
                    ("TotWh_SF",): u16(0)})
    image.add(702, {("WMaxRtg",): u16(6000), ("W_SF",): u16(0)})
    image.add(802, {("SoH",): u16(0xFFFF), ("SoH_SF",): u16(0), ("WHRtg",): u16(0xFFFF),
                    ("ChaSt",): u16(4)})
    image.add(713, {("WHRtg",): u16(100), ("WH_SF",): u16(2), ("SoH",): u16(97),
                    ("Pct_SF",): u16(0)})
    ports = [(0, 1000), (1, 500), (0, 2000)]  # (PrtTyp, DCW): PV, ESS, PV
    definition = load_model(714)
    assert definition is not None
    fixed = definition.group.points_size - 2
    size = definition.group.groups[0].points_size
    values: dict[Path, list[int]] = {("DCW_SF",): u16(0)}
    for i, (kind, watts) in enumerate(ports):
        values[("Prt", i, "PrtTyp")] = u16(kind)
        values[("Prt", i, "DCW")] = u16(watts)
    nprt = [714, fixed + 3 * size, 0, 0, len(ports)]  # ID, L, PrtAlrms, NPrt
    image.add(714, values, length=fixed + 3 * size, count_regs=nprt)
    return image


def test_der_models_with_blocks() -> None:
    image = der_device()
    points = by_name(map_points(image.device(), image.blocks()))
    values = read(points, image)
    assert values["pv.power"] == 3000.0
    assert values["pv.energy"] == 9000.0
    assert values["inverter.power_factor"] == 98.5  # ratio 0.985 -> percent
    assert values["inverter.state"] == "RUNNING"
    assert values["inverter.rated_power"] == 6000.0
    assert values["battery.capacity"] == 10000.0
    assert values["battery.soh"] == 97.0  # 802's is not implemented: 713's is used
    assert values["pv.mppt.1.power"] == 1000.0 and values["pv.mppt.2.power"] == 2000.0
    assert "pv.mppt.3.power" not in points  # the ESS port is not an MPPT input


def test_without_blocks_first_rule_wins_and_counted_ports_are_unknown() -> None:
    image = der_device()
    points = by_name(map_points(image.device()))
    assert points["battery.soh"].address == image.models[3].start + 2 + 11  # 802 SoH
    assert not any(name.startswith("pv.mppt.") for name in points)


def test_an_enumeration_value_the_model_does_not_define_is_an_error() -> None:
    image = der_device()
    points = by_name(map_points(image.device(), image.blocks()))
    state = points["battery.state"]
    assert state.decode(image.registers) == "CHARGING"
    with pytest.raises(ValueError, match="not a value of the model"):
        state.decode({**image.registers, state.address: 4242})


def test_garbage_and_missing_registers_raise_value_error() -> None:
    image = inverter()
    points = by_name(map_points(image.device()))
    sf_address = points["pv.power"].extra[0][0]
    with pytest.raises(ValueError, match="out of range"):
        points["pv.power"].decode({**image.registers, sf_address: 42})
    with pytest.raises(ValueError, match="not read"):
        points["pv.power"].decode({points["pv.power"].address: 1})


def test_block_of_the_wrong_length_is_refused() -> None:
    image = inverter()
    blocks = image.blocks()
    blocks[image.models[1].start] = blocks[image.models[1].start][:-1]
    with pytest.raises(ValueError, match="model 103"):
        map_points(image.device(), blocks)


def test_rules_name_real_points() -> None:
    for rule in RULES:
        spec(rule.point)  # raises KeyError for an unknown canonical point
        sources = [load_model(m) for m in rule.models]
        assert all(d is not None and d.point(rule.source) for d in sources), rule


def test_docs_name_every_mapped_point() -> None:
    doc = (FsPath(__file__).resolve().parents[3] / "docs" / "sunspec.md").read_text("utf-8")
    missing = sorted({rule.point for rule in RULES if f"`{rule.point}`" not in doc})
    assert missing == []
