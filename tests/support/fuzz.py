"""Fuzz properties shared by the short smoke tests (``make test``) and the long proofs
(``make proof``): each ``check_*`` takes hypothesis-drawn input and asserts that the code under
test either works or raises its module's own documented error, with a message that says what is
wrong; and that nothing the policy forbids gets through.

The tests wrap each property with ``@given`` and their own example budget; nothing here depends
on how many examples run.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from io import StringIO
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import strategies as st

from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore, content_problem
from agent.config.model import load_config
from agent.errors import ConfigError
from agent.wire import envelope, keys
from drivers import codec
from drivers.device import ModbusDevice
from drivers.errors import DeviceProtocolError, DriverError, ProfileError
from drivers.models import Quality
from drivers.profiles import PROFILE_DIR, load
from drivers.sunspec.decode import decode_model
from drivers.sunspec.discovery import discover, read_model
from drivers.sunspec.mapping import map_points
from drivers.sunspec.models import available_models, load_model
from policy.catalogue import load_catalogue, parse_catalogue
from policy.errors import CatalogueError, PolicyError
from policy.ledger import Ledger
from policy.tiers import rank

# --- strategies -------------------------------------------------------------------------------

REGISTER = st.integers(0, 0xFFFF)
JSON_LEAF = st.none() | st.booleans() | st.integers(-2**40, 2**40) | \
    st.floats(allow_nan=False) | st.text(max_size=20)
JSON = st.recursive(JSON_LEAF, lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=12)
# One edit of a JSON document: (path choice seed, action, replacement)
EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["set", "delete", "drop"]),
                           JSON), min_size=1, max_size=4)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def mutate(doc: Any, edits: list[tuple[int, str, Any]]) -> Any:
    """``doc`` with each edit applied at a pseudo-randomly chosen path: replace the value,
    delete it from its container, or set the whole container to the replacement."""
    doc = copy.deepcopy(doc)
    for seed, action, value in edits:
        paths = [p for p in _paths(doc) if p]
        if not paths:
            return value
        path = paths[seed % len(paths)]
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if action == "set" or (action == "drop" and len(path) == 1):
            parent[path[-1]] = value
        else:
            del parent[path[-1]]
    return doc


def _error_is_clear(exc: Exception) -> None:
    assert str(exc).strip(), f"{type(exc).__name__} without a message"


# --- Modbus decoding --------------------------------------------------------------------------

DTYPE = st.sampled_from([*codec.DTYPES, codec.STRING])


def check_codec(regs: list[int], dtype: str, word: str, byte: str) -> None:
    """codec.decode: a value or ValueError; a numeric value round-trips through encode."""
    try:
        value = codec.decode(regs, dtype, word_order=word, byte_order=byte)
    except ValueError as exc:
        _error_is_clear(exc)
        return
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        again = codec.encode(value, dtype, word_order=word, byte_order=byte)
        assert codec.decode(again, dtype, word_order=word, byte_order=byte) == value


@cache
def sunspec_models() -> tuple[int, ...]:
    return tuple(m for m in available_models() if load_model(m) is not None)


def check_sunspec_decode(model_id: int, regs: list[int]) -> None:
    """decode_model over any block: a dict, or ValueError for a block too short to hold a
    point or its scale factor; decoded floats are never NaN (NaN is "not implemented")."""
    model = load_model(model_id)
    assert model is not None
    try:
        result = decode_model(model, [model_id, len(regs), *regs])
    except ValueError as exc:  # raw_value's documented error, e.g. a scale factor cut off
        _error_is_clear(exc)
        return
    assert isinstance(result, dict)
    for value in _leaves(result):
        if isinstance(value, float):
            assert not math.isnan(value)


def _leaves(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [v for child in node.values() for v in _leaves(child)]
    if isinstance(node, list):
        return [v for child in node for v in _leaves(child)]
    return [node]


class ImageReader:
    """A device that answers reads from a register map; unknown registers: exception 2."""

    def __init__(self, image: Mapping[int, int]) -> None:
        self.image = dict(image)
        self.requests = 0

    async def read_holding(self, address: int, count: int, *, unit: int) -> list[int]:
        self.requests += 1
        assert self.requests < 2000, "runaway discovery: too many reads"
        try:
            return [self.image[a] for a in range(address, address + count)]
        except KeyError:
            raise DeviceProtocolError("illegal data address", exception_code=2) from None

    read_input = read_holding


def sunspec_image(chain: list[tuple[int, list[int]]], tail: int | None) -> dict[int, int]:
    """A register map with the SunS marker at 40000 and ``chain`` (model id, registers) after
    it; ``tail`` is the end marker (0xFFFF) or some other value; None leaves it out."""
    image = {40000: 0x5375, 40001: 0x6E53}
    address = 40002
    for model_id, regs in chain:
        for value in (model_id, len(regs), *regs):
            if address < 0x10000:
                image[address] = value
            address += 1
    if tail is not None and address < 0x10000:
        image[address] = tail
        image[address + 1] = 0
    return image


def check_discovery(image: dict[int, int]) -> None:
    """Discovery, mapping and one poll over an arbitrary register map: a DriverError (or the
    documented ValueError from mapping) or readings whose quality says what happened."""
    asyncio.run(_discover_and_poll(image))


async def _discover_and_poll(image: dict[int, int]) -> None:
    reader = ImageReader(image)
    try:
        found = await discover(reader, unit=1)
        blocks = {m.start: await read_model(reader, m, unit=1) for m in found.models}
        points = map_points(found, blocks)
    except (DriverError, ValueError) as exc:
        _error_is_clear(exc)
        return
    if not points:
        return
    device = ModbusDevice(name="fuzz", reader=reader, unit=1, points=points,
                          identity=found.identity)
    readings = await device.poll(0.0)
    assert len(readings) == len(points)
    for reading in readings:
        if reading.quality is Quality.GOOD:
            assert reading.value is not None
            assert not isinstance(reading.value, float) or math.isfinite(reading.value)


# --- profiles, configuration, catalogue -------------------------------------------------------

@cache
def sungrow_profile() -> Any:
    return json.loads((PROFILE_DIR / "sungrow_sh.json").read_text(encoding="utf-8"))


def check_profile(doc: Any) -> None:
    """profiles.load: a Profile whose points can be planned, or ProfileError naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        try:
            profile = load(path)
        except ProfileError as exc:
            assert str(path) in str(exc), exc
            return
        for point in profile.points():
            assert point.spans() and point.interval > 0


CONFIG_BASE: dict[str, Any] = {
    "site_id": "site-0001", "timezone": "Asia/Tokyo", "state_dir": "state",
    "device_key_file": "device.key",
    "broker": {"url": "mqtts://broker.example:8883", "ca_file": "ca.pem",
               "username": "site-0001", "password_file": "broker.pass"},
    "recipients": [{"id": "company", "key_file": "company.pub"}],
    "buses": [{"name": "rs485", "port": "/dev/ttyAMA0", "baud": 9600}],
    "devices": [{"name": "inverter", "host": "192.168.1.30"},
                {"name": "battery", "transport": "rtu", "bus": "rs485", "unit": 3}],
}


def toml_dumps(doc: Mapping[str, Any]) -> str:
    """A small TOML writer for fuzzed documents: values that TOML cannot hold (None, mixed
    nesting) are written as strings, so the file is still TOML and the model has to judge it."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables:
        lines.append(f"[{_toml_key(key)}]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    for key, items in arrays:
        for item in items:
            lines.append(f"[[{_toml_key(key)}]]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _toml_key(key: object) -> str:
    return json.dumps(str(key))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    return json.dumps(str(value))


def check_config(text: str) -> None:
    """load_config: an AgentConfig or ConfigError naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        for secret in ("device.key", "broker.pass"):
            (Path(tmp) / secret).write_text("secret\n", encoding="utf-8")
            (Path(tmp) / secret).chmod(0o600)
        path = Path(tmp) / "agent.toml"
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert str(path) in str(exc), exc
            return
        assert config.site_id


@cache
def factory_catalogue() -> Any:
    from importlib import resources

    return json.loads(resources.files("policy").joinpath("catalogue/factory.json")
                      .read_text(encoding="utf-8"))


def check_catalogue(text: str | bytes) -> None:
    """parse_catalogue: a Catalogue whose defaults are within each purpose's finest tier, or
    CatalogueError naming the source and the field."""
    try:
        catalogue = parse_catalogue(text, source="fuzz.json")
    except CatalogueError as exc:
        assert str(exc).startswith("fuzz.json: "), exc
        assert exc.problem
        return
    for purpose in catalogue.spec.purposes:
        if purpose.default is not None:
            assert purpose.finest is not None
            assert rank(purpose.default) <= rank(purpose.finest)


# --- the ledger file ---------------------------------------------------------------------------

T0 = datetime(2026, 3, 1, tzinfo=UTC)
_LEDGER_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _verify(message: bytes, signature: bytes) -> bool:
    try:
        _LEDGER_KEY.public_key().verify(signature, message)
    except Exception:
        return False
    return True


@cache
def ledger_bytes() -> tuple[bytes, tuple[tuple[Any, Any], ...]]:
    """A genuine signed ledger with a few changes, and the grants it holds a day later."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.json"
        ledger = Ledger.open(path, load_catalogue(), "site-7f3a", T0, sign=_LEDGER_KEY.sign,
                             verify=_verify)
        ledger.set_grant("maintenance_watch", "installer", "1d", source="household_page",
                         reference="fuzz", now=T0 + timedelta(hours=1))
        ledger.set_grant("improvement", "company", None, source="household_page",
                         reference="fuzz", now=T0 + timedelta(hours=2))
        grants = _grant_view(ledger)
        ledger.close()
        return path.read_bytes(), grants


def _grant_view(ledger: Ledger) -> tuple[tuple[Any, Any], ...]:
    grants = ledger.grants(T0 + timedelta(days=1))
    return tuple(sorted((key, (g.tier, g.since, g.expires)) for key, g in grants.items()))


def check_ledger(data: bytes) -> None:
    """Ledger.open on a damaged file: PolicyError naming the file, or the very grants the
    genuine file holds (a damaged ledger never grants anything it did not)."""
    _, genuine = ledger_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.json"
        path.write_bytes(data)
        try:
            ledger = Ledger.open(path, load_catalogue(), "site-7f3a", T0 + timedelta(days=1),
                                 sign=_LEDGER_KEY.sign, verify=_verify)
        except PolicyError as exc:
            _error_is_clear(exc)
            return
        try:
            if data:  # an empty file is a new ledger at the factory defaults
                assert _grant_view(ledger) == genuine
        finally:
            ledger.close()


BYTE_EDITS = st.lists(st.tuples(st.integers(0, 2**20), st.sampled_from(["flip", "cut", "put"]),
                                st.binary(min_size=1, max_size=8)), min_size=1, max_size=3)


def mutate_bytes(data: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    out = bytearray(data)
    for pos, action, blob in edits:
        at = pos % (len(out) + 1)
        if action == "flip" and out:
            out[at % len(out)] ^= blob[0] or 1
        elif action == "cut":
            del out[at:at + len(blob)]
        else:
            out[at:at] = blob
    return bytes(out)


# --- envelopes at the receiver -----------------------------------------------------------------

SITE = "s-fuzz"
_DEVICE = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
_RECIPIENT = keys.recipient_private_from_raw(keys.KEM_X25519, bytes(range(32, 64)))
POINTS = st.sampled_from(["pv.power", "pv.energy", "grid.power", "grid.energy_import",
                          "battery.soc", "load.power", "device.serial", "inverter.state",
                          "household.name", "x"])
TIERS = st.sampled_from(["events", "raw", "1min", "30min", "1d", "1mo", "weird"])
PURPOSES = st.sampled_from(["service", "improvement", "research", "marketing",
                            "maintenance_watch", "nope"])
KINDS = st.sampled_from(["data", "consent", "deletion", "event"])
WINDOWS = st.sampled_from([None, 60, 1800, 86400, 30 * 86400, 7])


@cache
def rules() -> CatalogueRules:
    return CatalogueRules()


def seal_for_fuzz(*, purpose: str, tier: str, kind: str, window: int | None,
                  records: list[dict[str, Any]], seq: int) -> bytes:
    """A genuinely signed envelope with whatever header and body the fuzzer chose, sealed from
    raw bytes: the header may break rules that :class:`envelope.Header` enforces on a sender
    (a tier its kind does not allow, a window a notice must not have), which a receiver must
    refuse."""
    from tests.support.fuzz_json import seal_raw

    header = {
        "v": 1, "site": SITE, "purpose": purpose, "tier": tier, "kind": kind,
        "recipient_key": _RECIPIENT.key_id, "kem": keys.KEM_X25519,
        "device_key": keys.device_key_id(_DEVICE.public_key()), "catalogue": "fuzz",
        "consent_id": "c", "consent_hash": "ab" * 32, "seq": seq,
        "window_start": None if window is None else 1767225600,
        "window_end": None if window is None else 1767225600 + window, "created": 1,
        "content_type": envelope.CONTENT_TYPE, "compression": "zlib"}
    body = {"records": records} if kind == "data" else {"type": "consent_change"}
    return seal_raw(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(),
                    json.dumps(body, sort_keys=True).encode())


def make_receiver(db: Path) -> tuple[Receiver, StringIO]:
    out = StringIO()
    receiver = Receiver(device_keys={SITE: _DEVICE.public_key()},
                        recipient_keys={_RECIPIENT.key_id: _RECIPIENT}, rules=rules(),
                        replay=ReplayStore(db), output=out)
    return receiver, out


def check_receiver(genuine: bytes, mutated: bytes, topic: str) -> None:
    """Receiver.handle never raises; a mutated envelope is accepted only if it is byte for byte
    the genuine one, and then only if its content fits its purpose (checked independently)."""
    with tempfile.TemporaryDirectory() as tmp:
        receiver, out = make_receiver(Path(tmp) / "seen.db")
        try:
            verdict = receiver.handle(topic, mutated)
            if not verdict.accepted:
                assert verdict.reason
                return
            assert mutated == genuine, "a modified envelope was accepted"
            opened = envelope.open_envelope(mutated, device_keys=receiver.device_keys,
                                            recipient_keys=receiver.recipient_keys)
            assert content_problem(opened.header, opened.body, rules()) is None
            for record in opened.body.get("records", []) if opened.header.kind == "data" else []:
                assert rules().allows(opened.header.purpose, record["point"])
            assert json.loads(out.getvalue())["header"]["seq"] == opened.header.seq
            assert not receiver.handle(topic, mutated).accepted, "a replay was accepted"
        finally:
            receiver.replay.close()
