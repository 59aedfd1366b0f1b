"""The uplink envelope: compress, HPKE-encrypt to one recipient, sign with the device key.

Layout (all integers big-endian; docs/wire-format.md is the normative description)::

    magic "HEMS" | version u8 | header_len u32 | header | enc_len u16 | enc
    | ct_len u32 | ct | sig_len u16 | signature (Ed25519 over every byte before sig_len)

The header is canonical JSON (sorted keys, no spaces, ASCII). It travels in the clear, is the
HPKE ``info`` (the installed HPKE API has no AAD, and ``info`` binds it into the key schedule
just as well) and is covered by the signature. Decoders use the header bytes exactly as received.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.errors import EnvelopeError, TopicError
from agent.wire.keys import KEM_HYBRID, KEM_X25519, RecipientPrivateKey, RecipientPublicKey
from agent.wire.keys import device_key_id as _device_key_id
from agent.wire.topics import check_kind, check_segment
from policy import strict_json
from policy.strict_json import JSONRefused
from policy.tiers import OFF, ORDER

MAGIC = b"HEMS"
VERSION = 1
SIGNATURE_LEN = 64
CONTENT_TYPE = "application/json"
COMPRESSIONS = ("zlib", "none")
_KEY_ID = re.compile(r"[0-9a-f]{32}")
_SUITES = {
    KEM_X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
    KEM_HYBRID: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305
    ),
}
_ENC_LEN = {KEM_X25519: hpke.KEM.X25519.enc_length(),
            KEM_HYBRID: hpke.KEM.MLKEM768_X25519.enc_length()}
_MAX_SEQ = 2**63 - 1
_CONSENT_HASH = re.compile(r"[0-9a-f]{64}")
_DATA_TIERS = tuple(str(t) for t in ORDER)
#: The tiers each kind may carry in its header: data at a granted tier; a consent notice the
#: tier the record sets (``off`` when it withdraws); deletion requests and events ``events``.
KIND_TIERS: dict[str, tuple[str, ...]] = {
    "data": _DATA_TIERS, "consent": (*_DATA_TIERS, OFF), "deletion": ("events",),
    "event": ("events",),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size limits checked before anything is allocated or decrypted."""

    max_envelope: int = 1024 * 1024
    max_header: int = 4096
    # Guards against a decompression bomb from a compromised device key.
    max_plaintext: int = 16 * 1024 * 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """The clear header. Times are Unix seconds (``created`` in milliseconds), UTC.

    ``window_start``/``window_end`` are ``None`` for messages without a window (consent,
    deletion, events). ``seq`` is monotonic per site across restarts.
    """

    v: int = VERSION
    site: str
    purpose: str
    tier: str
    kind: str
    recipient_key: str
    device_key: str
    kem: str = KEM_X25519
    catalogue: str
    consent_id: str
    consent_hash: str
    seq: int
    window_start: int | None
    window_end: int | None
    created: int
    content_type: str = CONTENT_TYPE
    compression: str = "zlib"

    def __post_init__(self) -> None:
        _validate(self)

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes of the header."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True).encode("ascii")


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "v": (int,), "seq": (int,), "created": (int,),
    "window_start": (int, type(None)), "window_end": (int, type(None)),
}


def _validate(h: Header) -> None:
    for f in fields(h):
        value = getattr(h, f.name)
        allowed = _FIELD_TYPES.get(f.name, (str,))
        if type(value) not in allowed:
            raise EnvelopeError(f"header field {f.name!r} has type {type(value).__name__}")
    if h.v != VERSION:
        raise EnvelopeError(f"header version {_shown(h.v)} is not supported "
                            f"(expected {VERSION})")
    try:
        check_segment(h.site, "site id")
        check_segment(h.purpose, "purpose")
        check_segment(h.tier, "tier")
        check_kind(h.kind)
    except TopicError as exc:
        raise EnvelopeError(f"header: {_cut(str(exc))}") from exc
    for name in ("recipient_key", "device_key"):
        if _KEY_ID.fullmatch(getattr(h, name)) is None:
            raise EnvelopeError(f"header field {name!r} is not a 32-hex-digit key id")
    _validate_values(h)


def _validate_values(h: Header) -> None:
    if h.kem not in _SUITES:
        raise EnvelopeError(f"header kem {_shown(h.kem)} is not one of {sorted(_SUITES)}")
    if h.compression not in COMPRESSIONS or h.content_type != CONTENT_TYPE:
        raise EnvelopeError(f"header compression/content type {_shown(h.compression)}/"
                            f"{_shown(h.content_type)} is not supported")
    if not 0 <= h.seq <= _MAX_SEQ:
        raise EnvelopeError(f"header seq {_shown(h.seq)} is outside 0..2^63-1")
    if (h.window_start is None) != (h.window_end is None):
        raise EnvelopeError("header window_start and window_end must both be set or both null")
    if h.window_start is not None and h.window_end is not None and h.window_end <= h.window_start:
        raise EnvelopeError("header window_end is not after window_start")
    if (h.window_start is None) == (h.kind == "data"):
        raise EnvelopeError(f"header window: kind {h.kind} must have "
                            f"{'a window' if h.kind == 'data' else 'null windows'}")
    if h.tier not in KIND_TIERS[h.kind]:
        raise EnvelopeError(f"header tier/kind: tier {_shown(h.tier)} is not allowed with "
                            f"kind {h.kind} (expected one of {', '.join(KIND_TIERS[h.kind])})")
    if _CONSENT_HASH.fullmatch(h.consent_hash) is None:
        raise EnvelopeError("header consent_hash: not 64 lowercase hex digits (the consent "
                            "record's SHA-256, no prefix)")


def _shown(value: object) -> str:
    """``repr`` cut short: a refused header's values are the sender's choice, logged."""
    return _cut(repr(value))


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def header_from_bytes(raw: bytes) -> Header:
    """Parse and validate header bytes; raise EnvelopeError naming what is wrong."""
    try:
        obj = strict_json.loads(raw, encoding="ascii")
    except JSONRefused as exc:
        raise EnvelopeError(f"header refused ({exc.reason}): {exc}") from exc
    if not isinstance(obj, dict):
        raise EnvelopeError("header is not a JSON object")
    names = {f.name for f in fields(Header)}
    if set(obj) != names:
        missing, extra = sorted(names - set(obj)), sorted(set(obj) - names)
        raise EnvelopeError(f"header fields wrong: missing {missing}, "
                            f"unexpected {_shown(extra)}")
    try:
        return Header(**obj)
    except TypeError as exc:
        raise EnvelopeError(f"header is malformed: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Parsed:
    """An envelope split into its parts, nothing verified yet."""

    header: Header
    header_bytes: bytes
    enc: bytes
    ct: bytes
    signed: bytes
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Opened:
    """A verified, decrypted envelope."""

    header: Header
    body: dict[str, Any]


def seal(header: Header, body: Mapping[str, Any], *, recipient: RecipientPublicKey,
         device_key: ed25519.Ed25519PrivateKey, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Build the envelope carrying ``body`` (a JSON object) for ``recipient``.

    The header must name ``recipient``'s key id and KEM and ``device_key``'s key id.
    """
    _check_keys(header, recipient, device_key)
    header_bytes = header.to_bytes()
    if len(header_bytes) > limits.max_header:
        raise EnvelopeError(f"header of {len(header_bytes)} bytes exceeds {limits.max_header}")
    plaintext = json.dumps(body, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, allow_nan=False).encode("utf-8")
    if header.compression == "zlib":
        plaintext = zlib.compress(plaintext, 6)
    sealed = _SUITES[header.kem].encrypt(plaintext, recipient.key, header_bytes)
    enc_len = _ENC_LEN[header.kem]
    enc, ct = sealed[:enc_len], sealed[enc_len:]
    signed = b"".join((
        MAGIC, struct.pack(">BI", VERSION, len(header_bytes)), header_bytes,
        struct.pack(">H", len(enc)), enc, struct.pack(">I", len(ct)), ct,
    ))
    envelope = signed + struct.pack(">H", SIGNATURE_LEN) + device_key.sign(signed)
    if len(envelope) > limits.max_envelope:
        raise EnvelopeError(f"envelope of {len(envelope)} bytes exceeds {limits.max_envelope}")
    return envelope


def _check_keys(header: Header, recipient: RecipientPublicKey,
                device_key: ed25519.Ed25519PrivateKey) -> None:
    if header.recipient_key != recipient.key_id or header.kem != recipient.kem:
        raise EnvelopeError("header recipient_key/kem do not match the recipient key")
    if header.device_key != _device_key_id(device_key.public_key()):
        raise EnvelopeError("header device_key does not match the signing key")


class _Reader:
    """Bounds-checked reading of the length-prefixed layout."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise EnvelopeError(f"truncated envelope: {what} needs {n} bytes, "
                                f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def length(self, fmt: str, what: str, limit: int) -> int:
        raw = self.take(struct.calcsize(fmt), f"{what} length")
        (n,) = struct.unpack(fmt, raw)
        if n > limit:
            raise EnvelopeError(f"{what} length {n} exceeds the limit of {limit}")
        return int(n)


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Parsed:
    """Split an envelope into its parts, checking every length before it is used."""
    if len(data) > limits.max_envelope:
        raise EnvelopeError(f"envelope of {len(data)} bytes exceeds {limits.max_envelope}")
    r = _Reader(bytes(data))
    if r.take(4, "magic") != MAGIC:
        raise EnvelopeError("bad magic: not a HEMS envelope")
    version = r.take(1, "version")[0]
    if version != VERSION:
        raise EnvelopeError(f"envelope version {version} is not supported (expected {VERSION})")
    header_bytes = r.take(r.length(">I", "header", limits.max_header), "header")
    header = header_from_bytes(header_bytes)
    enc_len = r.length(">H", "enc", _ENC_LEN[header.kem])
    if enc_len != _ENC_LEN[header.kem]:
        raise EnvelopeError(f"enc length {enc_len} is wrong for kem {header.kem}")
    enc = r.take(enc_len, "enc")
    ct = r.take(r.length(">I", "ciphertext", limits.max_envelope), "ciphertext")
    signed_end = r.pos
    if r.length(">H", "signature", SIGNATURE_LEN) != SIGNATURE_LEN:
        raise EnvelopeError(f"signature length is not {SIGNATURE_LEN}")
    signature = r.take(SIGNATURE_LEN, "signature")
    if r.pos != len(r.data):
        raise EnvelopeError(f"{len(r.data) - r.pos} unexpected bytes after the signature")
    return Parsed(header=header, header_bytes=header_bytes, enc=enc, ct=ct,
                  signed=r.data[:signed_end], signature=signature)


def open_envelope(data: bytes, *, device_keys: Mapping[str, ed25519.Ed25519PublicKey],
                  recipient_keys: Mapping[str, RecipientPrivateKey],
                  limits: Limits = DEFAULT_LIMITS) -> Opened:
    """Verify and decrypt an envelope.

    ``device_keys`` maps site id -> registered device public key; ``recipient_keys`` maps key
    id -> private key. The signature is checked before anything is decrypted. Raises
    EnvelopeError naming the reason (truncated, oversize, unknown device, bad signature, not
    for this recipient, decryption failed, bad content). Replay is the caller's check.
    """
    p = parse(data, limits)
    verify(p, device_keys)
    key = recipient_keys.get(p.header.recipient_key)
    if key is None or key.kem != p.header.kem:
        raise EnvelopeError("wrong recipient: no private key for the envelope's recipient key id")
    try:
        plaintext = _SUITES[p.header.kem].decrypt(p.enc + p.ct, key.key, p.header_bytes)
    except InvalidTag as exc:
        raise EnvelopeError("decryption failed") from exc
    return Opened(header=p.header, body=_decode_body(p.header, plaintext, limits))


def verify(p: Parsed, device_keys: Mapping[str, ed25519.Ed25519PublicKey]) -> None:
    """Check the device signature of a parsed envelope against the site's registered key."""
    pub = device_keys.get(p.header.site)
    if pub is None:
        raise EnvelopeError("unknown device: no key registered for the envelope's site")
    if _device_key_id(pub) != p.header.device_key:
        raise EnvelopeError("unknown device: device_key is not the site's registered key")
    try:
        pub.verify(p.signature, p.signed)
    except InvalidSignature as exc:
        raise EnvelopeError("bad signature") from exc


def _decode_body(header: Header, plaintext: bytes, limits: Limits) -> dict[str, Any]:
    if header.compression == "zlib":
        inflater = zlib.decompressobj()
        try:
            plaintext = inflater.decompress(plaintext, limits.max_plaintext)
        except zlib.error as exc:
            raise EnvelopeError("body is not valid zlib data") from exc
        if inflater.unconsumed_tail or not inflater.eof:
            raise EnvelopeError(f"body is truncated or inflates beyond {limits.max_plaintext}")
    try:
        body = strict_json.loads(plaintext, encoding="utf-8")
    except JSONRefused as exc:
        raise EnvelopeError(f"body refused ({exc.reason}): {exc}") from exc
    if not isinstance(body, dict):
        raise EnvelopeError("body is not a JSON object")
    return body
