"""Map the SunSpec models that matter to canonical points (see :mod:`drivers.points`).

The result is a tuple of :class:`drivers.registers.RegisterPoint`: the read planner and the
poller need nothing SunSpec-specific. Each point's decoder reads its registers and, when scaled,
its scale-factor register (listed in ``extra`` so the poller reads it too); values come out in
SI units with the canonical signs. The sign conventions of the SunSpec models already match:
meter ``W`` (201-204) is positive when importing, battery ``W`` (802) positive when discharging,
DER ``W`` (701) positive when generating. Enumerations become their symbol names (``"MPPT"``;
a value the model does not define is garbage, an error reading),
bitfields the comma-separated names of the set flags (``""`` when none is set).

Rules are data, in priority order: where several models provide a point, the first rule whose
model the device has wins; given the model registers read at discovery, a source whose value is
not implemented gives way to the next one that is. Only the first instance of each model id in
the chain is mapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drivers.models import PointKind
from drivers.points import spec
from drivers.registers import RegisterImage, RegisterPoint
from drivers.sunspec.decode import Layout, PlacedPoint, apply_scale, layout, raw_at
from drivers.sunspec.discovery import ModelInfo, SunSpecDevice
from drivers.sunspec.models import PointDef, load_model


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """Canonical ``point`` comes from SunSpec point ``source`` of any of ``models``.

    ``factor`` converts units the definition does not name (701's power factor is a ratio,
    the canonical one a percentage); ``requires`` lists models of which the device must carry
    at least one for the rule to apply.
    """

    point: str
    models: tuple[int, ...]
    source: str
    factor: float = 1.0
    requires: tuple[int, ...] = ()


INVERTERS = (101, 102, 103, 111, 112, 113)
METERS = (201, 202, 203, 204)
STORAGE = (124, 713, 802)


def _r(point: str, models: tuple[int, ...], source: str, *, factor: float = 1.0,
       requires: tuple[int, ...] = ()) -> Rule:
    return Rule(point=point, models=models, source=source, factor=factor, requires=requires)


RULES: tuple[Rule, ...] = (
    _r("device.manufacturer", (1,), "Mn"), _r("device.model", (1,), "Md"),
    _r("device.serial", (1,), "SN"), _r("device.version", (1,), "Vr"),
    _r("pv.power", INVERTERS, "W"), _r("pv.power", (701,), "W"),
    _r("pv.energy", INVERTERS, "WH"), _r("pv.energy", (701,), "TotWhInj"),
    _r("pv.energy", (122,), "ActWh"),
    _r("pv.dc_power", INVERTERS, "DCW"), _r("pv.dc_power", (714,), "DCW"),
    _r("pv.dc_voltage", INVERTERS, "DCV"),
    _r("pv.dc_current", INVERTERS, "DCA"), _r("pv.dc_current", (714,), "DCA"),
    _r("inverter.ac_voltage", INVERTERS, "PhVphA"), _r("inverter.ac_voltage", (701,), "LNV"),
    _r("inverter.ac_voltage", (701,), "VL1"),
    _r("inverter.ac_current", INVERTERS, "A"), _r("inverter.ac_current", (701,), "A"),
    _r("inverter.frequency", INVERTERS, "Hz"), _r("inverter.frequency", (701,), "Hz"),
    _r("inverter.power_factor", INVERTERS, "PF"),
    _r("inverter.power_factor", (701,), "PF", factor=100.0),
    _r("inverter.temperature", INVERTERS, "TmpCab"),
    _r("inverter.temperature", (701,), "TmpCab"),
    _r("inverter.state", INVERTERS, "St"), _r("inverter.state", (701,), "InvSt"),
    _r("inverter.events", INVERTERS, "Evt1"), _r("inverter.events", (701,), "Alrm"),
    _r("inverter.rated_power", (120,), "WRtg"), _r("inverter.rated_power", (702,), "WMaxRtg"),
    _r("battery.power", (802,), "W"),
    _r("battery.soc", (802,), "SoC"), _r("battery.soc", (713,), "SoC"),
    _r("battery.soc", (124,), "ChaState"),
    _r("battery.soh", (802,), "SoH"), _r("battery.soh", (713,), "SoH"),
    _r("battery.capacity", (802,), "WHRtg"), _r("battery.capacity", (713,), "WHRtg"),
    _r("battery.capacity", (120,), "WHRtg", requires=STORAGE),
    _r("battery.energy_available", (713,), "WHAvail"),
    _r("battery.voltage", (802,), "V"), _r("battery.voltage", (124,), "InBatV"),
    _r("battery.state", (802, 124), "ChaSt"),
    _r("battery.events", (802,), "Evt1"),
    _r("grid.power", METERS, "W"),
    _r("grid.energy_import", METERS, "TotWhImp"), _r("grid.energy_export", METERS, "TotWhExp"),
    _r("grid.voltage", METERS, "PhV"), _r("grid.voltage", METERS, "PhVphA"),
    _r("grid.frequency", METERS, "Hz"),
)

# MPPT inputs: (model, repeating group, {canonical quantity: SunSpec point})
MPPT_SOURCES: tuple[tuple[int, str, dict[str, str]], ...] = (
    (160, "module", {"power": "DCW", "voltage": "DCV", "current": "DCA", "energy": "DCWH"}),
    (714, "Prt", {"power": "DCW", "voltage": "DCV", "current": "DCA", "energy": "DCWhInj"}),
)
PV_PORT = 0  # model 714 PrtTyp: PV

INTERVALS: dict[PointKind, float] = {
    PointKind.POWER: 5.0, PointKind.GAUGE: 5.0, PointKind.STATE: 5.0, PointKind.EVENT: 5.0,
    PointKind.LEVEL: 30.0, PointKind.ENERGY: 30.0, PointKind.INFO: 86400.0,
}
"""Seconds between reads, by kind: power and state every few seconds, counters and levels
twice a minute, identity and nameplate once a day."""

UNIT_FACTORS: dict[str, float] = {"kW": 1000.0, "kWh": 1000.0, "kVA": 1000.0, "kvar": 1000.0,
                                  "mA": 0.001, "mV": 0.001}
"""Factors from SunSpec units to the canonical SI units (W, Wh, V, A); others are already SI."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SunSpecDecoder:
    """Decodes one SunSpec point from a register image (a :class:`RegisterPoint` ``decode``)."""

    point: PointDef
    address: int
    sf_address: int | None = None
    sf_const: int | None = None
    factor: float = 1.0

    def __call__(self, image: RegisterImage) -> float | str | None:
        value = raw_at(self.point, image, self.address)
        if value is None:
            return None
        if isinstance(value, str):
            return value.strip() or None
        if self.point.type.startswith("enum"):
            symbol = self.point.symbol(int(value))
            if symbol is None:  # not a value the model defines: garbage, not a state
                raise ValueError(f"{self.point.name}: {int(value)} is not a value of the model")
            return symbol
        if self.point.type.startswith("bitfield"):
            return ",".join(_flag_names(self.point, int(value)))
        if self.point.sf is not None:
            exponent = self.sf_const
            if self.sf_address is not None:
                sf = raw_at(_SF, image, self.sf_address)
                exponent = sf if isinstance(sf, int) else None
            value = apply_scale(value, exponent)  # ValueError for an out-of-range factor
            if value is None:
                return None
        return float(value) if self.factor == 1.0 else round(float(value) * self.factor, 9)


_SF = PointDef(name="SF", type="sunssf", size=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Instance:
    info: ModelInfo
    layout: Layout
    block: Sequence[int] | None

    def image(self) -> RegisterImage | None:
        if self.block is None:
            return None
        return {self.info.start + i: reg for i, reg in enumerate(self.block)}


def map_points(
    device: SunSpecDevice, blocks: Mapping[int, Sequence[int]] | None = None
) -> tuple[RegisterPoint, ...]:
    """Canonical points for a discovered device.

    ``blocks`` maps a model's start address to its registers (as read by
    :func:`drivers.sunspec.discovery.read_model`); with them, repetition counts taken from
    count points (model 714's ports) are known and unimplemented sources are passed over.
    """
    instances = _instances(device, blocks or {})
    points: list[RegisterPoint] = []
    for name in dict.fromkeys(rule.point for rule in RULES):
        chosen = _choose(name, instances)
        if chosen is not None:
            points.append(chosen)
    points.extend(_mppt_points(instances))
    return tuple(points)


def _instances(
    device: SunSpecDevice, blocks: Mapping[int, Sequence[int]]
) -> dict[int, _Instance]:
    found: dict[int, _Instance] = {}
    for info in device.models:
        definition = load_model(info.id)
        if info.id in found or definition is None:
            continue
        block = blocks.get(info.start)
        if block is not None and len(block) != info.length + 2:
            raise ValueError(f"model {info.id} at {info.start}: {len(block)} registers given, "
                             f"its length is {info.length + 2}")
        found[info.id] = _Instance(info=info, layout=layout(definition, info.length, block),
                                   block=block)
    return found


def _choose(name: str, instances: Mapping[int, _Instance]) -> RegisterPoint | None:
    candidates: list[tuple[RegisterPoint, RegisterImage | None]] = []
    for rule in RULES:
        if rule.point != name or (rule.requires and not set(rule.requires) & set(instances)):
            continue
        for model_id in rule.models:
            instance = instances.get(model_id)
            placed = instance.layout.find((rule.source,)) if instance else None
            if instance is not None and placed is not None:
                candidates.append((_register_point(name, instance, placed, rule.factor),
                                   instance.image()))
    for point, image in candidates:
        if image is None or _implemented(point, image):
            return point
    return candidates[0][0] if candidates else None


def _implemented(point: RegisterPoint, image: RegisterImage) -> bool:
    try:
        return point.decode(image) not in (None, "")
    except ValueError:
        return False


def _mppt_points(instances: Mapping[int, _Instance]) -> list[RegisterPoint]:
    for model_id, group, quantities in MPPT_SOURCES:
        instance = instances.get(model_id)
        if instance is None:
            continue
        points: list[RegisterPoint] = []
        number = 0
        for index in range(instance.layout.count((group,))):
            if not _is_pv_input(instance, group, index):
                continue
            number += 1
            for quantity, source in quantities.items():
                placed = instance.layout.find((group, index, source))
                if placed is not None:
                    points.append(_register_point(f"pv.mppt.{number}.{quantity}", instance,
                                                  placed, 1.0))
        if points:
            return points
    return []


def _is_pv_input(instance: _Instance, group: str, index: int) -> bool:
    """Model 160 modules are all PV inputs; model 714 ports only if their type says PV."""
    port_type = instance.layout.find((group, index, "PrtTyp"))
    if port_type is None:
        return True
    image = instance.image()
    if image is None:
        return False
    decoder = SunSpecDecoder(point=port_type.point,
                             address=instance.info.start + port_type.offset)
    return decoder(image) == port_type.point.symbol(PV_PORT)


def _register_point(
    name: str, instance: _Instance, placed: PlacedPoint, factor: float
) -> RegisterPoint:
    canonical = spec(name)
    start = instance.info.start
    sf_address = None if placed.sf_offset is None else start + placed.sf_offset
    unit_factor = UNIT_FACTORS.get(placed.point.units or "", 1.0)
    decoder = SunSpecDecoder(point=placed.point, address=start + placed.offset,
                             sf_address=sf_address, sf_const=placed.sf_const,
                             factor=factor * unit_factor)
    return RegisterPoint(
        point=name, kind=canonical.kind, unit=canonical.unit, address=start + placed.offset,
        count=placed.point.size, interval=INTERVALS[canonical.kind], decode=decoder,
        extra=() if sf_address is None else ((sf_address, 1),),
    )


def _flag_names(point: PointDef, value: int) -> list[str]:
    bits = 32 if point.type == "bitfield32" else 16
    return [point.symbol(bit) or f"BIT_{bit}" for bit in range(bits) if value >> bit & 1]

