"""SunSpec register images built from the SunSpec Alliance's model definitions (``pysunspec2``).

No register map is typed here: every address, size, type and scale-factor reference comes from
``sunspec2``'s JSON models through its ``device.Model`` API. An image is ``'SunS'`` at the base
address (40000), then each model (ID, L, body), then the end marker (0xFFFF, 0).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sunspec2 import mb as sunspec_mb
from sunspec2.device import Model as SunSpecModel

SUNSPEC_BASE = 40000
SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MARKER = (0xFFFF, 0x0000)

RawValue = int | str | None
ModelSpec = tuple[int, Mapping[str, Any]]
"""A model id and its initial raw values by point name; a repeating group is a list of dicts
under the group's name (e.g. ``(160, {"N": 2, "module": [{"ID": 1}, {"ID": 2}]})``)."""


class ImageError(ValueError):
    """A model, point or value does not fit the image. The message names the point."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PointLocation:
    """Where one SunSpec point sits in the image."""

    model_id: int
    name: str
    index: int | None  # 1-based instance of a repeating group, None for model-level points
    address: int
    size: int  # registers
    type: str  # SunSpec type name: uint16, int16, acc32, sunssf, string, ...
    sf: str | int | None  # scale factor: a point name, a constant, or None


class SunSpecImage:
    """The holding-register space of one SunSpec device, updated point by point.

    ``registers[i]`` is the register at ``base + i``. Values are set raw (as on the wire) or
    scaled (engineering units divided by 10**sf, using the scale factor currently in the image).
    """

    def __init__(self, models: Sequence[ModelSpec], *, base: int = SUNSPEC_BASE) -> None:
        self.base = base
        self.registers: list[int] = list(SUNS_MARKER)
        self.model_addresses: dict[int, int] = {}
        self._points: dict[tuple[int, str, int | None], PointLocation] = {}
        for model_id, data in models:
            self._add_model(model_id, data)
        self.registers.extend(END_MARKER)

    def _add_model(self, model_id: int, data: Mapping[str, Any]) -> None:
        if model_id in self.model_addresses:
            raise ImageError(f"model {model_id} appears twice")
        try:
            model = SunSpecModel(model_id=model_id, data=dict(data))
            body = model.get_mb()
        except Exception as exc:  # sunspec2 raises bare Exception subclasses of its own
            raise ImageError(f"model {model_id}: {exc}") from exc
        if model.error_info:
            raise ImageError(f"model {model_id}: {model.error_info.strip()}")
        address = self.base + len(self.registers)
        self.model_addresses[model_id] = address
        self.registers.extend(struct.unpack(f">{len(body) // 2}H", body))
        for loc in _walk(model_id, model, address):
            self._points[(loc.model_id, loc.name, loc.index)] = loc

    @property
    def end(self) -> int:
        """First address after the end marker."""
        return self.base + len(self.registers)

    def locate(self, model_id: int, name: str, *, index: int | None = None) -> PointLocation:
        """The location of a point; ``index`` selects a repeating-group instance (1-based)."""
        try:
            return self._points[(model_id, name, index)]
        except KeyError:
            where = f"model {model_id} point {name!r}" + (f" [{index}]" if index else "")
            raise ImageError(f"no such point: {where}") from None

    def points(self) -> Iterator[PointLocation]:
        """Every point of every model, in address order."""
        return iter(sorted(self._points.values(), key=lambda loc: loc.address))

    def set_raw(
        self, model_id: int, name: str, value: RawValue, *, index: int | None = None
    ) -> None:
        """Write a raw value; ``None`` writes the type's "not implemented" sentinel."""
        loc = self.locate(model_id, name, index=index)
        try:
            if value is None:
                data = sunspec_mb.create_unimpl_value(loc.type, len=loc.size * 2)
            else:
                data = sunspec_mb.point_type_info[loc.type].to_data(value, loc.size * 2)
        except (struct.error, TypeError, ValueError, AttributeError) as exc:
            raise ImageError(f"model {model_id} point {name}: cannot encode {value!r}") from exc
        offset = loc.address - self.base
        self.registers[offset : offset + loc.size] = struct.unpack(f">{loc.size}H", data)

    def get_raw(self, model_id: int, name: str, *, index: int | None = None) -> int | str:
        """Read a raw value back (integers as signed/unsigned per type, strings stripped)."""
        loc = self.locate(model_id, name, index=index)
        offset = loc.address - self.base
        data = struct.pack(f">{loc.size}H", *self.registers[offset : offset + loc.size])
        value: int | str = sunspec_mb.point_type_info[loc.type].data_to(data)
        return value

    def scale_factor(self, model_id: int, name: str, *, index: int | None = None) -> int:
        """The scale factor that applies to a point right now (0 if it has none)."""
        loc = self.locate(model_id, name, index=index)
        if loc.sf is None:
            return 0
        if isinstance(loc.sf, int):
            return loc.sf
        key = (model_id, loc.sf, index)
        sf_loc = self._points.get(key) or self.locate(model_id, loc.sf)
        raw = self.get_raw(model_id, sf_loc.name, index=sf_loc.index)
        return int(raw)

    def set_value(
        self, model_id: int, name: str, value: float | None, *, index: int | None = None
    ) -> None:
        """Write an engineering value, scaled by the point's current scale factor."""
        if value is None or not math.isfinite(value):
            self.set_raw(model_id, name, None, index=index)
            return
        sf = self.scale_factor(model_id, name, index=index)
        self.set_raw(model_id, name, round(value / 10**sf), index=index)

    def read(self, address: int, count: int) -> list[int]:
        """Registers ``address .. address+count-1``; ImageError when outside the image."""
        offset = address - self.base
        if offset < 0 or count < 1 or offset + count > len(self.registers):
            raise ImageError(f"registers {address}+{count} are outside the image")
        return self.registers[offset : offset + count]


def _walk(model_id: int, group: Any, model_address: int, index: int | None = None
          ) -> Iterator[PointLocation]:
    """Every point of a sunspec2 group and its sub-groups, with absolute addresses."""
    for name, point in group.points.items():
        sf = point.sf if point.sf is not None else point.sf_value
        yield PointLocation(
            model_id=model_id, name=name, index=index, address=model_address + point.offset,
            size=point.len, type=point.pdef["type"], sf=sf,
        )
    for sub in group.groups.values():
        if isinstance(sub, list):
            for number, instance in enumerate(sub, start=1):
                yield from _walk(model_id, instance, model_address, number)
        else:
            yield from _walk(model_id, sub, model_address, index)
