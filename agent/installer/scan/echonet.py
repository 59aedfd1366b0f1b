"""``hems-agent scan --echonet`` and ``--broute``: find ECHONET Lite nodes, read them once.

Functions here are what ``agent.installer.scan.cli`` delegates to; :func:`add_arguments` and
:func:`main` also let this module run as a subcommand of its own. Serial numbers are shown to the
installer on the terminal but never logged; makers are named from the published maker code list.

Exit codes as for the Modbus scan: 0 found something, 1 found nothing (no node answered, or the
B-route check failed), 2 bad input. The objects of a class the agent reads are numbered;
``--select`` (or a prompt, on a terminal) picks some and ``--save FILE`` writes them as
``[[echonet_devices]]`` tables (``{"echonet_devices": [{"name", "eoj", "address"}]}``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
_NAMES = {0x0279: "pv", 0x027D: "battery", 0x0288: "smart_meter"}  # by class, for --save

if TYPE_CHECKING:  # driver imports stay inside the functions
    from drivers.echonet.client import EchonetClient
    from drivers.echonet.discovery import ObjectInfo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ECHONET Lite and B-route scan, as a subcommand of its own."""
    parser.add_argument("--echonet", action="store_true",
                        help="find ECHONET Lite nodes on the LAN (multicast 224.0.23.0)")
    parser.add_argument("--broute", metavar="DEVICE",
                        help="B-route Wi-SUN module serial device, e.g. /dev/ttyUSB0")
    add_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--select", metavar="LIST", help="objects to add: all, none or 1,3")
    parser.add_argument("--save", type=Path, metavar="FILE",
                        help="write the selected objects as [[echonet_devices]] JSON")


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options that refine ``--echonet`` and ``--broute`` (for ``agent.installer.scan.cli`` too)."""
    parser.add_argument("--interface", default="0.0.0.0", metavar="ADDR",
                        help="ECHONET Lite: local IPv4 address to send multicast from")
    parser.add_argument("--echonet-timeout", type=float, default=3.0, metavar="S",
                        help="ECHONET Lite: seconds to wait for replies (default 3)")
    parser.add_argument("--echonet-port", type=int, default=3610, metavar="PORT",
                        help="ECHONET Lite: UDP port (default 3610; only emulators use another)")
    parser.add_argument("--broute-id-file", type=Path, metavar="FILE",
                        help="file (mode 0600) holding the B-route authentication ID")
    parser.add_argument("--broute-password-file", type=Path, metavar="FILE",
                        help="file (mode 0600) holding the B-route password")


def _reading(reading: Any) -> dict[str, Any]:
    return {"point": reading.point, "value": reading.value, "unit": reading.unit,
            "quality": str(reading.quality), "ts": reading.ts.isoformat()}


async def scan_echonet(interface: str, timeout: float, *, port: int = 3610,  # noqa: ASYNC109
                       addresses: Sequence[str] = ()) -> dict[str, Any]:
    """Discover nodes (multicast, or ``addresses``), describe each object, read it once.

    ``timeout`` is the discovery window and the per-request deadline, not a bound on the
    whole scan (a slow node gets its own deadline per request).
    """
    from drivers.echonet.client import EchonetClient
    from drivers.echonet.discovery import describe_all, find_nodes

    result: dict[str, Any] = {"nodes": []}
    async with EchonetClient(interface=interface, port=port, timeout=timeout,
                             retries=1) as client:
        nodes = await find_nodes(client, wait=timeout, addresses=addresses)
        infos = await describe_all(client, nodes)
        for node in nodes:
            objects = [await _object_entry(client, info) for info in infos
                       if info.address == node.address]
            result["nodes"].append({"address": node.address, "objects": objects})
    return result


async def _object_entry(client: EchonetClient, info: ObjectInfo) -> dict[str, Any]:
    from drivers.echonet.device import EchonetDevice
    from drivers.echonet.tables import maker_name
    from drivers.errors import DriverError

    entry: dict[str, Any] = {
        "eoj": str(info.eoj), "class": info.table.name if info.table else None,
        "manufacturer": info.identity.manufacturer,
        "maker": maker_name(info.identity.manufacturer), "model": info.identity.model,
        "serial": info.identity.serial, "get_map": sorted(info.get_map), "readings": []}
    if info.table is None:
        return entry
    try:
        device = await EchonetDevice.open(client, name=str(info.eoj), address=info.address,
                                          eoj=info.eoj, info=info)
        entry["readings"] = [_reading(r) for r in await device.poll(0.0)]
        device.close()
    except DriverError as exc:
        entry["error"] = str(exc)
    return entry


async def check_broute(device: str, id_file: Path, password_file: Path, *,
                       scan_timeout: float = 180.0,
                       join_timeout: float = 180.0) -> dict[str, Any]:
    """Join the smart meter's B-route session and read it once."""
    from drivers.broute.meter import BrouteMeter, BrouteSettings, read_secret

    settings = BrouteSettings(device=device,
                              route_b_id=read_secret(id_file, "B-route ID"),
                              password=read_secret(password_file, "B-route password"),
                              scan_timeout=scan_timeout, join_timeout=join_timeout)
    started = time.monotonic()
    from drivers.echonet.tables import maker_name

    async with BrouteMeter(settings, name="smart-meter") as meter:
        readings = await meter.poll(0.0)
        pan = meter.pan
        return {"device": device, "joined": True, "module": meter.dialect.name,
                "channel": pan.channel if pan else None,
                "pan_id": f"0x{pan.pan_id:04X}" if pan else None,
                "manufacturer": meter.identity.manufacturer,
                "maker": maker_name(meter.identity.manufacturer),
                "seconds": round(time.monotonic() - started, 1),
                "readings": [_reading(r) for r in readings]}


def selectable(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(address, object) of every object of a class the agent reads, in listing order."""
    return [(node["address"], obj) for node in result["nodes"] for obj in node["objects"]
            if obj["class"] is not None]


def _maker(obj: dict[str, Any]) -> str:
    code = obj["manufacturer"]
    if code is None:
        return "?"
    return f"{obj['maker']} ({code})" if obj["maker"] else f"{code} (not in the maker list)"


def print_echonet(result: dict[str, Any]) -> None:
    """Human-readable scan output; the numbers are what ``--select`` takes."""
    number = 0
    for node in result["nodes"]:
        print(f"{node['address']}")
        for obj in node["objects"]:
            label = "  -"
            if obj["class"] is not None:
                number += 1
                label = f"{number:>3}."
            print(f"{label} {obj['eoj']}  {obj['class'] or 'unsupported class'}  "
                  f"maker {_maker(obj)}  model {obj['model'] or '?'}  "
                  f"serial {obj['serial'] or '?'}")
            for r in obj["readings"]:
                print(f"      {r['point']:<28} {r['value']!s:>14} {r['unit']:<4} "
                      f"{r['quality']}")
            if "error" in obj:
                print(f"      error: {obj['error']}")


def echonet_specs(chosen: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, str]]:
    """``[[echonet_devices]]`` tables for the chosen objects, named by class (pv, battery,
    smart_meter; then -2, -3 for a second and third)."""
    specs: list[dict[str, str]] = []
    taken: set[str] = set()
    for address, obj in chosen:
        eoj = obj["eoj"].removeprefix("0x")
        base = _NAMES.get(int(eoj[:4], 16), f"echonet-{eoj[:4].lower()}")
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        specs.append({"name": name, "eoj": eoj, "address": address})
    return specs


def save_selected(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Write the objects ``--select`` (or the prompt) picks to ``--save``; the exit code."""
    from agent.installer.scan.range import choose

    answer = args.select
    if answer is None and args.save is not None and sys.stdin.isatty():
        answer = input("Objects to add (all, none, or numbers such as 1,3): ")
    if args.save is None:
        return 0
    try:
        chosen = choose(selectable(result), answer or "none")
    except ValueError as exc:
        print(f"hems-agent scan: --select: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    document = {"echonet_devices": echonet_specs(chosen)}
    try:
        args.save.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"hems-agent scan: --save: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{len(chosen)} ECHONET Lite object(s) saved to {args.save}", file=sys.stderr)
    return 0


def print_broute(result: dict[str, Any]) -> None:
    """Human-readable B-route check output."""
    print(f"B-route session up on {result['device']} ({result['module']} module, channel "
          f"{result['channel']}, PAN {result['pan_id']}) after {result['seconds']} s; meter "
          f"maker {_maker(result)}")
    for r in result["readings"]:
        print(f"  {r['point']:<28} {r['value']!s:>14} {r['unit']:<4} {r['quality']}")


def run(args: argparse.Namespace) -> int:
    """Run the ECHONET Lite and/or B-route scan the arguments ask for; the exit code."""
    from drivers.errors import DriverError

    output: dict[str, Any] = {}
    try:
        if args.echonet:
            output["echonet"] = asyncio.run(scan_echonet(args.interface, args.echonet_timeout,
                                                         port=args.echonet_port))
        if args.broute:
            if args.broute_id_file is None or args.broute_password_file is None:
                print("hems-agent scan: --broute needs --broute-id-file and "
                      "--broute-password-file", file=sys.stderr)
                return EXIT_BAD_INPUT
            output["broute"] = asyncio.run(check_broute(
                args.broute, args.broute_id_file, args.broute_password_file))
    except DriverError as exc:
        print(f"hems-agent scan: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (ValueError, OSError) as exc:  # e.g. --interface not an address of this host
        print(f"hems-agent scan: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if "echonet" in output and not output["echonet"]["nodes"]:
        print(f"hems-agent scan: no ECHONET Lite node answered within {args.echonet_timeout} s "
              f"(multicast from {args.interface})", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(output, indent=2, ensure_ascii=False))
    else:
        if "echonet" in output:
            print_echonet(output["echonet"])
        if "broute" in output:
            print_broute(output["broute"])
    return save_selected(args, output["echonet"]) if "echonet" in output else 0


def main(args: argparse.Namespace) -> int:
    """Entry point when used as a subcommand of its own."""
    if not (args.echonet or args.broute):
        print("nothing to scan: give --echonet and/or --broute DEVICE")
        return 2
    return run(args)
