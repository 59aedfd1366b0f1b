"""``hems-agent scan``: find SunSpec (or profiled) Modbus devices and read every point once.

For each unit id (default 1, 2, 3 and 126: the usual ids of inverters, batteries and meters and
the SunSpec default for gateways; each costs at most one timeout when nobody answers): SunSpec
discovery at 40000, 0 and 50000; if there is no SunSpec marker, the built-in register profiles
are tried. Prints the unit, base address, models (id, start, length), identity, every decoded
SunSpec point and the canonical readings; ``--json`` prints one JSON document instead.

A bad host, a refused connection or no device found: one line on stderr, non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# light: its driver imports stay inside its functions
from agent.installer.scan import echonet as scan_echonet

if TYPE_CHECKING:  # the imports that pull in pymodbus stay inside main()
    from drivers.registers import RegisterPoint
    from drivers.sunspec.discovery import SunSpecDevice
    from drivers.transport import Bus

DEFAULT_UNITS = (1, 2, 3, 126)
EXIT_NOT_FOUND = 1
EXIT_UNREACHABLE = 2

Entry = dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    link = parser.add_mutually_exclusive_group(required=True)
    link.add_argument("--host", help="Modbus TCP host (name or address)")
    link.add_argument("--serial", metavar="DEVICE", help="RTU serial line, e.g. /dev/ttyAMA0")
    link.add_argument("--echonet", action="store_true",
                      help="ECHONET Lite nodes on the LAN instead (see scan/echonet.py)")
    link.add_argument("--broute", metavar="DEVICE",
                      help="check the smart meter's B-route through this Wi-SUN module")
    parser.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
    parser.add_argument("--baud", type=int, default=9600, help="RTU baud rate (default 9600)")
    parser.add_argument("--parity", choices=("N", "E", "O"), default="N",
                        help="RTU parity (default N)")
    parser.add_argument("--unit", type=_unit_id, action="append", metavar="N",
                        help="unit id to scan; repeat for several "
                        f"(default {', '.join(map(str, DEFAULT_UNITS))})")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds to wait for each answer (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    # light: imports nothing of pymodbus at module level
    from agent.installer.scan import range as scan_range

    scan_range.add_arguments(parser, link)
    scan_echonet.add_options(parser)


def _unit_id(text: str) -> int:
    try:
        unit = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unit id must be a number, got {text!r}") from None
    if not 0 <= unit <= 255:
        raise argparse.ArgumentTypeError(f"unit id must be 0..255, got {unit}")
    return unit


def main(args: argparse.Namespace) -> int:
    if args.echonet or args.broute:
        return scan_echonet.run(args)
    import asyncio

    from drivers.errors import DriverError

    if args.hosts or args.cidr or args.units:  # commissioning: a range or a unit sweep
        from agent.installer.scan import range as scan_range

        return scan_range.main(args)
    try:
        return asyncio.run(_scan(args))
    except (DriverError, ValueError, OSError) as exc:
        print(f"hems-agent scan: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


async def _scan(args: argparse.Namespace) -> int:
    from drivers.errors import DeviceUnreachable, DriverError
    from drivers.transport import Bus

    if args.host is not None:
        await _check_tcp(args.host, args.port, args.timeout)
        bus = Bus.tcp(args.host, args.port, timeout=args.timeout)
    else:
        bus = Bus.serial(args.serial, baudrate=args.baud, parity=args.parity,
                         timeout=args.timeout)
    devices: list[Entry] = []
    misses: list[str] = []
    unreachable = 0
    units: Sequence[int] = args.unit or DEFAULT_UNITS
    async with bus:
        for unit in units:
            try:
                entry = await _scan_unit(bus, unit)
            except DeviceUnreachable as exc:
                unreachable += 1
                misses.append(f"unit {unit}: {exc}")
                continue
            except DriverError as exc:  # e.g. a profile read refused: this unit only
                misses.append(f"unit {unit}: {exc}")
                continue
            if isinstance(entry, str):
                misses.append(entry)
            else:
                devices.append(entry)
    return _report(args, devices, misses, all_unreachable=unreachable == len(units))


async def _check_tcp(host: str, port: int, deadline: float) -> None:
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


async def _scan_unit(bus: Bus, unit: int) -> Entry | str:
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


def _report(args: argparse.Namespace, devices: list[Entry], misses: list[str], *,
            all_unreachable: bool) -> int:
    where = f"{args.host}:{args.port}" if args.host is not None else args.serial
    if not devices:
        summary = "; ".join(misses)
        print(f"hems-agent scan: no SunSpec device or known profile at {where}: {summary}",
              file=sys.stderr)
        return EXIT_UNREACHABLE if all_unreachable else EXIT_NOT_FOUND
    if args.json:
        import json

        print(json.dumps({"devices": devices}, ensure_ascii=False, indent=2))
    else:
        for entry in devices:
            print("\n".join(_text(entry)))
    for miss in misses:
        print(f"note: {miss}", file=sys.stderr)
    return 0


def _text(entry: Entry) -> list[str]:
    where = (f"SunSpec at base {entry['base']}" if entry["base"] is not None
             else f"register profile {entry.get('profile')}")
    ident = entry["identity"]
    lines = [f"unit {entry['unit']}: {where}",
             "  identity: " + ", ".join(f"{k}={v if v is not None else '-'}"
                                        for k, v in ident.items())]
    if entry["models"]:
        lines.append("  models (id, start, length):")
        lines += [f"    {m['id']:>5}  {m['start']:>5}  {m['length']:>4}" for m in entry["models"]]
    lines.append("  readings:")
    for name, reading in entry["readings"].items():
        value = "-" if reading["value"] is None else reading["value"]
        lines.append(f"    {name:<28} {value} {reading['unit']}".rstrip())
    for model, values in entry["points"].items():
        lines.append(f"  model {model} points:")
        lines += [f"    {path} = {'-' if v is None else v}" for path, v in _flatten(values, "")]
    return lines


def _flatten(values: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(values, dict):
        return [item for key, v in values.items()
                for item in _flatten(v, f"{prefix}.{key}" if prefix else key)]
    if isinstance(values, list):
        return [item for i, v in enumerate(values) for item in _flatten(v, f"{prefix}[{i}]")]
    return [(prefix, values)]
