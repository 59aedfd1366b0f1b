"""Register profiles: register maps of non-SunSpec devices as validated data files.

One JSON file per device family in ``drivers/profiles/`` (format in ``docs/modbus.md``). A
profile names where its map comes from, how to recognise the device (a device-type register and
the codes it may hold) and, per register, address, type, word/byte order, scale, unit, canonical
point and poll interval. :meth:`Profile.points` turns it into the protocol-neutral
:class:`drivers.registers.RegisterPoint` tuple the planner and poller work on.

Pure: nothing here does I/O except reading the profile files; :func:`drivers.device.probe`
reads the identification registers from a device.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from drivers import codec
from drivers.datafiles import Frozen, Source
from drivers.errors import ProfileError
from drivers.models import DeviceIdentity
from drivers.points import spec
from drivers.registers import RegisterImage, RegisterPoint

PROFILE_DIR = Path(__file__).parent / "profiles"

Order = Literal["big", "little"]
Function = Literal["holding", "input"]
DType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
                "string"]


class Location(Frozen):
    """Where a value lives: shared by identification fields and registers."""

    address: int = Field(ge=0, le=0xFFFF)
    type: DType = "uint16"
    length: int | None = Field(default=None, ge=1, le=125)  # registers, for strings only
    function: Function | None = None  # default: the profile's
    word_order: Order | None = None  # default: the profile's
    byte_order: Order | None = None  # default: the profile's

    @model_validator(mode="after")
    def _fits(self) -> Location:
        try:
            count = codec.register_count(self.type, self.length)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if self.address + count > 0x10000:
            raise ValueError(f"registers {self.address}+{count} run past 65535")
        return self

    @property
    def count(self) -> int:
        """Registers the value occupies."""
        return codec.register_count(self.type, self.length)


class Identify(Frozen):
    """How a scan recognises the family: a device-type register and the model per code."""

    device_type: Location
    models: dict[str, str] = Field(min_length=1)  # code ("0x0E03" or "3587") -> model name
    serial: Location | None = None

    @field_validator("models")
    @classmethod
    def _codes(cls, models: dict[str, str]) -> dict[str, str]:
        for code in models:
            _parse_code(code)
        return models

    def model_for(self, code: int) -> str | None:
        """The model name for a device-type code, or ``None`` if not of this family."""
        return next((name for key, name in self.models.items() if _parse_code(key) == code),
                    None)


class Register(Location):
    """One register value and the canonical point it feeds."""

    point: str
    unit: str  # after scaling; must be the canonical point's unit
    interval: float = Field(gt=0)  # seconds between reads
    multiplier: float = 1.0
    exponent: int = Field(default=0, ge=-10, le=10)  # power-of-ten scale
    sentinels: tuple[int, ...] = ()  # raw values that mean "no data" (reading is MISSING)

    @model_validator(mode="after")
    def _canonical(self) -> Register:
        try:
            canonical = spec(self.point)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        if self.unit != canonical.unit:
            raise ValueError(f"unit {self.unit!r} is not {canonical.unit!r}, the unit of "
                             f"{self.point}: scale the value instead")
        if self.type == "string" and canonical.unit != "":
            raise ValueError(f"{self.point} is numeric; a string register cannot feed it")
        return self


class Profile(Frozen):
    """A device family's register map."""

    format: Literal[1]
    manufacturer: str = Field(min_length=1)
    family: str = Field(min_length=1)
    source: Source
    function: Function = "holding"
    word_order: Order = "big"
    byte_order: Order = "big"
    max_gap: int | None = Field(default=None, ge=0)  # unread registers a read may bridge
    identify: Identify
    registers: tuple[Register, ...] = Field(min_length=1)

    @field_validator("registers")
    @classmethod
    def _unique(cls, registers: tuple[Register, ...]) -> tuple[Register, ...]:
        seen: set[str] = set()
        for reg in registers:
            if reg.point in seen:
                raise ValueError(f"point {reg.point} appears twice")
            seen.add(reg.point)
        return registers

    def points(self) -> tuple[RegisterPoint, ...]:
        """The profile as register points, ready for :class:`drivers.device.ModbusDevice`."""
        return tuple(self._point(reg) for reg in self.registers)

    def _point(self, reg: Register) -> RegisterPoint:
        canonical = spec(reg.point)
        return RegisterPoint(
            point=reg.point, kind=canonical.kind, unit=canonical.unit, address=reg.address,
            count=reg.count, interval=reg.interval, function=reg.function or self.function,
            decode=functools.partial(_decode_register, reg, self._orders(reg)))

    def _orders(self, field: Location) -> tuple[str, str]:
        return (field.word_order or self.word_order, field.byte_order or self.byte_order)

    def identify_spans(self) -> tuple[tuple[str, int, int], ...]:
        """``(function, address, count)`` reads that :meth:`identity` needs."""
        fields = [f for f in (self.identify.device_type, self.identify.serial) if f is not None]
        return tuple((f.function or self.function, f.address, f.count) for f in fields)

    def identity(self, image: Mapping[str, RegisterImage]) -> DeviceIdentity | None:
        """Who the device is, from the registers of :meth:`identify_spans` (by function), or
        ``None`` if the device-type code is not one of this family's."""
        code = self._value(self.identify.device_type, image)
        model = self.identify.model_for(code) if isinstance(code, int) else None
        if model is None:
            return None
        serial_field = self.identify.serial
        serial = None if serial_field is None else self._value(serial_field, image)
        return DeviceIdentity(manufacturer=self.manufacturer, model=model,
                              serial=str(serial) if serial else None)

    def _value(self, field: Location, image: Mapping[str, RegisterImage]) -> int | float | str:
        table = image[field.function or self.function]
        regs = [table[a] for a in range(field.address, field.address + field.count)]
        word, byte = self._orders(field)
        return codec.decode(regs, field.type, word_order=word, byte_order=byte)


def _decode_register(reg: Register, orders: tuple[str, str],
                     image: RegisterImage) -> float | str | None:
    regs = [image[a] for a in range(reg.address, reg.address + reg.count)]
    raw = codec.decode(regs, reg.type, word_order=orders[0], byte_order=orders[1])
    if isinstance(raw, str):
        return raw or None
    if raw in reg.sentinels or (isinstance(raw, float) and math.isnan(raw)):
        return None
    return codec.scale(raw, multiplier=reg.multiplier, exponent=reg.exponent)


def _parse_code(code: str) -> int:
    try:
        return int(code, 0)
    except ValueError:
        raise ValueError(f"device-type code {code!r} is not a number (decimal or 0x...)") \
            from None


def load(path: Path) -> Profile:
    """Read and validate one profile file; :class:`ProfileError` names the file and field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from exc
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors())
        raise ProfileError(f"{path}: {problems}") from exc


def builtin(directory: Path = PROFILE_DIR) -> dict[str, Profile]:
    """Every profile shipped in ``directory``, by file stem (e.g. ``"sungrow_sh"``)."""
    return {path.stem: load(path) for path in sorted(directory.glob("*.json"))}
