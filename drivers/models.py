"""Canonical readings: the protocol-neutral boundary between ``drivers`` and everything else.

Nothing downstream of ``drivers`` may depend on Modbus, SunSpec, ECHONET Lite or B-route; it sees
only :class:`Reading` and :class:`DeviceIdentity`. Point names and units are listed in
:mod:`drivers.points` and documented in ``docs/points.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Quality(StrEnum):
    """How far a value can be trusted."""

    GOOD = "good"
    MISSING = "missing"  # the device does not implement the point, or reported "no data"
    STALE = "stale"  # the last good value, older than its poll interval allows
    ERROR = "error"  # the read failed (timeout, exception code, garbage)


class PointKind(StrEnum):
    """How a point behaves over time; the policy engine aggregates by kind."""

    POWER = "power"  # instantaneous W: mean (and max) over a window
    ENERGY = "energy"  # monotonic counter in Wh: delta over a window
    LEVEL = "level"  # state of charge and similar: last value in a window
    GAUGE = "gauge"  # voltage, current, frequency, temperature: mean over a window
    STATE = "state"  # operating state (text or code): last value and number of changes
    EVENT = "event"  # fault / alarm flags: union over a window
    INFO = "info"  # identity and nameplate: static


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceIdentity:
    """Who the device says it is. ``serial`` is personal-data-adjacent: never log it."""

    manufacturer: str | None
    model: str | None
    serial: str | None
    version: str | None = None
    protocol: str = "modbus"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One value of one canonical point from one device at one instant.

    ``device`` is the configured device name (never a serial number); ``ts`` is timezone-aware
    UTC; ``value`` is ``None`` whenever ``quality`` is not ``GOOD``/``STALE``.
    """

    device: str
    point: str
    kind: PointKind
    value: float | str | None
    unit: str
    ts: datetime
    quality: Quality = Quality.GOOD
