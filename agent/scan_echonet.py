"""``hems-agent scan --echonet`` and ``--broute``: find ECHONET Lite nodes, read them once.

Functions here are what ``agent.scan_cli`` delegates to; :func:`add_arguments` and :func:`main`
also let this module run as a subcommand of its own. Serial numbers are shown to the installer
on the terminal but never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options that refine ``--echonet`` and ``--broute`` (for ``agent.scan_cli`` too)."""
    parser.add_argument("--interface", default="0.0.0.0", metavar="ADDR",
                        help="ECHONET Lite: local IPv4 address to send multicast from")
    parser.add_argument("--echonet-timeout", type=float, default=3.0, metavar="S",
                        help="ECHONET Lite: seconds to wait for replies (default 3)")
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
    from drivers.errors import DriverError

    entry: dict[str, Any] = {
        "eoj": str(info.eoj), "class": info.table.name if info.table else None,
        "manufacturer": info.identity.manufacturer, "model": info.identity.model,
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
    async with BrouteMeter(settings, name="smart-meter") as meter:
        readings = await meter.poll(0.0)
        pan = meter.pan
        return {"device": device, "joined": True,
                "channel": pan.channel if pan else None,
                "pan_id": f"0x{pan.pan_id:04X}" if pan else None,
                "manufacturer": meter.identity.manufacturer,
                "seconds": round(time.monotonic() - started, 1),
                "readings": [_reading(r) for r in readings]}


def print_echonet(result: dict[str, Any]) -> None:
    """Human-readable scan output."""
    if not result["nodes"]:
        print("No ECHONET Lite nodes answered.")
    for node in result["nodes"]:
        print(f"{node['address']}")
        for obj in node["objects"]:
            print(f"  {obj['eoj']}  {obj['class'] or 'unsupported class'}  "
                  f"maker {obj['manufacturer']}  model {obj['model']}")
            for r in obj["readings"]:
                print(f"    {r['point']:<28} {r['value']!s:>14} {r['unit']:<4} {r['quality']}")
            if "error" in obj:
                print(f"    error: {obj['error']}")


def print_broute(result: dict[str, Any]) -> None:
    """Human-readable B-route check output."""
    print(f"B-route session up on {result['device']} (channel {result['channel']}, "
          f"PAN {result['pan_id']}) after {result['seconds']} s")
    for r in result["readings"]:
        print(f"  {r['point']:<28} {r['value']!s:>14} {r['unit']:<4} {r['quality']}")


def run(args: argparse.Namespace) -> int:
    """Run the ECHONET Lite and/or B-route scan the arguments ask for."""
    from drivers.errors import DriverError

    output: dict[str, Any] = {}
    try:
        if args.echonet:
            output["echonet"] = asyncio.run(scan_echonet(args.interface, args.echonet_timeout))
        if args.broute:
            if args.broute_id_file is None or args.broute_password_file is None:
                print("--broute needs --broute-id-file and --broute-password-file")
                return 2
            output["broute"] = asyncio.run(check_broute(
                args.broute, args.broute_id_file, args.broute_password_file))
    except DriverError as exc:
        print(f"error: {exc}")
        return 1
    if args.json:
        print(json.dumps(output, indent=2, ensure_ascii=False))
    else:
        if "echonet" in output:
            print_echonet(output["echonet"])
        if "broute" in output:
            print_broute(output["broute"])
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry point when used as a subcommand of its own."""
    if not (args.echonet or args.broute):
        print("nothing to scan: give --echonet and/or --broute DEVICE")
        return 2
    return run(args)
