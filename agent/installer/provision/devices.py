"""Device selection for ``hems-agent provision``: devices given as flags, chosen in a scan
(``hems-agent scan --save``) or typed at the prompt, each checked to answer, merged into the
configuration (RS-485 devices get a bus named after their port)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.installer.provision.checks import ProvisionError, check_device
from agent.installer.provision.inputs import read_input
from agent.installer.scan.range import device_answers

if TYPE_CHECKING:
    from agent.installer.provision.prompts import Prompter


def devices(args: argparse.Namespace, raw: dict[str, Any], ask: Prompter | None, *,
            prompt: bool = True) -> None:
    """Devices given (``--device`` replaces one of the same name) or chosen in a scan (kept
    beside an existing device of the same name at another address, with a suffix); asked for
    on a terminal when none is given (and ``prompt``: no device of another protocol is)."""
    try:
        given = [check_device(text) for text in args.device]
    except ValueError as exc:
        raise ProvisionError(str(exc)) from exc
    scanned: list[dict[str, Any]] = []
    if args.devices_from is not None:
        try:
            scanned = list(json.loads(read_input(args.devices_from, "devices file"))["devices"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProvisionError(f"{args.devices_from}: not a file from scan --save") from exc
    if not args.no_device_check:
        for spec in [*given, *scanned]:
            problem = asyncio.run(device_answers(spec))
            if problem is not None:
                raise ProvisionError(f"device {spec['name']} does not answer: {problem}; "
                                     "check it, or give --no-device-check to add it anyway")
    if not given and not scanned and not raw.get("devices") and ask is not None and prompt:
        given = ask.device()
    merge_devices(raw, given, args.baud, rename=False)
    merge_devices(raw, scanned, args.baud, rename=True)


def merge_devices(raw: dict[str, Any], specs: list[dict[str, Any]], baud: int, *,
                  rename: bool) -> None:
    """Add ``specs`` to the raw configuration; RS-485 devices get a bus named after the port."""
    devices = {d["name"]: d for d in raw.get("devices", [])}
    buses = {b["name"]: b for b in raw.get("buses", [])}
    for spec in specs:
        entry = {k: v for k, v in spec.items() if k != "serial"}
        if spec["transport"] == "rtu":
            bus = Path(spec["serial"]).name.lower().replace(".", "-")
            buses.setdefault(bus, {"name": bus, "port": spec["serial"], "baud": baud})
            entry["bus"] = bus
        name, n = entry["name"], 2
        while rename and name in devices and _address(devices[name]) != _address(entry):
            name, n = f"{entry['name']}-{n}", n + 1
        devices[name] = {**entry, "name": name}
    if buses:
        raw["buses"] = list(buses.values())
    if devices:
        raw["devices"] = list(devices.values())


def _address(device: dict[str, Any]) -> tuple[object, ...]:
    return (device.get("host"), device.get("port", 502), device.get("bus"), device.get("unit"))
