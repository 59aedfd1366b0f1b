"""The installer's inputs to ``hems-agent provision``: checked one by one, asked only if missing.

Every value comes from a flag, else from the existing configuration, else (on a terminal) from a
prompt. Each is checked by the same function whichever way it came; a prompt shows the problem
and asks again (up to :data:`ATTEMPTS` times), a flag stops the run with the problem named.
Nothing is written here: the answers become a plan that is applied at the very end.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.errors import AgentError

T = TypeVar("T")
ATTEMPTS = 3
_SITE = re.compile(r"[a-z0-9][a-z0-9_-]{2,63}")  # also an MQTT topic segment
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_DEVICE = re.compile(r"(?P<name>[^=]+)=(?P<where>/dev/[A-Za-z0-9_.-]+|[^:/]+)"
                     r"(?::(?P<port>\d+))?(?:/(?P<unit>\d+))?")


class ProvisionError(AgentError):
    """An input is wrong or missing, or provisioning could not finish: stop, nothing half-done."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientInput:
    """A recipient's public key file, checked, with its key id."""

    id: str
    source: Path
    kem: str
    key_id: str
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentInput:
    """A household's written consent the installer records (from the paper form)."""

    purpose: str
    recipient: str
    tier: str


def fingerprint(key_id: str) -> str:
    """A key id in groups of four hex digits, for reading aloud and comparing by eye."""
    return " ".join(key_id[i:i + 4] for i in range(0, len(key_id), 4))


def check_site_id(text: str) -> str:
    if not _SITE.fullmatch(text.strip()):
        raise ValueError(f"site id {text!r}: 3-64 lower-case letters, digits, '-' or '_' "
                         "(e.g. s-0001)")
    return text.strip()


def check_broker_url(text: str) -> str:
    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "mqtts" or not parts.hostname or port == -1:
        raise ValueError(f"broker URL {text!r} is malformed: expected mqtts://HOST:PORT, "
                         "e.g. mqtts://broker.example.jp:8883")
    if parts.username or parts.password or parts.path not in ("", "/"):
        raise ValueError(f"broker URL {text!r}: only scheme, host and port (credentials go in "
                         "--broker-username / --broker-password-file)")
    return text.strip()


def check_ca_file(text: str) -> Path:
    from cryptography import x509

    path = Path(text.strip()).expanduser().resolve()
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"CA file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ValueError(f"CA file {path}: not a PEM certificate") from exc
    if not certs:
        raise ValueError(f"CA file {path}: no certificate in it")
    return path


def check_recipient(text: str, known: frozenset[str]) -> RecipientInput:
    """``ID=FILE``: ``ID`` a recipient of the catalogue, ``FILE`` an X25519 or hybrid key."""
    from agent import keys

    rid, sep, file = text.strip().partition("=")
    if not sep or not rid or not file:
        raise ValueError(f"recipient {text!r}: expected ID=FILE, e.g. company=company.pub")
    if rid not in known:
        raise ValueError(f"recipient {rid!r} is not in the catalogue; known: "
                         f"{', '.join(sorted(known))}")
    path = Path(file).expanduser().resolve()
    try:
        key = keys.load_recipient_public(path)
    except AgentError as exc:
        raise ValueError(f"recipient {rid}: unknown key format: {exc} (expected an X25519 "
                         "public key PEM or a HEMS MLKEM768X25519 PUBLIC KEY)") from exc
    data = keys.recipient_public_pem(key)
    return RecipientInput(id=rid, source=path, kem=key.kem, key_id=key.key_id, data=data)


def check_timezone(text: str) -> str:
    try:
        ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"time zone {text!r} is unknown (e.g. Asia/Tokyo)") from exc
    return text.strip()


def check_listen(text: str) -> str:
    from pydantic import ValidationError

    from agent.config import Web

    try:
        Web(listen=text.strip())
    except (ValidationError, ValueError) as exc:
        raise ValueError(f"page address {text!r}: must be a LAN ADDRESS:PORT such as "
                         "192.168.1.20:8080") from exc
    return text.strip()


def check_device(text: str) -> dict[str, Any]:
    """``NAME=HOST[:PORT][/UNIT]`` (Modbus TCP) or ``NAME=/dev/ttyX/UNIT`` (RTU)."""
    match = _DEVICE.fullmatch(text.strip())
    if match is None or not _NAME.fullmatch(match["name"]):
        raise ValueError(f"device {text!r}: expected NAME=HOST[:PORT][/UNIT] or "
                         "NAME=/dev/ttyUSB0/UNIT, NAME in lower case (e.g. inverter)")
    unit = int(match["unit"] or 1)
    if match["where"].startswith("/dev/"):
        if not 1 <= unit <= 247 or match["port"]:
            raise ValueError(f"device {text!r}: an RS-485 unit id is 1..247, no port")
        return {"name": match["name"], "transport": "rtu", "serial": match["where"],
                "unit": unit}
    port = int(match["port"] or 502)
    if not 1 <= port <= 65535 or not 0 <= unit <= 255:
        raise ValueError(f"device {text!r}: port 1..65535, unit 0..255")
    return {"name": match["name"], "transport": "tcp", "host": match["where"], "port": port,
            "unit": unit}


def check_consent(text: str) -> ConsentInput:
    """``PURPOSE:RECIPIENT=TIER`` (checked against the catalogue when the plan is made)."""
    match = re.fullmatch(r"([a-z_]+):([a-z_]+)=([a-z0-9]+)", text.strip())
    if match is None:
        raise ValueError(f"consent {text!r}: expected PURPOSE:RECIPIENT=TIER, "
                         "e.g. maintenance_watch:installer=30min")
    return ConsentInput(purpose=match[1], recipient=match[2], tier=match[3])


async def device_answers(spec: dict[str, Any], *, deadline: float = 2.0) -> str | None:
    """None if the device identifies itself (SunSpec or a profile), else why not."""
    from agent.scan_range import scan_hosts, scan_line

    if spec["transport"] == "tcp":
        result = await scan_hosts([spec["host"]], port=spec["port"], units=[spec["unit"]],
                                  per_request=deadline, concurrency=1)
    else:
        result = await scan_line(spec["serial"], units=[spec["unit"]], per_request=deadline)
    if result.found:
        return None
    return "; ".join(result.misses) or "no answer"


class Prompter:
    """Asks on the terminal; a wrong answer is explained and asked again."""

    def __init__(self, read: Callable[[str], str] = input,
                 secret: Callable[[str], str] = getpass.getpass) -> None:
        self._read, self._secret = read, secret

    def ask(self, question: str, check: Callable[[str], T], *, default: str | None = None,
            secret: bool = False) -> T:
        shown = f"{question} [{default}]: " if default else f"{question}: "
        for attempt in range(1, ATTEMPTS + 1):
            answer = (self._secret if secret else self._read)(shown).strip()
            if not answer and default is not None:
                answer = default
            try:
                return check(answer)
            except ValueError as exc:
                left = ATTEMPTS - attempt
                print(f"  ✗ {exc}" + (f" — try again ({left} left)" if left else ""),
                      file=sys.stderr, flush=True)
        raise ProvisionError(f"{question}: no valid answer after {ATTEMPTS} attempts; "
                             "nothing was written")

    def confirm(self, question: str) -> bool:
        return self._read(f"{question} [y/N]: ").strip().lower() in ("y", "yes")

    def items(self, question: str, check: Callable[[str], T]) -> list[T]:
        """Ask for several values, one per line; an empty line ends the list."""
        found: list[T] = []
        while True:
            text = self.ask(question + " (empty line: done)", lambda s: s)
            if not text:
                return found
            try:
                found.append(check(text))
            except ValueError as exc:
                print(f"  ✗ {exc} — try again", file=sys.stderr, flush=True)

    def recipient(self, known: frozenset[str]) -> list[RecipientInput]:
        """Recipient keys, each confirmed by its fingerprint before it is accepted."""

        def confirmed(text: str) -> RecipientInput:
            candidate = check_recipient(text, known)
            print(f"  {candidate.id}: {candidate.kem}, fingerprint "
                  f"{fingerprint(candidate.key_id)}", flush=True)
            if not self.confirm(f"  Is this {candidate.id}'s fingerprint as on the key sheet?"):
                raise ValueError(f"{candidate.id}: fingerprint not confirmed, key not added")
            return candidate

        return self.items("Recipient public key ID=FILE", confirmed)

    def device(self) -> list[dict[str, Any]]:
        """Devices one by one; each must answer before it is accepted."""

        def reachable(text: str) -> dict[str, Any]:
            spec = check_device(text)
            problem = asyncio.run(device_answers(spec))
            if problem is not None:
                raise ValueError(f"device {spec['name']} does not answer: {problem}")
            return spec

        return self.items("Device NAME=HOST[:PORT][/UNIT]", reachable)


# -- gathering: flags, then the existing configuration, then prompts ------------------------


def existing_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProvisionError(f"{path}: cannot read the existing configuration: {exc}; fix or "
                             "move it aside") from exc


def pick(flag: object, raw: dict[str, Any], key: str, check: Callable[[str], T],
         question: str, ask: Prompter | None, default: str | None = None) -> T | Any:
    """A flag (checked), else the existing value, else a prompt, else the default, else stop."""
    if flag is not None:
        try:
            return check(str(flag))
        except ValueError as exc:
            raise ProvisionError(str(exc)) from exc
    current = get_value(raw, key)
    if current is not None:
        return current
    if ask is not None:
        return ask.ask(question, check, default=default)
    if default is not None:
        return default
    raise ProvisionError(f"{question} is missing: give --{key.split('.')[-1].replace('_', '-')}")


def get_value(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def credentials(args: argparse.Namespace, broker: dict[str, Any], conf: Path,
                 files: dict[Path, bytes], private: dict[Path, bytes],
                 ask: Prompter | None) -> str | None:
    """Password or client certificate; returns a new password to write (None: keep)."""
    if args.client_cert is not None or args.client_key is not None:
        if args.client_cert is None or args.client_key is None:
            raise ProvisionError("--client-cert and --client-key go together")
        files[conf / "client.pem"] = read_input(args.client_cert, "client certificate")
        private[conf / "client.key"] = read_input(args.client_key, "client key")
        broker["client_cert"], broker["client_key"] = str(conf / "client.pem"), str(
            conf / "client.key")
    if args.broker_username is not None:
        broker["username"] = args.broker_username
    password = None
    if args.broker_password_file is not None:
        password = read_input(args.broker_password_file, "password file").decode().strip()
    elif ask is not None and "password_file" not in broker and "client_cert" not in broker:
        broker.setdefault("username", ask.ask("Broker user name", nonempty))
        password = ask.ask("Broker password", nonempty, secret=True)
    if password is not None:
        if not password:
            raise ProvisionError(f"{args.broker_password_file}: the password file is empty")
        broker["password_file"] = str(conf / "broker.password")
    if "username" not in broker and "client_cert" not in broker:
        raise ProvisionError("broker credentials are missing: give --broker-username and "
                             "--broker-password-file, or --client-cert and --client-key")
    return password


def ca_file(args: argparse.Namespace, broker: dict[str, Any], conf: Path,
            files: dict[Path, bytes], ask: Prompter | None) -> None:
    """The broker's CA, copied next to the configuration (pinned: never the system's CAs)."""
    if args.broker_ca is None and broker.get("ca_file"):
        return
    if args.broker_ca is not None:
        try:
            source = check_ca_file(args.broker_ca)
        except ValueError as exc:
            raise ProvisionError(str(exc)) from exc
    elif ask is not None:
        source = ask.ask("Broker CA file (PEM)", check_ca_file)
    else:
        raise ProvisionError("the broker's CA is missing: give --broker-ca FILE")
    files[conf / "broker-ca.pem"] = source.read_bytes()
    broker["ca_file"] = str(conf / "broker-ca.pem")


def nonempty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def read_input(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise ProvisionError(f"{what} {path}: {exc.strerror}") from exc


def recipients(args: argparse.Namespace, raw: dict[str, Any], conf: Path,
                files: dict[Path, bytes], ask: Prompter | None) -> tuple[RecipientInput, ...]:
    known = catalogue_recipients(raw)
    try:
        given = [check_recipient(text, known) for text in args.recipient]
    except ValueError as exc:
        raise ProvisionError(str(exc)) from exc
    if not given and not raw.get("recipients"):
        if ask is None:
            raise ProvisionError("no recipient key: give --recipient company=FILE (and the "
                                 "support centre's, installers'...)")
        given = ask.recipient(known)
        if not given:
            raise ProvisionError("at least one recipient key (the company's) is needed")
    entries = {r["id"]: r for r in raw.get("recipients", [])}
    for r in given:
        target = conf / "recipients" / f"{r.id}.pub"
        files[target] = r.data
        entries[r.id] = {**entries.get(r.id, {}), "id": r.id, "key_file": str(target),
                         "kem": r.kem}
    for text in args.recipient_name:
        rid, sep, name = text.partition("=")
        if not sep or rid not in entries or not name.strip():
            raise ProvisionError(f"--recipient-name {text!r}: expected ID=NAME for a recipient "
                                 "that has a key")
        entries[rid]["display_name"] = name.strip()
    raw["recipients"] = list(entries.values())
    return tuple(given)


def catalogue_recipients(raw: dict[str, Any]) -> frozenset[str]:
    from policy.catalogue import load_catalogue
    from policy.errors import PolicyError

    try:
        catalogue = load_catalogue(raw.get("catalogue"))
    except PolicyError as exc:
        raise ProvisionError(f"catalogue: {exc}") from exc
    return frozenset(r.id for p in catalogue.spec.purposes for r in p.recipients)


def devices(args: argparse.Namespace, raw: dict[str, Any], ask: Prompter | None) -> None:
    """Devices given (``--device`` replaces one of the same name) or chosen in a scan (kept
    beside an existing device of the same name at another address, with a suffix)."""
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
    if not given and not scanned and not raw.get("devices") and ask is not None:
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


def consents(args: argparse.Namespace, raw: dict[str, Any]) -> tuple[ConsentInput, ...]:
    try:
        consents = tuple(check_consent(text) for text in args.consent)
    except ValueError as exc:
        raise ProvisionError(str(exc)) from exc
    if consents and not (args.consent_ref or "").strip():
        raise ProvisionError("--consent records the household's written consent: give the "
                             "paper form's reference with --consent-ref")
    return consents
