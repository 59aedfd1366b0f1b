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
from typing import Any

# light: its driver imports stay inside its functions
from agent.installer.scan import echonet as scan_echonet
from agent.installer.scan.probe import Entry, check_tcp, scan_unit

DEFAULT_UNITS = (1, 2, 3, 126)
EXIT_NOT_FOUND = 1
EXIT_UNREACHABLE = 2


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
        await check_tcp(args.host, args.port, args.timeout)
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
                entry = await scan_unit(bus, unit)
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
