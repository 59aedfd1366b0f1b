"""Decode SunSpec model registers into values: pure functions, no I/O.

A model block is every register of one model, starting with its ``ID`` register. Values are
scaled with their scale factor (a ``sunssf`` point in the same group, an enclosing group or the
model; or a constant exponent). The not-implemented sentinels (``0x8000`` for int16 and sunssf,
``0xFFFF`` for uint16/enum16/bitfield16/count, ``0`` for accumulators, ``0x80000000``,
``0xFFFFFFFF``, NaN, all-zero strings, ...) decode to ``None``, never to a number; so does a
value whose scale factor is not implemented. Repeating groups become lists.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers import codec
from drivers.sunspec.models import STRING, GroupDef, ModelDef, PointDef

logger = logging.getLogger(__name__)

Value = int | float | str | None
Path = tuple[str | int, ...]

# SunSpec type -> (codec type, not-implemented raw value or None)
_NUMERIC: dict[str, tuple[str, int | None]] = {
    "int16": ("int16", -0x8000), "sunssf": ("int16", -0x8000),
    "uint16": ("uint16", 0xFFFF), "count": ("uint16", 0xFFFF), "enum16": ("uint16", 0xFFFF),
    "bitfield16": ("uint16", 0xFFFF), "acc16": ("uint16", 0), "pad": ("uint16", None),
    "int32": ("int32", -0x80000000), "uint32": ("uint32", 0xFFFFFFFF),
    "enum32": ("uint32", 0xFFFFFFFF), "bitfield32": ("uint32", 0xFFFFFFFF),
    "acc32": ("uint32", 0), "ipaddr": ("uint32", 0),
    "int64": ("int64", -0x8000000000000000), "uint64": ("uint64", 0xFFFFFFFFFFFFFFFF),
    "acc64": ("uint64", 0),
    "float32": ("float32", None), "float64": ("float64", None),
}
MAX_SF = 10  # SunSpec scale factors lie in -10..10; anything else is garbage


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacedPoint:
    """A point of a model definition at its place in one device's model.

    ``offset`` and ``sf_offset`` count registers from the model's ``ID`` register.
    ``path`` names it in the decoded result, e.g. ``("module", 0, "DCW")``.
    """

    path: Path
    point: PointDef
    offset: int
    sf_offset: int | None = None
    sf_const: int | None = None

    @property
    def scaled(self) -> bool:
        """Whether the point's definition names a scale factor."""
        return self.point.sf is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Repeat:
    """A repeating group of one model instance: its list's path, entries, first register."""

    path: Path
    count: int
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Every point of one model instance, and how often each repeating group occurs."""

    points: tuple[PlacedPoint, ...]
    repeats: tuple[Repeat, ...]

    def count(self, path: Path) -> int:
        """Entries of the repeating group at ``path`` (0 if there is none)."""
        return next((r.count for r in self.repeats if r.path == path), 0)

    def find(self, path: Path) -> PlacedPoint | None:
        """The point at ``path``, or ``None`` if this instance has no such point."""
        for placed in self.points:
            if placed.path == path:
                return placed
        return None


def raw_value(point: PointDef, regs: Sequence[int]) -> Value:
    """Decode one point's registers (unscaled); sentinels give ``None``.

    Enumerations and bitfields stay integers; ``ipaddr`` is an integer, as in pysunspec2.
    Raises ``ValueError`` if ``regs`` does not match the point's size.
    """
    if len(regs) != point.size:
        raise ValueError(
            f"{point.name}: {point.type} needs {point.size} registers, got {len(regs)}"
        )
    if point.type == STRING:
        raw = b"".join(r.to_bytes(2, "big") for r in regs)
        if not raw or raw[0] == 0:
            return None
        return raw.decode("utf-8", errors="replace").rstrip("\0")
    if point.type == "eui48":
        raw = b"".join(r.to_bytes(2, "big") for r in regs)
        text = ":".join(f"{b:02X}" for b in raw[2:])
        return None if not any(raw) or text == "FF:FF:FF:FF:FF:FF" else text
    if point.type == "ipv6addr":
        raw = b"".join(r.to_bytes(2, "big") for r in regs)
        # pysunspec2's notation: four groups of four bytes
        return ":".join(raw[i : i + 4].hex().upper() for i in range(0, 16, 4)) if any(raw) else None
    dtype, sentinel = _NUMERIC[point.type]
    value = codec.decode(regs, dtype)
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return None if value == sentinel else value


# SunSpec numeric type of one or two registers -> (registers, packed layout, its struct)
_WORDS = (struct.Struct(">H"), struct.Struct(">HH"))
_PACKED: dict[str, tuple[int, struct.Struct]] = {
    name: (codec.DTYPES[dtype][0], struct.Struct(codec.DTYPES[dtype][1]))
    for name, (dtype, _) in _NUMERIC.items() if codec.DTYPES[dtype][0] <= 2}


def raw_at(point: PointDef, image: Mapping[int, int], address: int) -> Value:
    """:func:`raw_value` of the point's registers at ``address`` in a register image.

    The same values, ``None`` and ``ValueError`` (a register missing from the image, one that
    is not a 16-bit value); numbers of one or two registers (all but 64-bit ones) are unpacked
    in one step, the per-poll path.
    """
    packed = _PACKED.get(point.type)
    try:
        if packed is None or packed[0] != point.size:
            return raw_value(point, [image[a] for a in range(address, address + point.size)])
        width, layout_ = packed
        regs = (image[address],) if width == 1 else (image[address], image[address + 1])
    except KeyError as exc:
        raise ValueError(f"register {exc.args[0]} was not read") from None
    try:
        value: int | float = layout_.unpack(_WORDS[width - 1].pack(*regs))[0]
    except struct.error:
        raise ValueError(f"{point.name}: registers {regs!r} are not 16-bit values") from None
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return None if value == _NUMERIC[point.type][1] else value


def apply_scale(value: Value, exponent: int | None) -> Value:
    """``value * 10**exponent``; ``None`` if either is missing. Strings pass through unscaled."""
    if value is None or exponent is None:
        return None
    if isinstance(value, str) or exponent == 0:
        return value
    if not -MAX_SF <= exponent <= MAX_SF:
        raise ValueError(f"scale factor {exponent} out of range -{MAX_SF}..{MAX_SF}")
    # Divide by an exact power of ten: 2345 * 10**-2 would give 23.450000000000003.
    return value / 10**-exponent if exponent < 0 else float(value * 10**exponent)


def layout(model: ModelDef, length: int, registers: Sequence[int] | None = None) -> Layout:
    """Place every point of ``model`` for an instance whose ``L`` register says ``length``.

    Repetition counts come from the group's count point (read from ``registers``, the model
    block; no registers or an unimplemented count means no repetitions) or, for groups whose
    definition says count 0, from the model length. Points past the end of the model are left
    out (older devices implement shorter versions of some models).
    """
    builder = _LayoutBuilder(total=length + 2, registers=registers)
    builder.place_group(model.group, (), 0, [])
    return Layout(points=tuple(builder.points), repeats=tuple(builder.repeats))


def decode_model(model: ModelDef, registers: Sequence[int]) -> dict[str, Any]:
    """Decode a whole model block into ``{point name: value, group name: {...} or [...]}``.

    ``pad`` points are left out. A point whose scale factor is unimplemented or out of range
    is ``None``.
    """
    lay = layout(model, len(registers) - 2, registers)
    # Lists and points in register order, so the result reads like the definition; a list
    # goes in before the points of its entries (and an outer list before inner ones).
    items: list[tuple[int, int, int, Repeat | PlacedPoint]] = [
        (r.offset, 0, i, r) for i, r in enumerate(lay.repeats)]
    items += [(p.offset, 1, i, p) for i, p in enumerate(lay.points) if p.point.type != "pad"]
    result: dict[str, Any] = {}
    for *_, item in sorted(items, key=lambda entry: entry[:3]):
        node = _container(result, item.path[:-1])
        if isinstance(item, Repeat):
            node[item.path[-1]] = [{} for _ in range(item.count)]
        else:
            node[item.path[-1]] = point_value(item, registers)
    return result


def point_value(placed: PlacedPoint, registers: Sequence[int]) -> Value:
    """The scaled value of one placed point, from its model block."""
    size = placed.point.size
    value = raw_value(placed.point, registers[placed.offset : placed.offset + size])
    if not placed.scaled:
        return value
    exponent = placed.sf_const
    if placed.sf_offset is not None:
        sf = raw_value(_SF_POINT, registers[placed.sf_offset : placed.sf_offset + 1])
        exponent = sf if isinstance(sf, int) else None
    try:
        return apply_scale(value, exponent)
    except ValueError:
        logger.warning("SunSpec point %s: scale factor %s out of range", placed.path, exponent)
        return None


_SF_POINT = PointDef(name="sf", type="sunssf", size=1)


def _container(result: dict[str, Any], path: Path) -> Any:
    node: Any = result
    for key in path:
        if isinstance(key, str) and key not in node:
            node[key] = {}
        node = node[key]
    return node


@dataclass(slots=True, kw_only=True)
class _LayoutBuilder:
    total: int
    registers: Sequence[int] | None
    points: list[PlacedPoint] = field(default_factory=list)
    repeats: list[Repeat] = field(default_factory=list)

    def place_group(
        self, group: GroupDef, path: Path, offset: int, scopes: list[dict[str, int]]
    ) -> int:
        names: dict[str, int] = {}
        start = offset
        for point in group.points:
            names[point.name] = offset
            offset += point.size
        chain = [names, *scopes]
        offset = start
        for point in group.points:
            if offset + point.size <= self.total:
                self.points.append(PlacedPoint(
                    path=(*path, point.name), point=point, offset=offset,
                    sf_offset=_lookup(chain, point.sf) if isinstance(point.sf, str) else None,
                    sf_const=point.sf if isinstance(point.sf, int) else None,
                ))
            offset += point.size
        for sub in group.groups:
            offset = self._place_sub(sub, path, offset, chain)
        return offset

    def _place_sub(
        self, sub: GroupDef, path: Path, offset: int, chain: list[dict[str, int]]
    ) -> int:
        if sub.count is None:
            return self.place_group(sub, (*path, sub.name), offset, chain)
        count = self._count(sub, offset, chain)
        index, start = len(self.repeats), offset  # outer lists come before their entries' lists
        self.repeats.append(Repeat(path=(*path, sub.name), count=0, offset=start))
        placed = 0
        while placed < count and offset < self.total:
            offset = self.place_group(sub, (*path, sub.name, placed), offset, chain)
            placed += 1
        self.repeats[index] = Repeat(path=(*path, sub.name), count=placed, offset=start)
        return offset

    def _count(self, sub: GroupDef, offset: int, chain: list[dict[str, int]]) -> int:
        if isinstance(sub.count, str):
            where = _lookup(chain, sub.count)
            if where is None or self.registers is None or where >= len(self.registers):
                return 0
            value = self.registers[where]
            return 0 if value == 0xFFFF else value
        if sub.count:
            return sub.count
        size = _fixed_size(sub)  # count 0: as many as the model's length holds
        return max(0, self.total - offset) // size if size else 0


def _lookup(chain: list[dict[str, int]], name: str | None) -> int | None:
    for scope in chain:
        if name in scope:
            return scope[name]
    return None


def _fixed_size(group: GroupDef) -> int:
    return group.points_size + sum(_fixed_size(g) for g in group.groups if g.count is None)
