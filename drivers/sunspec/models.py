"""SunSpec model definitions, loaded from the JSON files the SunSpec Alliance ships in pysunspec2.

Only the JSON data files are read (``sunspec2/models/json/model_<id>.json``, located with
:mod:`importlib.resources`); none of pysunspec2's Python modules is imported, so the daemon does
not depend on its code, only on the Alliance's definitions. No register map is typed by hand.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from drivers.errors import DriverError

# Registers per value, by SunSpec type; ``string`` takes its size from the definition.
TYPE_SIZES: dict[str, int] = {
    "int16": 1, "uint16": 1, "count": 1, "acc16": 1, "enum16": 1, "bitfield16": 1,
    "sunssf": 1, "pad": 1,
    "int32": 2, "uint32": 2, "acc32": 2, "enum32": 2, "bitfield32": 2, "ipaddr": 2,
    "float32": 2,
    "int64": 4, "uint64": 4, "acc64": 4, "float64": 4, "eui48": 4,
    "ipv6addr": 8,
}
STRING = "string"
END_MODEL_ID = 0xFFFF


class ModelDefinitionError(DriverError):
    """A shipped SunSpec model definition could not be read or is not what this code expects."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PointDef:
    """One point of a model definition."""

    name: str
    type: str
    size: int  # registers
    sf: str | int | None = None  # name of a sunssf point, or a constant exponent
    units: str | None = None
    label: str | None = None
    symbols: tuple[tuple[int, str], ...] = ()  # enum values / bitfield bit numbers, with names

    def symbol(self, value: int) -> str | None:
        """The name of an enumerated value, if the definition has one."""
        for number, name in self.symbols:
            if number == value:
                return name
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupDef:
    """A group of points: the model's top-level group, or a (possibly repeating) sub-group.

    ``count`` is ``None`` for a group that occurs once, the name of a point holding the number
    of repetitions, or ``0`` for "as many as fit in the model's length".
    """

    name: str
    points: tuple[PointDef, ...]
    groups: tuple[GroupDef, ...] = ()
    count: str | int | None = None

    @property
    def points_size(self) -> int:
        """Registers taken by this group's own points (not its sub-groups)."""
        return sum(point.size for point in self.points)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDef:
    """A SunSpec information model."""

    id: int
    label: str | None
    group: GroupDef

    def point(self, name: str) -> PointDef | None:
        """A top-level point by name."""
        for point in self.group.points:
            if point.name == name:
                return point
        return None


def load_model(model_id: int) -> ModelDef | None:
    """Return the definition of ``model_id``, or ``None`` if pysunspec2 ships none for it.

    Raises :class:`ModelDefinitionError` if a shipped file cannot be parsed.
    """
    return _load_cached(int(model_id))


@functools.lru_cache(maxsize=256)
def _load_cached(model_id: int) -> ModelDef | None:
    path = resources.files("sunspec2").joinpath("models", "json", f"model_{model_id}.json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelDefinitionError(f"cannot read SunSpec model {model_id}: {exc}") from exc
    try:
        raw = json.loads(text)
        group = _group(raw["group"], f"model {model_id}")
        label = raw["group"].get("label")
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelDefinitionError(f"SunSpec model {model_id} definition: {exc}") from exc
    return ModelDef(id=model_id, label=label if isinstance(label, str) else None, group=group)


def _group(raw: dict[str, Any], where: str) -> GroupDef:
    name = str(raw["name"])
    count = raw.get("count")
    if count is not None and not isinstance(count, str | int):
        raise ValueError(f"{where}/{name}: count {count!r} is neither a point name nor a number")
    return GroupDef(
        name=name,
        points=tuple(_point(p, f"{where}/{name}") for p in raw.get("points", ())),
        groups=tuple(_group(g, f"{where}/{name}") for g in raw.get("groups", ())),
        count=count,
    )


def _point(raw: dict[str, Any], where: str) -> PointDef:
    name = str(raw["name"])
    ptype = str(raw["type"])
    if ptype == STRING:
        size = int(raw["size"])
    elif ptype in TYPE_SIZES:
        size = TYPE_SIZES[ptype]
    else:
        raise ValueError(f"{where}/{name}: unknown point type {ptype!r}")
    sf = raw.get("sf")
    if isinstance(sf, str) and sf.lstrip("-").isdigit():
        sf = int(sf)  # a constant exponent written as a string
    symbols = tuple(
        (int(sym["value"]), str(sym["name"])) for sym in raw.get("symbols", ()) or ()
    )
    return PointDef(
        name=name, type=ptype, size=size, sf=sf, units=raw.get("units"),
        label=raw.get("label"), symbols=symbols,
    )


def available_models() -> tuple[int, ...]:
    """Ids of every model definition shipped (for tests and documentation)."""
    folder = resources.files("sunspec2").joinpath("models", "json")
    ids = []
    for entry in folder.iterdir():
        stem = entry.name.removesuffix(".json")
        if stem.startswith("model_") and stem[6:].isdigit():
            ids.append(int(stem[6:]))
    return tuple(sorted(ids))
