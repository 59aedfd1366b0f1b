"""The checks behind every input of ``hems-agent provision``, and the types they produce.

Each check takes the text as typed (or given as a flag) and returns the checked value, or raises
``ValueError`` naming what is wrong and what is expected; the caller turns that into a prompt
asked again or a :class:`ProvisionError`. Nothing here asks, reads the configuration or writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.config.model import NAME_PATTERN, SITE_ID_PATTERN
from agent.errors import AgentError

_SITE = re.compile(SITE_ID_PATTERN)  # the configuration's own rules
_NAME = re.compile(NAME_PATTERN)
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
    """A CA file the uplink will load (the same check ``run`` makes)."""
    from agent.config_checks import file_problem, load_ca

    path = Path(text.strip()).expanduser().resolve()
    problem = file_problem(path, load_ca)
    if problem is not None:
        raise ValueError(f"CA file {problem}")
    return path


def check_recipient(text: str, known: frozenset[str]) -> RecipientInput:
    """``ID=FILE``: ``ID`` a recipient of the catalogue, ``FILE`` an X25519 or hybrid key."""
    from agent.wire import keys

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

    from agent.config.model import Web

    try:  # the configuration's own rule, so provision writes only what run accepts
        Web(listen=text.strip())
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"page address {text!r}: {reason}") from exc
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


def nonempty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text
