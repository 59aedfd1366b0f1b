"""EPC tables as data: one validated JSON file per device class in ``drivers/echonet/classes``.

Each file names its source (the ECHONET Lite APPENDIX release, cross-checked against the
Machine Readable Appendix) and lists, per EPC, the wire type, valid range, scaling and the
canonical point it feeds. :func:`decode_value` turns an EDT into a canonical value:
``None`` for the specification's "no data" / overflow / underflow codes (the reading is
``MISSING``), ``ValueError`` for anything else out of range or the wrong size (``ERROR``).

Which raw values are codes follows the Machine Readable Appendix: the overflow code is the
type's maximum (0xFF.., or 0x7F.. when signed) and the underflow code is 0xFF..FE (unsigned) or
0x80.. (signed), unless the property says it has none (``range_codes: false``, as the smart
meter's cumulative counts); a property's own "no data" codes (``no_data``, e.g. 0x7FFFFFFE for
the meter's instantaneous power) are listed with it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from drivers.datafiles import Frozen, Source
from drivers.errors import ProfileError
from drivers.models import PointKind
from drivers.points import spec

CLASS_DIR = Path(__file__).parent / "classes"

WireType = Literal["uint8", "uint16", "uint32", "int8", "int16", "int32"]
Decoder = Literal["number", "meter_energy", "fixed_time", "history"]
Role = Literal["coefficient", "unit"]
_SIZES = {"uint8": 1, "uint16": 2, "uint32": 4, "int8": 1, "int16": 2, "int32": 4}


def _code(text: str) -> int:
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a code (write 0xNN)") from None


class EpcSpec(Frozen):
    """One property: how to decode it and which canonical point it feeds (if any)."""

    epc: str
    name: str = Field(min_length=1)
    type: WireType
    point: str | None = None
    role: Role | None = None  # a property other values depend on (meter coefficient, unit)
    decoder: Decoder = "number"
    min: int | None = None
    max: int | None = None
    multiplier: float = 1.0
    interval: float | None = Field(default=None, gt=0)  # None: not polled (pushed or history)
    values: dict[str, str] = Field(default_factory=dict)  # enumerations: code -> text
    no_data: tuple[str, ...] = ()  # the property's own "no data" codes, e.g. "0xFFFFFFFE"
    range_codes: bool = True  # the type's overflow/underflow codes apply (see module doc)

    @model_validator(mode="after")
    def _consistent(self) -> EpcSpec:
        if not 0x80 <= self.code <= 0xFF:
            raise ValueError(f"EPC {self.epc} is not 0x80..0xFF")
        for key in (*self.values, *self.no_data):
            _code(key)
        for key in self.no_data:
            if self.min is not None and self.max is not None \
                    and self.min <= self._raw(key) <= self.max:
                raise ValueError(f"EPC {self.epc}: no-data code {key} is inside the valid range")
        if (self.point is None) == (self.role is None):
            raise ValueError(f"EPC {self.epc}: give exactly one of point or role")
        if self.point is not None:
            try:
                spec(self.point)
            except KeyError as exc:
                raise ValueError(exc.args[0]) from None
        return self

    @property
    def code(self) -> int:
        """The EPC as a number."""
        return _code(self.epc)

    def _raw(self, code: str) -> int:
        """A hex code as the raw value it stands for (two's complement when signed)."""
        value = _code(code)
        bits = 8 * _SIZES[self.type]
        if self.type.startswith("int") and value >= 1 << (bits - 1):
            value -= 1 << bits
        return value

    def sentinels(self) -> frozenset[int]:
        """Raw values that mean overflow, underflow or "no data" for this property."""
        codes = {self._raw(c) for c in self.no_data}
        if self.range_codes:
            codes |= range_codes(self.type)
        return frozenset(codes)

    @property
    def size(self) -> int:
        """Bytes of one value on the wire."""
        return _SIZES[self.type]

    @property
    def kind(self) -> PointKind:
        """The canonical point's kind."""
        return spec(self.point).kind if self.point else PointKind.INFO

    @property
    def unit(self) -> str:
        """The canonical point's unit."""
        return spec(self.point).unit if self.point else ""


class ClassTable(Frozen):
    """The EPC table of one device class."""

    format: Literal[1]
    class_code: str
    name: str = Field(min_length=1)
    source: Source
    properties: tuple[EpcSpec, ...] = Field(min_length=1)

    @property
    def code(self) -> int:
        """The class code (class group and class) as a number, e.g. 0x0279."""
        return _code(self.class_code)

    def by_epc(self) -> dict[int, EpcSpec]:
        """EPC -> spec."""
        return {p.code: p for p in self.properties}

    def polled(self) -> tuple[EpcSpec, ...]:
        """Properties read on a schedule."""
        return tuple(p for p in self.properties if p.interval is not None)


@functools.cache
def load_tables(directory: Path = CLASS_DIR) -> dict[int, ClassTable]:
    """Every class table in ``directory``, by class code; a bad file raises ProfileError."""
    tables: dict[int, ClassTable] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            table = ClassTable.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValidationError, json.JSONDecodeError, ValueError) as exc:
            raise ProfileError(f"{path.name}: {exc}") from exc
        if table.code in tables:
            raise ProfileError(f"{path.name}: class {table.class_code} defined twice")
        tables[table.code] = table
    return tables


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterContext:
    """What a smart meter's cumulative values need: 0xD3 coefficient and 0xE1 unit (kWh)."""

    coefficient: int = 1
    unit_kwh: float | None = None


def range_codes(wire: str) -> frozenset[int]:
    """The APPENDIX overflow and underflow codes of a wire type: unsigned 0xFF..FF and
    0xFF..FE, signed 0x7F..FF and 0x80..00 (the MRA's ``overflowCode``/``underflowCode``)."""
    bits = 8 * _SIZES[wire]
    if wire.startswith("u"):
        top = (1 << bits) - 1
        return frozenset({top, top - 1})
    high = (1 << (bits - 1)) - 1
    return frozenset({high, -(high + 1)})


def raw_number(entry: EpcSpec, edt: bytes) -> int | None:
    """The raw integer of a numeric EDT; ``None`` for a no-data code; ValueError otherwise."""
    if len(edt) != entry.size:
        raise ValueError(f"EPC {entry.epc}: expected {entry.size} bytes, got {len(edt)}")
    raw = int.from_bytes(edt, "big", signed=entry.type.startswith("int"))
    return checked(entry, raw)


def checked(entry: EpcSpec, raw: int) -> int | None:
    """Apply the range of ``entry`` to ``raw``."""
    low = entry.min if entry.min is not None else -(1 << 63)
    high = entry.max if entry.max is not None else 1 << 63
    if low <= raw <= high:
        return raw
    if raw in entry.sentinels():
        return None
    raise ValueError(f"EPC {entry.epc}: {raw} is outside {entry.min}..{entry.max}")


def unit_kwh(entry: EpcSpec, edt: bytes) -> float:
    """Decode the meter's 0xE1 unit code into kWh per count."""
    raw = raw_number(entry, edt)
    text = entry.values.get(f"0x{raw:02X}") if raw is not None else None
    if text is None:
        raise ValueError(f"EPC {entry.epc}: unknown unit code {edt.hex()}")
    return float(text)


def decode_value(entry: EpcSpec, edt: bytes,
                 meter: MeterContext | None = None) -> float | str | None:
    """Decode a polled property (``number`` or ``meter_energy``) into canonical units."""
    raw = raw_number(entry, edt)
    if raw is None:
        return None
    if entry.values:
        text = entry.values.get(f"0x{raw:02X}")
        if text is None:
            raise ValueError(f"EPC {entry.epc}: unknown code 0x{raw:02X}")
        return text
    if entry.decoder == "meter_energy":
        return meter_wh(raw, meter)
    if entry.decoder != "number":
        raise ValueError(f"EPC {entry.epc}: decoder {entry.decoder!r} is not a plain value")
    return raw * entry.multiplier + 0.0


def meter_wh(raw: int, meter: MeterContext | None) -> float:
    """Cumulative counts to Wh: counts x coefficient x unit (kWh) x 1000."""
    if meter is None or meter.unit_kwh is None:
        raise ValueError("the meter's unit (0xE1) is unknown, cumulative values cannot be scaled")
    return round(raw * meter.coefficient * meter.unit_kwh * 1000.0, 6)


MAKERS_FILE = Path(__file__).parent / "makers.json"
_MAKER_CODE = r"^[0-9A-F]{6}$"


class MakerList(Frozen):
    """The published ECHONET manufacturer codes (property 0x8A), with their source."""

    format: Literal[1]
    source: Source
    reserved: dict[Annotated[str, Field(pattern=_MAKER_CODE)], str]
    makers: dict[Annotated[str, Field(pattern=_MAKER_CODE)], str]


@functools.cache
def load_makers(path: Path = MAKERS_FILE) -> MakerList:
    """The maker code list; a bad file raises ProfileError."""
    try:
        return MakerList.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValidationError, json.JSONDecodeError, OSError) as exc:
        raise ProfileError(f"{path.name}: {exc}") from exc


def maker_name(code: str | None) -> str | None:
    """The maker's name for a manufacturer code as identities carry it (``0x00000B``), what a
    reserved code means (``undefined code``), or ``None`` for a code not in the list."""
    if code is None:
        return None
    key = code.removeprefix("0x").upper()
    makers = load_makers()
    if key in makers.reserved:
        return makers.reserved[key]
    return makers.makers.get(key)
