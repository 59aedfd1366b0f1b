"""Signed operator commands: the downlink's wire format, built and checked here (pure).

Layout (integers big-endian; docs/wire-format.md §9 is the normative description)::

    magic "HEMC" | version u8 | body_len u32 | body | sig_len u16 | signature

The body is canonical JSON (sorted keys, no spaces, ASCII). The signature is Ed25519 by an
operator key pinned at provisioning, over every byte before ``sig_len``; decoders use the body
bytes exactly as received. A body names its signing key by id, the site it is for, a unique id,
when it was issued and when it expires, and carries type-specific ``args``. No command type has a
field for a secret: commands travel in the clear (over TLS) and are only signed.

:func:`verify_command` checks, in order: size, layout, body fields, key id, signature, site,
validity window. Each failure raises :class:`CommandError` with a short ``reason`` code (used in
metrics and logs) and a message naming what is wrong. Replays are the caller's business: it
keeps the ids it has seen until they expire (``agent.daemon.seen_ids``).
"""

from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.errors import AgentError
from policy import strict_json
from policy.strict_json import JSONRefused

MAGIC = b"HEMC"
VERSION = 1
SIGNATURE_LEN = 64
MAX_COMMAND = 256 * 1024
"""Largest accepted command (a whole catalogue is about 15 KiB)."""
MAX_LIFETIME = 7 * 24 * 3600
"""Longest allowed ``expires - issued``: bounds how long a seen id must be remembered."""
CLOCK_SKEW = 300
"""A command issued up to this many seconds in the gateway's future is still accepted."""
_PREFIX = struct.Struct(">4sBI")
_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_REFERENCE = re.compile(r"[A-Za-z0-9._:/-]{1,64}")
_BODY_FIELDS = frozenset({"v", "id", "site", "key", "type", "issued", "expires", "args"})


class CommandError(AgentError):
    """A command is refused; ``reason`` is a short code, the message says what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CommandType(StrEnum):
    """What a command asks for."""

    CATALOGUE_UPDATE = "catalogue_update"
    SUSPEND = "suspend"
    STOP_THIRD_PARTY = "stop_third_party"
    EXPORT = "export"
    DELETE = "delete"
    GRANT_REQUEST = "grant_request"
    DIAGNOSTICS = "diagnostics"


_TYPES = frozenset(t.value for t in CommandType)
# Per type: argument name -> (required, check). Unknown arguments are refused.
_Check = tuple[bool, str]
_ARGS: dict[CommandType, dict[str, _Check]] = {
    CommandType.CATALOGUE_UPDATE: {"catalogue": (True, "object")},
    CommandType.SUSPEND: {"purpose": (True, "name"), "recipient": (False, "name"),
                          "reference": (True, "reference")},
    CommandType.STOP_THIRD_PARTY: {"reference": (True, "reference")},
    CommandType.EXPORT: {"reference": (True, "reference")},
    CommandType.DELETE: {"reference": (True, "reference")},
    CommandType.GRANT_REQUEST: {"purpose": (True, "name"), "recipient": (True, "name"),
                                "tier": (True, "name"), "hours": (True, "hours"),
                                "reference": (True, "reference")},
    CommandType.DIAGNOSTICS: {},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One command body. Times are Unix seconds, UTC."""

    id: str
    site: str
    key: str
    type: CommandType
    issued: int
    expires: int
    args: Mapping[str, Any] = field(default_factory=dict)
    v: int = VERSION

    def __post_init__(self) -> None:
        _validate(self)

    def body_bytes(self) -> bytes:
        """Canonical JSON of the body (what is signed)."""
        body = {"v": self.v, "id": self.id, "site": self.site, "key": self.key,
                "type": self.type.value, "issued": self.issued, "expires": self.expires,
                "args": dict(self.args)}
        return canonical(body)


def canonical(value: Any) -> bytes:
    """Sorted keys, no spaces, ASCII (non-ASCII escaped), no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def new_command(*, site: str, key: str, type: CommandType | str, args: Mapping[str, Any],
                now: float, ttl: int = 24 * 3600, command_id: str | None = None) -> Command:
    """A fresh command valid from ``now`` for ``ttl`` seconds, with a random id."""
    issued = int(now)
    return Command(id=command_id or uuid.uuid4().hex, site=site, key=key,
                   type=_command_type(type), issued=issued, expires=issued + ttl,
                   args=dict(args))


def encode(command: Command, private_key: ed25519.Ed25519PrivateKey) -> bytes:
    """The signed wire form of ``command``."""
    body = command.body_bytes()
    if _PREFIX.size + len(body) + 2 + SIGNATURE_LEN > MAX_COMMAND:
        raise CommandError("oversized", f"command of {len(body)} body bytes exceeds "
                                        f"{MAX_COMMAND} bytes")
    signed = _PREFIX.pack(MAGIC, VERSION, len(body)) + body
    return signed + struct.pack(">H", SIGNATURE_LEN) + private_key.sign(signed)


@dataclass(frozen=True, slots=True, kw_only=True)
class Parsed:
    """A command split into its parts; the signature is not checked yet."""

    command: Command
    signed: bytes
    signature: bytes


def parse(payload: bytes, *, max_size: int = MAX_COMMAND) -> Parsed:
    """Split and validate the layout and body; raise CommandError (oversized/malformed)."""
    if len(payload) > max_size:
        raise CommandError("oversized", f"command of {len(payload)} bytes exceeds {max_size}")
    if len(payload) < _PREFIX.size:
        raise CommandError("malformed", "command is shorter than its fixed prefix")
    magic, version, body_len = _PREFIX.unpack_from(payload)
    if magic != MAGIC:
        raise CommandError("malformed", "not a command (magic is not HEMC)")
    if version != VERSION:
        raise CommandError("malformed", f"command version {version} is not supported")
    end = _PREFIX.size + body_len
    if end + 2 > len(payload):
        raise CommandError("malformed", "body_len runs past the end of the command")
    (sig_len,) = struct.unpack_from(">H", payload, end)
    if sig_len != SIGNATURE_LEN or end + 2 + sig_len != len(payload):
        raise CommandError("malformed", "signature length is not 64 or bytes trail it")
    command = _body(payload[_PREFIX.size:end])
    return Parsed(command=command, signed=payload[:end], signature=payload[end + 2:])


def verify_command(payload: bytes, *, keys: Mapping[str, ed25519.Ed25519PublicKey], site: str,
                   now: float, max_size: int = MAX_COMMAND) -> Command:
    """Parse and check a command for ``site`` at ``now``; raise CommandError with a reason."""
    parsed = parse(payload, max_size=max_size)
    command = parsed.command
    key = keys.get(command.key)
    if key is None:
        raise CommandError("unknown_key", "the command's key id is not a pinned operator key")
    try:
        key.verify(parsed.signature, parsed.signed)
    except InvalidSignature as exc:
        raise CommandError("bad_signature", "the operator signature does not verify") from exc
    if command.site != site:
        raise CommandError("wrong_site", "the command is for another site")
    if now >= command.expires:
        raise CommandError("expired", f"the command expired {int(now) - command.expires} s ago")
    if command.issued > now + CLOCK_SKEW:
        raise CommandError("not_yet_valid", "the command is issued in the future (clock skew?)")
    return command


def _body(raw: bytes) -> Command:
    try:
        obj = strict_json.loads(raw, encoding="ascii")
    except JSONRefused as exc:
        raise CommandError("malformed", f"body refused ({exc.reason}): {exc}") from exc
    if not isinstance(obj, dict):
        raise CommandError("malformed", "body is not a JSON object")
    if set(obj) != _BODY_FIELDS:
        missing, extra = sorted(_BODY_FIELDS - set(obj)), sorted(set(obj) - _BODY_FIELDS)
        raise CommandError("malformed", f"body fields wrong: missing {missing}, "
                                        f"unexpected {_shown(extra)}")
    if obj["v"] != VERSION or type(obj["v"]) is not int:
        raise CommandError("malformed", f"body version {_shown(obj['v'])} is not {VERSION}")
    ctype = _command_type(obj["type"])
    return Command(id=obj["id"], site=obj["site"], key=obj["key"], type=ctype,
                   issued=obj["issued"], expires=obj["expires"], args=obj["args"])


def _command_type(value: object) -> CommandType:
    if isinstance(value, str) and value in _TYPES:
        return CommandType(value)
    raise CommandError("malformed", f"unknown command type {_shown(value)}; expected one of "
                                    f"{', '.join(sorted(_TYPES))}")


def _validate(c: Command) -> None:
    def bad(problem: str) -> CommandError:
        return CommandError("malformed", problem)

    for name, pattern in (("id", _ID), ("site", _NAME), ("key", _NAME)):
        value = getattr(c, name)
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise bad(f"field {name!r} does not match {pattern.pattern}")
    for name in ("issued", "expires"):
        value = getattr(c, name)
        if type(value) is not int or not 0 <= value < 2**53:
            raise bad(f"field {name!r} is not Unix seconds")
    if not 0 < c.expires - c.issued <= MAX_LIFETIME:
        raise bad(f"expires must be after issued, by at most {MAX_LIFETIME} s")
    if not isinstance(c.args, Mapping):
        raise bad("field 'args' is not an object")
    _validate_args(c.type, c.args, bad)


def _validate_args(ctype: CommandType, args: Mapping[str, Any], bad: Any) -> None:
    spec = _ARGS[ctype]
    unknown = sorted(set(args) - set(spec))
    if unknown:
        raise bad(f"{ctype.value}: unexpected arguments {_shown(unknown)}")
    for name, (required, kind) in spec.items():
        if name not in args:
            if required:
                raise bad(f"{ctype.value}: argument {name!r} is required")
            continue
        if not _ARG_CHECKS[kind](args[name]):
            raise bad(f"{ctype.value}: argument {name!r} is not a valid {kind}")


def _shown(value: object) -> str:
    """``repr`` cut to 60 characters: a refused command's values may be huge."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


_ARG_CHECKS: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "name": lambda v: isinstance(v, str) and _NAME.fullmatch(v) is not None,
    "reference": lambda v: isinstance(v, str) and _REFERENCE.fullmatch(v) is not None,
    "hours": lambda v: type(v) is int and 1 <= v <= 24 * 30,
}
