"""Structure-aware fuzzing of the parsers of outside JSON: commands, envelope headers and
bodies, the receiver's handling of a message, and catalogues.

Documents are built from a valid template with one hostile fragment put in place of one of its
values (deep nesting, huge numbers, long strings, duplicate keys, NaN, lone surrogates, wrong
types), then optionally cut short or damaged byte by byte. Everything is signed (and sealed)
genuinely, so the parsers behind the signature check are reached. The properties: each parser
returns or raises its own documented error, never anything else; what the strict rules refuse
(nesting deeper than the limit, a key twice) is never accepted.

Shared by the short profile (tests/unit/wire/test_fuzz_parsers.py, ``make test``) and the long one
(tests/proof/test_fuzz_nesting.py, ``make proof``).
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.control import event as _hypothesis_event
from hypothesis.errors import InvalidArgument

from agent.cloud.receiver import Receiver, ReplayStore
from agent.errors import EnvelopeError
from agent.wire import commands, envelope, keys
from agent.wire.commands import CommandError
from policy import strict_json
from policy.catalogue import parse_catalogue
from policy.errors import CatalogueError
from tests.support import fuzz as f

HOLE = "\x00hole\x00"
_HOLE_TEXT = json.dumps(HOLE)
OPERATOR = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
OPERATOR_ID = "ops-fuzz"
SITE = f.SITE
NOW = 1767225600
REASONS = frozenset({"oversized", "malformed", "unknown_key", "bad_signature", "wrong_site",
                     "expired", "not_yet_valid"})


@dataclass(frozen=True)
class Fragment:
    """Raw JSON text for one value, and whether the strict rules must refuse it."""

    text: str
    refused: bool


def _nest(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return '[{"a":' * (depth // 2) + "[]" + "}]" * (depth // 2)


NESTED = st.builds(lambda depth, kind: Fragment(_nest(depth, kind), depth > strict_json.MAX_DEPTH),
                   st.integers(1, 3000) | st.sampled_from([63, 64, 65, 2000]),
                   st.sampled_from(["array", "object", "mixed"]))
NUMBERS = st.builds(lambda t: Fragment(t, False), st.one_of(
    st.integers(1, 6000).map(lambda n: "9" * n),  # beyond 4,300 digits: int() refuses
    st.integers(1, 6000).map(lambda n: "-1" + "0" * n + ".5"),
    st.integers(0, 99999).map(lambda e: f"1e{e}"), st.integers(0, 99999).map(lambda e: f"-1e-{e}"),
    st.sampled_from(["0", "-0", "1.0e+2", "01", "1.", ".5", "+1", "0x10"])))
CONSTANTS = st.builds(lambda t: Fragment(t, True), st.sampled_from(["NaN", "Infinity",
                                                                    "-Infinity"]))
STRINGS = st.builds(lambda t: Fragment(t, False), st.one_of(
    st.integers(0, 300_000).map(lambda n: json.dumps("a" * n)),
    st.text(max_size=50).map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.sampled_from(['"\\u0000"', '"\\\\"', '"\\"', '"\\x41"', '"\\ud800"', '"\\udc00x"',
                     '"\\ud83d\\ude00"', '"\x01"'])))
DUPLICATES = st.builds(lambda k, a, b: Fragment(f'{{"{k}":{a},"{k}":{b}}}', True),
                       st.sampled_from(["a", "seq", "site", "v"]), st.integers(0, 9),
                       st.integers(0, 9))
WRONG = st.builds(lambda doc: Fragment(json.dumps(doc), False), f.JSON)
FRAGMENTS = st.one_of(NESTED, NUMBERS, CONSTANTS, STRINGS, DUPLICATES, WRONG)


@dataclass(frozen=True)
class Hostile:
    """A hostile document: its bytes and whether the strict rules refuse it for sure."""

    data: bytes
    refused: bool


def _holes(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _holes(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _holes(value, (*prefix, index))
    return out


def _with_hole(doc: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return HOLE
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = _with_hole(doc[path[0]], path[1:])
    return copy


@st.composite
def hostile(draw: st.DrawFn, template: Any, *, encoding: str = "ascii") -> Hostile:
    """``template`` with one value replaced by a hostile fragment, a key possibly repeated
    at the top, then possibly cut short or damaged."""
    paths = _holes(template)
    path = paths[draw(st.integers(0, len(paths) - 1))]
    fragment = draw(FRAGMENTS)
    text = json.dumps(_with_hole(template, path), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=encoding == "ascii").replace(_HOLE_TEXT, fragment.text, 1)
    refused = fragment.refused
    if path and isinstance(template, dict) and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(template)))
        text = "{" + json.dumps(key) + ":" + json.dumps(template[key]) + "," + text[1:]
        refused = True
    data = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none", "none", "cut", "edit"]))
    if damage == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif damage == "edit":
        data = f.mutate_bytes(data, draw(f.BYTE_EDITS))
    # A cut or edit may remove what made the document refused; only intact ones are sure.
    return Hostile(data, refused and damage == "none")


def event(name: str) -> None:
    """A hypothesis statistics event; nothing when a check runs outside a hypothesis test."""
    with contextlib.suppress(InvalidArgument):
        _hypothesis_event(name)


def _kind(error: object) -> str:
    """What kind of refusal, for hypothesis' statistics: the strict JSON reason if any."""
    found = re.search(r"refused \((\w+)\)", str(error))
    return f"json {found.group(1)}" if found else "other check"


# --- commands ---------------------------------------------------------------------------------

def command_template(ctype: str) -> dict[str, Any]:
    args: dict[str, Any] = {
        "suspend": {"purpose": "improvement", "reference": "SR-1"},
        "grant_request": {"purpose": "support", "recipient": "support_centre", "tier": "raw",
                          "hours": 2, "reference": "SR-2"},
        "catalogue_update": {"catalogue": f.factory_catalogue()},
        "diagnostics": {},
    }[ctype]
    return json.loads(commands.new_command(site=SITE, key=OPERATOR_ID, type=ctype, args=args,
                                           now=NOW, command_id="c" * 16).body_bytes())


def sign_command(body: bytes) -> bytes:
    """A command with ``body`` as it is, genuinely signed by the pinned operator key."""
    signed = struct.pack(">4sBI", commands.MAGIC, commands.VERSION, len(body)) + body
    return signed + struct.pack(">H", commands.SIGNATURE_LEN) + OPERATOR.sign(signed)


def check_command(body: Hostile) -> None:
    """verify_command returns a Command or raises CommandError with a documented reason."""
    payload = sign_command(body.data)
    try:
        command = commands.verify_command(payload, keys={OPERATOR_ID: OPERATOR.public_key()},
                                          site=SITE, now=NOW + 1)
    except CommandError as exc:
        assert exc.reason in REASONS and str(exc), (exc.reason, exc)
        event(f"refused: {_kind(exc)}")
        return
    event("accepted")
    assert not body.refused, "a command the strict rules refuse was accepted"
    assert command.site == SITE


# --- envelopes --------------------------------------------------------------------------------

_RECIPIENT = f._RECIPIENT
_DEVICE = f._DEVICE


def header_template() -> dict[str, Any]:
    return json.loads(_header(kind="data").to_bytes())


def _header(*, kind: str, seq: int = 1) -> envelope.Header:
    return envelope.Header(
        site=SITE, purpose="service", tier="30min", kind=kind, recipient_key=_RECIPIENT.key_id,
        device_key=keys.device_key_id(_DEVICE.public_key()), catalogue="fuzz",
        consent_id="c", consent_hash="ab" * 32, seq=seq, window_start=NOW, window_end=NOW + 1800,
        created=1)


def seal_raw(header: bytes, plaintext: bytes, *, compress: bool = True) -> bytes:
    """An envelope with ``header`` and ``plaintext`` exactly as given, genuinely encrypted to
    the fuzz recipient and signed by the fuzz device (the layout of docs/wire-format.md §1)."""
    if compress:
        plaintext = zlib.compress(plaintext)
    sealed = envelope._SUITES[keys.KEM_X25519].encrypt(plaintext, _RECIPIENT.public.key, header)
    enc, ct = sealed[:32], sealed[32:]
    signed = b"".join((envelope.MAGIC, struct.pack(">BI", envelope.VERSION, len(header)),
                       header, struct.pack(">H", len(enc)), enc, struct.pack(">I", len(ct)),
                       ct))
    return signed + struct.pack(">H", envelope.SIGNATURE_LEN) + _DEVICE.sign(signed)


def check_header(header: Hostile) -> None:
    """header_from_bytes returns a Header or raises EnvelopeError."""
    try:
        envelope.header_from_bytes(header.data)
    except EnvelopeError as exc:
        assert str(exc)
        event(f"refused: {_kind(exc)}")
        return
    event("accepted")
    assert not header.refused, "a header the strict rules refuse was accepted"


def check_body(body: Hostile) -> None:
    """The body decoder returns a JSON object or raises EnvelopeError."""
    try:
        opened = envelope._decode_body(_header(kind="data"), zlib.compress(body.data),
                                       envelope.DEFAULT_LIMITS)
    except EnvelopeError as exc:
        assert str(exc)
        event(f"refused: {_kind(exc)}")
        return
    event("accepted")
    assert not body.refused, "a body the strict rules refuse was accepted"
    assert isinstance(opened, dict)


def body_template() -> dict[str, Any]:
    return {"records": [{"point": "pv.energy", "delta": 1.5}, {"point": "grid.power",
                                                               "mean": 2.0}]}


def check_receiver(header: Hostile | None, body: Hostile | None) -> None:
    """Receiver.handle never raises, writing to a real UTF-8 file as hems-receiver does; what
    the strict rules refuse is not accepted."""
    header_bytes = header.data if header is not None else _header(kind="data").to_bytes()
    plaintext = body.data if body is not None else json.dumps(body_template()).encode()
    payload = seal_raw(header_bytes, plaintext)
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "out.jsonl"
        with out_path.open("w", encoding="utf-8") as out:
            receiver = Receiver(device_keys={SITE: _DEVICE.public_key()},
                                recipient_keys={_RECIPIENT.key_id: _RECIPIENT},
                                rules=f.rules(), replay=ReplayStore(Path(tmp) / "seen.db"),
                                output=out)
            try:
                verdict = receiver.handle(f"hems/v1/{SITE}/service/data", payload)
            finally:
                receiver.replay.close()
        assert "internal error" not in receiver.rejected, verdict.reason
        event("accepted" if verdict.accepted else f"refused: {_kind(verdict.reason)}")
        if verdict.accepted:
            assert not (header is not None and header.refused), "a refused header was accepted"
            assert not (body is not None and body.refused), "a refused body was accepted"
            json.loads(out_path.read_text(encoding="utf-8"))
        else:
            assert verdict.reason and out_path.read_text(encoding="utf-8") == ""


# --- catalogues -------------------------------------------------------------------------------

def check_catalogue_update(doc: Hostile) -> None:
    """parse_catalogue returns a Catalogue or raises CatalogueError."""
    try:
        parse_catalogue(doc.data, source="fuzz")
    except CatalogueError as exc:
        assert str(exc)
        event(f"refused: {_kind(exc)}")
        return
    event("accepted")
    assert not doc.refused, "a catalogue the strict rules refuse was accepted"


# --- the tests, for one budget ------------------------------------------------------------------

COMMAND_TYPES = st.sampled_from(["suspend", "grant_request", "catalogue_update", "diagnostics"])


def cases(examples: int) -> dict[str, Callable[..., None]]:
    """The fuzz tests with ``examples`` examples each (derandomized in the short profile)."""
    budget = settings(max_examples=examples, deadline=None, derandomize=examples < 100,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                             HealthCheck.large_base_example])

    @budget
    @given(st.data())
    def command(data: st.DataObject) -> None:
        check_command(data.draw(hostile(command_template(data.draw(COMMAND_TYPES)))))

    @budget
    @given(st.data())
    def header(data: st.DataObject) -> None:
        check_header(data.draw(hostile(header_template())))

    @budget
    @given(st.data())
    def body(data: st.DataObject) -> None:
        check_body(data.draw(hostile(body_template(), encoding="utf-8")))

    @budget
    @given(st.data(), st.sampled_from(["header", "body", "both"]))
    def receiver(data: st.DataObject, which: str) -> None:
        header = data.draw(hostile(header_template())) if which != "body" else None
        body = (data.draw(hostile(body_template(), encoding="utf-8")) if which != "header"
                else None)
        check_receiver(header, body)

    @budget
    @given(st.data())
    def catalogue(data: st.DataObject) -> None:
        check_catalogue_update(data.draw(hostile(f.factory_catalogue(), encoding="utf-8")))

    return {"command": command, "header": header, "body": body, "receiver": receiver,
            "catalogue": catalogue}
