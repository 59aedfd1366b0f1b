"""What decoding needs from a transport: read a block of holding registers.

Discovery and decoding (SunSpec, register profiles) are written against this protocol, so they
can be tested with recorded register images and run over TCP or RTU alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from drivers.models import PointKind


class RegisterReader(Protocol):
    """Reads holding registers (function 0x03) from one unit on one link.

    Implementations raise :class:`drivers.errors.DeviceUnreachable` on timeouts and lost links
    and :class:`drivers.errors.DeviceProtocolError` on exception responses; they never retry.
    """

    async def read_holding(self, address: int, count: int, *, unit: int) -> list[int]:
        """Return ``count`` (1..125) 16-bit registers starting at ``address``."""
        ...


RegisterImage = Mapping[int, int]
"""Registers read in one poll, by address (only the addresses that were read)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterPoint:
    """One canonical point read from holding registers: what to read and how to decode it.

    Both SunSpec discovery and register profiles reduce a device to a tuple of these, so the
    read planner and the Modbus device poller do not care where a map came from.
    """

    point: str  # canonical name, see drivers.points
    kind: PointKind
    unit: str
    address: int  # first register
    count: int  # registers holding the value
    interval: float  # seconds between reads of this point
    decode: Callable[[RegisterImage], float | str | None]
    """Decode from the image. ``None`` means not implemented / no data (a sentinel); raise
    ``ValueError`` for garbage (e.g. a scale factor out of range)."""
    extra: tuple[tuple[int, int], ...] = ()
    """Further (address, count) spans ``decode`` needs, e.g. a SunSpec scale-factor register."""
    function: str = "holding"
    """Register table: ``"holding"`` (function 0x03) or ``"input"`` (0x04, read-only registers)."""

    def spans(self) -> tuple[tuple[int, int], ...]:
        """Every (address, count) span this point needs read."""
        return ((self.address, self.count), *self.extra)
