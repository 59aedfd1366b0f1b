"""Identify one Modbus unit and read every point once: the probe ``hems-agent scan`` uses for one
host and the commissioning scan (:mod:`agent.installer.scan.range`) uses for each host or unit.

SunSpec discovery first; without a SunSpec marker, the built-in register profiles. Driver imports
stay inside the functions so importing this module does not load pymodbus.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.registers import RegisterPoint
    from drivers.sunspec.discovery import SunSpecDevice
    from drivers.transport import Bus

Entry = dict[str, Any]


async def check_tcp(host: str, port: int, deadline: float) -> None:
    """Fail early, with the reason, when the host cannot be reached at all."""
    import asyncio
    import socket

    from drivers.errors import DeviceUnreachable

    try:
        async with asyncio.timeout(deadline):
            _, writer = await asyncio.open_connection(host, port)
    except socket.gaierror as exc:
        raise DeviceUnreachable(f"cannot resolve host {host!r}: {exc.strerror}") from exc
    except TimeoutError as exc:
        raise DeviceUnreachable(f"no answer from {host}:{port} within {deadline} s") from exc
    except OSError as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else exc
        raise DeviceUnreachable(f"cannot connect to {host}:{port}: {reason}") from exc
    writer.close()
    await writer.wait_closed()


async def scan_unit(bus: Bus, unit: int) -> Entry | str:
    """A device entry, or a line saying why there is none (DeviceUnreachable propagates)."""
    from drivers.errors import DeviceProtocolError, DiscoveryError
    from drivers.sunspec.discovery import discover

    try:
        device = await discover(bus, unit=unit)
        return await _sunspec_entry(bus, device)
    except DiscoveryError as exc:
        reason = str(exc)
    except DeviceProtocolError as exc:
        reason = f"unit {unit}: {exc}"
    profiled = await _profile_entry(bus, unit)
    return profiled if profiled is not None else reason


async def _sunspec_entry(bus: Bus, device: SunSpecDevice) -> Entry:
    from drivers.sunspec.decode import decode_model
    from drivers.sunspec.discovery import read_model
    from drivers.sunspec.mapping import map_points
    from drivers.sunspec.models import load_model

    blocks: dict[int, list[int]] = {}
    points: dict[str, Any] = {}
    for info in device.models:
        block = blocks[info.start] = await read_model(bus, info, unit=device.unit)
        definition = load_model(info.id)
        key = str(info.id) if str(info.id) not in points else f"{info.id}@{info.start}"
        points[key] = decode_model(definition, block) if definition is not None else {}
    image = {info.start + i: reg for info in device.models
             for i, reg in enumerate(blocks[info.start])}
    identity = device.identity
    return {
        "unit": device.unit, "base": device.base,
        "models": [{"id": m.id, "start": m.start, "length": m.length} for m in device.models],
        "identity": {"manufacturer": identity.manufacturer, "model": identity.model,
                     "serial": identity.serial, "version": identity.version},
        "points": points,
        "readings": _readings(map_points(device, blocks), image),
    }


def _readings(points: Sequence[RegisterPoint], image: dict[int, int]) -> dict[str, Any]:
    readings: dict[str, Any] = {}
    for point in points:
        try:
            value = point.decode(image)
        except ValueError:  # garbage in the device (e.g. a scale factor out of range)
            value = None
        readings[point.point] = {"value": value, "unit": point.unit}
    return readings


async def _profile_entry(bus: Bus, unit: int) -> Entry | None:
    """Try the built-in register profiles on a unit without a SunSpec marker."""
    from drivers.device import probe, read_registers
    from drivers.profiles import builtin

    for name, profile in builtin().items():
        identity = await probe(profile, bus, unit)
        if identity is None:
            continue
        image: dict[tuple[str, int], int] = {}
        for point in profile.points():
            regs = await read_registers(bus, point.function, point.address, point.count,
                                        unit=unit)
            image.update({(point.function, point.address + i): r for i, r in enumerate(regs)})
        readings = {}
        for point in profile.points():
            table = {a: v for (f, a), v in image.items() if f == point.function}
            readings.update(_readings([point], table))
        return {"unit": unit, "base": None, "models": [], "profile": name,
                "identity": {"manufacturer": identity.manufacturer, "model": identity.model,
                             "serial": identity.serial, "version": identity.version},
                "points": {}, "readings": readings}
    return None
