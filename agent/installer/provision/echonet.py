"""ECHONET Lite devices and the B-route smart meter for ``hems-agent provision``.

ECHONET Lite objects are found on the LAN (``--echonet-scan``: multicast discovery, each object
read once, then picked from a numbered list by ``--echonet-select`` or at the prompt) or given
by address (``--echonet-device [NAME=]ADDR[:EOJ]``: a unicast Get of the node's instance list).
Each chosen object becomes an ``[[echonet_devices]]`` entry with its address and full EOJ, named
by class (``pv``, ``battery``, ``meter``; ``-2``... when taken).

The B-route needs the Wi-SUN module's serial device and the utility-issued ID and password.
The secrets go to ``<conf>/broute.id`` and ``<conf>/broute.password`` (0600), never into
agent.toml. Before anything is written the meter is joined and its instantaneous power read
once (``--no-device-check`` skips it); the module's SK dialect is found by the driver
(SKINFO), so nothing about the module's make is asked; a ``[broute] module`` already in the
configuration (the override for a module that cannot tell) is kept and used.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.installer.provision.checks import ProvisionError
from agent.installer.provision.inputs import read_input

if TYPE_CHECKING:
    from agent.installer.provision.prompts import Prompter

KIND_BY_CLASS = {"0279": "pv", "027D": "battery", "0288": "meter"}
_ECHONET_DEVICE = re.compile(r"(?:(?P<name>[^=]+)=)?(?P<address>[0-9.]+)"
                             r"(?::(?P<eoj>(?:0x)?[0-9A-Fa-f]{4}(?:[0-9A-Fa-f]{2})?))?")
_BROUTE_ID = re.compile(r"[0-9A-Za-z]{32}")
_BROUTE_PASSWORD = re.compile(r"[0-9A-Za-z]{12}")
_SERIAL = re.compile(r"/dev/[A-Za-z0-9_./-]+")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--echonet-scan", action="store_true",
        help="find ECHONET Lite devices on the LAN (multicast) and pick them")
    add("--echonet-select", metavar="all|none|1,3",
        help="which of the devices --echonet-scan lists to add (asked on a terminal)")
    add("--echonet-device", action="append", default=[], metavar="[NAME=]ADDR[:EOJ]",
        help="an ECHONET Lite device by address, e.g. 192.168.1.41:027D01; repeat")
    add("--echonet-interface", metavar="ADDR",
        help="local IPv4 address for ECHONET Lite (default: every interface)")
    add("--echonet-port", type=int, help=argparse.SUPPRESS)  # the emulator's port, in tests
    add("--echonet-wait", type=float, default=3.0, metavar="S",
        help="seconds to wait for ECHONET Lite answers (default 3)")
    add("--broute-device", metavar="DEVICE",
        help="the B-route Wi-SUN module's serial device, e.g. /dev/ttyUSB0")
    add("--broute-id-file", type=Path, metavar="FILE",
        help="file holding the utility-issued B-route ID (32 characters)")
    add("--broute-password-file", type=Path, metavar="FILE",
        help="file holding the B-route password (12 characters)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """One ECHONET Lite object that answered, as listed for the installer."""

    address: str
    eoj: str  # six hex digits, e.g. 027D02
    class_name: str
    summary: str
    entry: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return KIND_BY_CLASS.get(self.eoj[:4], "device")


def check_echonet_device(text: str) -> tuple[str | None, str, str | None]:
    """``[NAME=]ADDR[:EOJ]`` -> (name, address, eoj); ValueError naming what is wrong."""
    import ipaddress

    from agent.installer.provision.checks import _NAME

    match = _ECHONET_DEVICE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"ECHONET Lite device {text!r}: expected [NAME=]ADDRESS[:EOJ], e.g. "
                         "battery=192.168.1.41:027D01 or 192.168.1.41")
    name, address, eoj = match.group("name"), match.group("address"), match.group("eoj")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(f"ECHONET Lite device {text!r}: {address!r} is not an IPv4 "
                         "address") from None
    if name is not None and not _NAME.fullmatch(name):
        raise ValueError(f"device name {name!r}: lower-case letters, digits, '-' or '_'")
    return name, address, None if eoj is None else eoj.removeprefix("0x").upper()


def check_broute_id(text: str) -> str:
    if not _BROUTE_ID.fullmatch(text.strip()):
        raise ValueError(f"the B-route ID is {len(text.strip())} characters; it has 32 "
                         "letters and digits (the utility's letter, 認証ID)")
    return text.strip()


def check_broute_password(text: str) -> str:
    if not _BROUTE_PASSWORD.fullmatch(text.strip()):
        raise ValueError(f"the B-route password is {len(text.strip())} characters; it has 12 "
                         "letters and digits (the utility's letter, パスワード)")
    return text.strip()


def check_serial_device(text: str) -> str:
    """A serial device that exists (the module must be plugged in)."""
    path = text.strip()
    if not _SERIAL.fullmatch(path):
        raise ValueError(f"{path!r}: the module's serial device is a /dev path, e.g. "
                         "/dev/ttyUSB0 or /dev/serial/by-id/...")
    if not Path(path).exists():
        raise ValueError(f"{path}: no such device; is the module plugged in? "
                         "(ls /dev/ttyUSB* /dev/serial/by-id/)")
    return path


# ---- ECHONET Lite -------------------------------------------------------------------------

def _settings(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    echonet: dict[str, Any] = raw.setdefault("echonet", {})
    if args.echonet_interface is not None:
        echonet["interface"] = args.echonet_interface
    if args.echonet_port is not None:
        echonet["port"] = args.echonet_port
    return echonet


def scan(echonet: dict[str, Any], wait: float, addresses: list[str] | None = None,
         ) -> list[Found]:
    """Objects that answered (multicast, or at ``addresses``), each read once."""
    from agent.installer.scan.echonet import scan_echonet
    from drivers.errors import DriverError

    try:
        result = asyncio.run(scan_echonet(echonet.get("interface", "0.0.0.0"), wait,
                                          port=int(echonet.get("port", 3610)),
                                          addresses=addresses or ()))
    except (DriverError, OSError) as exc:
        raise ProvisionError(f"ECHONET Lite: {exc}") from exc
    found = []
    for node in result["nodes"]:
        for obj in node["objects"]:
            eoj = obj["eoj"].removeprefix("0x").upper()
            readings = ", ".join(f"{r['point']} = {r['value']} {r['unit']}".rstrip()
                                 for r in obj["readings"][:3])
            summary = (f"{node['address']} {eoj} {obj['class'] or 'unsupported class'}, "
                       f"maker {obj.get('maker') or obj['manufacturer'] or '?'} "
                       f"model {obj['model'] or '?'}"
                       + (f": {readings}" if readings else "")
                       + (f" (error: {obj['error']})" if "error" in obj else ""))
            found.append(Found(address=node["address"], eoj=eoj, class_name=obj["class"] or "",
                               summary=summary, entry=obj))
    return found


def choose(found: list[Found], answer: str) -> list[Found]:
    """``all`` (the supported ones), ``none`` or listed numbers such as ``1,3``."""
    text = answer.strip().lower()
    if text in ("all", "a", "*"):
        return [f for f in found if f.class_name]
    if text in ("none", "n", ""):
        return []
    picked: list[Found] = []
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= len(found):
            raise ValueError(f"{part!r} is not one of the listed numbers 1..{len(found)}")
        chosen = found[int(part) - 1]
        if not chosen.class_name:
            raise ValueError(f"{part}: the agent cannot read this class ({chosen.eoj[:4]})")
        if chosen not in picked:
            picked.append(chosen)
    return picked


def taken_names(raw: dict[str, Any]) -> set[str]:
    names = {d["name"] for d in raw.get("devices", [])}
    names |= {d["name"] for d in raw.get("echonet_devices", [])}
    if raw.get("broute"):
        names.add(raw["broute"].get("name", "smart_meter"))
    return names


def merge(raw: dict[str, Any], chosen: list[tuple[str | None, str, str]]) -> list[str]:
    """Add (name, address, eoj) objects; the same object again keeps its entry. Returns the
    names added."""
    entries = raw.setdefault("echonet_devices", [])
    names = taken_names(raw)
    added = []
    for name, address, eoj in chosen:
        if any(e.get("address") == address and e.get("eoj", "").upper() == eoj
               for e in entries):
            continue
        base = name or KIND_BY_CLASS.get(eoj[:4], "device")
        candidate, n = base, 2
        while candidate in names:
            if name is not None:
                raise ProvisionError(f"device name {name!r} is taken; choose another")
            candidate, n = f"{base}-{n}", n + 1
        names.add(candidate)
        entries.append({"name": candidate, "eoj": eoj, "address": address})
        added.append(candidate)
    if not entries:
        del raw["echonet_devices"]
    return added


def _given(args: argparse.Namespace, echonet: dict[str, Any]) -> list[tuple[str | None, str,
                                                                          str]]:
    try:
        specs = [check_echonet_device(text) for text in args.echonet_device]
    except ValueError as exc:
        raise ProvisionError(str(exc)) from exc
    chosen: list[tuple[str | None, str, str]] = []
    for name, address, eoj in specs:
        if args.no_device_check:
            if eoj is None or len(eoj) != 6:
                raise ProvisionError(f"ECHONET Lite device {address}: with --no-device-check "
                                     "give the full EOJ (class and instance, e.g. 027D01)")
            chosen.append((name, address, eoj))
            continue
        found = scan(echonet, args.echonet_wait, [address])
        matching = [f for f in found if f.class_name and (eoj is None or f.eoj.startswith(eoj))]
        if not found:
            raise ProvisionError(f"ECHONET Lite device at {address} does not answer; check it "
                                 "is on and on this LAN, or give --no-device-check to add it "
                                 "anyway")
        if not matching:
            listed = ", ".join(f.eoj for f in found)
            raise ProvisionError(f"ECHONET Lite device at {address}: no readable object "
                                 f"{eoj or ''} there (it lists {listed})")
        if name is not None and len(matching) > 1:
            raise ProvisionError(f"ECHONET Lite device {name}={address}: {len(matching)} "
                                 "objects answer there; give the EOJ, e.g. "
                                 f"{name}={address}:{matching[0].eoj}")
        chosen += [(name, f.address, f.eoj) for f in matching]
    return chosen


def echonet_devices(args: argparse.Namespace, raw: dict[str, Any], ask: Prompter | None,
                    ) -> list[str]:
    """ECHONET Lite devices given, scanned and picked, or (on a terminal) offered; the names
    of those added."""
    echonet = _settings(args, raw)
    chosen = _given(args, echonet)
    scanning = args.echonet_scan
    if (not scanning and not chosen and not raw.get("echonet_devices") and ask is not None
            and args.echonet_select is None):
        scanning = ask.confirm("Search the LAN for ECHONET Lite devices (solar, battery, "
                               "meter)?")
    if scanning:
        print("searching the LAN for ECHONET Lite devices "
              f"({args.echonet_wait:g} s)...", flush=True)
        found = scan(echonet, args.echonet_wait)
        for n, f in enumerate(found, 1):
            print(f"{n:>3}. {f.summary}", flush=True)
        if not found:
            print("  no ECHONET Lite device answered", flush=True)
        elif args.echonet_select is not None:
            try:
                picked = choose(found, args.echonet_select)
            except ValueError as exc:
                raise ProvisionError(f"--echonet-select: {exc}") from exc
            chosen += [(None, f.address, f.eoj) for f in picked]
        elif ask is not None:
            picked = ask.ask("Add which? (all, none, or numbers such as 1,3)",
                             lambda text: choose(found, text), default="all")
            chosen += [(None, f.address, f.eoj) for f in picked]
        else:
            raise ProvisionError(f"--echonet-scan found {len(found)} device(s): choose with "
                                 "--echonet-select all|none|1,3")
    if not raw["echonet"]:
        del raw["echonet"]  # nothing set: the defaults hold
    if not chosen:
        return []
    added = merge(raw, chosen)
    for name in added:
        entry = next(e for e in raw["echonet_devices"] if e["name"] == name)
        print(f"ECHONET Lite device {name}: {entry['address']} {entry['eoj']}", flush=True)
    return added


# ---- B-route ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class BrouteSecrets:
    """The utility-issued secrets, held in memory until the plan is written."""

    route_b_id: str
    password: str

    def __repr__(self) -> str:
        return "BrouteSecrets(***)"


def _secret_file(path: Path, what: str, check: Any) -> str:
    try:
        return str(check(read_input(path, what).decode("ascii", "replace").strip()))
    except ValueError as exc:
        raise ProvisionError(f"{path}: {exc}") from exc


def join_once(device: str, secrets: BrouteSecrets, raw: dict[str, Any]) -> str:
    """Join the meter and read it once; a line for the installer. DriverError when it fails."""
    from agent.installer.doctor.echonet import lqi_dbm
    from drivers.broute.meter import BrouteMeter, BrouteSettings

    current = raw.get("broute", {})
    settings = BrouteSettings(device=device, route_b_id=secrets.route_b_id,
                              password=secrets.password,
                              module=str(current.get("module", "auto")),
                              scan_timeout=float(current.get("scan_timeout", 180.0)),
                              join_timeout=float(current.get("join_timeout", 180.0)))

    async def run() -> str:
        async with BrouteMeter(settings, name="smart_meter") as meter:
            readings = await meter.poll(0.0)
            pan, dialect = meter.pan, meter.dialect
        power = next((r for r in readings if r.point == "grid.power"), None)
        parts = [f"smart meter joined ({dialect.name} module)"]
        if pan is not None:
            parts.append(f"channel {pan.channel}")
            if pan.lqi:
                parts.append(f"link quality LQI {pan.lqi} (about {lqi_dbm(pan.lqi)} dBm)")
        if power is not None:
            parts.append(f"instantaneous power {power.value} {power.unit}")
        return ", ".join(parts)

    return asyncio.run(run())


def broute(args: argparse.Namespace, raw: dict[str, Any], conf: Path,
           private: dict[Path, bytes], ask: Prompter | None) -> None:
    """The ``[broute]`` section and its secret files (added to ``private``)."""
    from drivers.errors import DriverError

    current: dict[str, Any] = dict(raw.get("broute") or {})
    if (current and args.broute_device is None and args.broute_id_file is None
            and args.broute_password_file is None):
        return  # configured before and not changed now: kept, not joined again (minutes)
    device = None
    if args.broute_device is not None:
        try:
            device = (check_serial_device(args.broute_device) if not args.no_device_check
                      else args.broute_device)
        except ValueError as exc:
            raise ProvisionError(f"--broute-device: {exc}") from exc
    elif current.get("device"):
        device = current["device"]
    elif ask is not None and not args.broute_id_file:
        answer = ask.ask("B-route module serial device (e.g. /dev/ttyUSB0; empty: no smart "
                         "meter)", lambda t: check_serial_device(t) if t.strip() else "")
        device = answer or None
    if device is None:
        if args.broute_id_file or args.broute_password_file:
            raise ProvisionError("--broute-id-file needs --broute-device (the module's serial "
                                 "device)")
        return
    stored = bool(current.get("id_file")) and Path(current["id_file"]).exists()
    secrets = None
    if args.broute_id_file is not None or args.broute_password_file is not None:
        if args.broute_id_file is None or args.broute_password_file is None:
            raise ProvisionError("--broute-id-file and --broute-password-file go together")
        secrets = BrouteSecrets(
            route_b_id=_secret_file(args.broute_id_file, "B-route ID file", check_broute_id),
            password=_secret_file(args.broute_password_file, "B-route password file",
                                  check_broute_password))
    elif not stored and ask is None:
        raise ProvisionError("the B-route ID and password are missing: give "
                             "--broute-id-file and --broute-password-file")
    fresh = secrets is None and not stored  # asked for on the terminal
    for attempt in range(1, 4):
        if fresh and ask is not None:
            secrets = BrouteSecrets(
                route_b_id=ask.ask("B-route ID (32 characters)", check_broute_id, secret=True),
                password=ask.ask("B-route password (12 characters)", check_broute_password,
                                 secret=True))
        if args.no_device_check:
            break
        use = secrets or _existing_secrets(current)
        print(f"joining the smart meter through {device} (a real module takes up to a few "
              "minutes)...", flush=True)
        try:
            print(f"  {join_once(device, use, raw)}", flush=True)
            break
        except DriverError as exc:
            if not fresh or attempt == 3:
                raise ProvisionError(f"B-route: {exc}; check the module, the ID and the "
                                     "password, or give --no-device-check to add it "
                                     "anyway") from exc
            print(f"  ✗ B-route: {exc} — enter the ID and password again ({3 - attempt} left)",
                  file=sys.stderr, flush=True)
    entry = {**current, "name": current.get("name", "smart_meter"), "device": device,
             "id_file": current.get("id_file", str(conf / "broute.id")),
             "password_file": current.get("password_file", str(conf / "broute.password"))}
    if secrets is not None:
        entry["id_file"], entry["password_file"] = (str(conf / "broute.id"),
                                                    str(conf / "broute.password"))
        private[conf / "broute.id"] = secrets.route_b_id.encode("ascii") + b"\n"
        private[conf / "broute.password"] = secrets.password.encode("ascii") + b"\n"
    if entry["name"] in taken_names({k: v for k, v in raw.items() if k != "broute"}):
        raise ProvisionError(f"the smart meter's name {entry['name']!r} is taken by another "
                             "device; rename that one")
    raw["broute"] = entry


def _existing_secrets(current: dict[str, Any]) -> BrouteSecrets:
    from drivers.broute.meter import read_secret
    from drivers.errors import DriverError

    try:
        return BrouteSecrets(route_b_id=read_secret(Path(current["id_file"]), "B-route ID"),
                             password=read_secret(Path(current["password_file"]),
                                                  "B-route password"))
    except DriverError as exc:
        raise ProvisionError(f"B-route: {exc}") from exc
