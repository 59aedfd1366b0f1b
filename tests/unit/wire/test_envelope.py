"""Envelope: round trip, limits, and every rejection reason names what is wrong."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.errors import EnvelopeError, KeyFileError
from agent.wire import envelope as env
from agent.wire import keys

BODY = {"records": [{"point": "pv.power", "mean": 1234.5, "ts": 1767225600}]}


def make_header(recipient: keys.RecipientPublicKey, device: ed25519.Ed25519PrivateKey,
                **changes: object) -> env.Header:
    base = env.Header(
        site="s-0001", purpose="service", tier="30min", kind="data",
        recipient_key=recipient.key_id, kem=recipient.kem,
        device_key=keys.device_key_id(device.public_key()), catalogue="2026.1",
        consent_id="c-1", consent_hash="ab" * 32, seq=7,
        window_start=1767225600, window_end=1767227400, created=1767227401000,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(params=[keys.KEM_X25519, keys.KEM_HYBRID])
def recipient(request: pytest.FixtureRequest) -> keys.RecipientPrivateKey:
    return keys.generate_recipient_key(request.param)


@pytest.fixture
def device() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def seal(recipient: keys.RecipientPrivateKey, device: ed25519.Ed25519PrivateKey,
         body: dict[str, object] = BODY, **changes: object) -> bytes:
    header = make_header(recipient.public, device, **changes)
    return env.seal(header, body, recipient=recipient.public, device_key=device)


def open_(data: bytes, recipient: keys.RecipientPrivateKey,
          device: ed25519.Ed25519PrivateKey, **kw: object) -> env.Opened:
    return env.open_envelope(data, device_keys={"s-0001": device.public_key()},
                             recipient_keys={recipient.key_id: recipient}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_round_trip(recipient: keys.RecipientPrivateKey, device: ed25519.Ed25519PrivateKey,
                    compression: str) -> None:
    data = seal(recipient, device, compression=compression)
    opened = open_(data, recipient, device)
    assert opened.body == BODY
    assert opened.header == make_header(recipient.public, device, compression=compression)


def test_sealing_is_randomised_but_structurally_identical(
        recipient: keys.RecipientPrivateKey, device: ed25519.Ed25519PrivateKey) -> None:
    a, b = seal(recipient, device), seal(recipient, device)
    assert a != b and len(a) == len(b)
    pa, pb = env.parse(a), env.parse(b)
    assert pa.header_bytes == pb.header_bytes and len(pa.enc) == len(pb.enc)


def test_wrong_recipient_key_is_rejected(recipient: keys.RecipientPrivateKey,
                                         device: ed25519.Ed25519PrivateKey) -> None:
    data = seal(recipient, device)
    other = keys.generate_recipient_key(recipient.kem)
    with pytest.raises(EnvelopeError, match="wrong recipient"):
        env.open_envelope(data, device_keys={"s-0001": device.public_key()},
                          recipient_keys={other.key_id: other})


def test_other_key_under_the_same_id_fails_decryption(device: ed25519.Ed25519PrivateKey) -> None:
    recipient = keys.generate_recipient_key()
    data = seal(recipient, device)
    impostor = keys.generate_recipient_key()
    with pytest.raises(EnvelopeError, match="decryption failed"):
        env.open_envelope(data, device_keys={"s-0001": device.public_key()},
                          recipient_keys={recipient.key_id: impostor})


def test_unknown_device_is_rejected(recipient: keys.RecipientPrivateKey,
                                    device: ed25519.Ed25519PrivateKey) -> None:
    data = seal(recipient, device)
    with pytest.raises(EnvelopeError, match="unknown device: no key"):
        env.open_envelope(data, device_keys={}, recipient_keys={recipient.key_id: recipient})
    stranger = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(EnvelopeError, match="unknown device: device_key"):
        env.open_envelope(data, device_keys={"s-0001": stranger},
                          recipient_keys={recipient.key_id: recipient})


def test_signature_by_another_device_with_forged_key_id_is_rejected(
        recipient: keys.RecipientPrivateKey, device: ed25519.Ed25519PrivateKey) -> None:
    # A second gateway claims this site's device key id but signs with its own key.
    data = bytearray(seal(recipient, device))
    other = ed25519.Ed25519PrivateKey.generate()
    data[-64:] = other.sign(bytes(data[:-66]))
    with pytest.raises(EnvelopeError, match="bad signature"):
        open_(bytes(data), recipient, device)


@pytest.mark.parametrize("cut", [0, 3, 4, 5, 8, 9, 40, -67, -66, -65, -1])
def test_truncated_input_names_the_part(recipient: keys.RecipientPrivateKey,
                                        device: ed25519.Ed25519PrivateKey, cut: int) -> None:
    data = seal(recipient, device)
    with pytest.raises(EnvelopeError, match=r"truncated|not a HEMS|magic"):
        open_(data[:cut], recipient, device)


def test_trailing_bytes_are_rejected(recipient: keys.RecipientPrivateKey,
                                     device: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(EnvelopeError, match="unexpected bytes after the signature"):
        open_(seal(recipient, device) + b"\0", recipient, device)


def test_oversize_input_is_rejected_before_parsing(recipient: keys.RecipientPrivateKey,
                                                   device: ed25519.Ed25519PrivateKey) -> None:
    data = seal(recipient, device)
    with pytest.raises(EnvelopeError, match="exceeds"):
        open_(data, recipient, device, limits=env.Limits(max_envelope=len(data) - 1))


def test_oversize_header_length_is_rejected_before_reading_it() -> None:
    data = env.MAGIC + struct.pack(">BI", 1, 10_000_000) + b"{}"
    with pytest.raises(EnvelopeError, match="header length 10000000 exceeds"):
        env.parse(data)


def test_sealing_refuses_an_oversize_envelope(device: ed25519.Ed25519PrivateKey) -> None:
    recipient = keys.generate_recipient_key()
    big = {"records": [{"point": "pv.power", "noise": i * 7919} for i in range(5000)]}
    with pytest.raises(EnvelopeError, match=r"envelope of .* bytes exceeds 2000"):
        env.seal(make_header(recipient.public, device), big, recipient=recipient.public,
                 device_key=device, limits=env.Limits(max_envelope=2000))


def test_decompression_bomb_is_refused(device: ed25519.Ed25519PrivateKey) -> None:
    recipient = keys.generate_recipient_key()
    data = seal(recipient, device, body={"records": [], "pad": "x" * 100_000})
    with pytest.raises(EnvelopeError, match="inflates beyond 1000"):
        open_(data, recipient, device, limits=env.Limits(max_plaintext=1000))


@pytest.mark.parametrize(("changes", "message"), [
    ({"site": "a/b"}, "site id"), ({"purpose": "#"}, "purpose"), ({"kind": "x"}, "kind"),
    ({"seq": -1}, "seq"), ({"kem": "rsa"}, "kem"), ({"window_end": None}, "both"),
    ({"window_end": 1767225600}, "not after"), ({"recipient_key": "zz"}, "key id"),
    ({"seq": "1"}, "'seq' has type str"), ({"v": 2}, "version 2"),
])
def test_bad_header_values_are_named(device: ed25519.Ed25519PrivateKey, changes: dict[str, object],
                                     message: str) -> None:
    recipient = keys.generate_recipient_key()
    with pytest.raises(EnvelopeError, match=message):
        make_header(recipient.public, device, **changes)


def test_header_must_match_the_keys(device: ed25519.Ed25519PrivateKey) -> None:
    recipient, other = keys.generate_recipient_key(), keys.generate_recipient_key()
    header = make_header(other.public, device)
    with pytest.raises(EnvelopeError, match="recipient_key/kem do not match"):
        env.seal(header, BODY, recipient=recipient.public, device_key=device)


def test_header_with_unknown_fields_is_rejected() -> None:
    with pytest.raises(EnvelopeError, match=r"unexpected \['extra'\]"):
        env.header_from_bytes(b'{"extra":1}')


def test_key_files_round_trip_and_demand_0600(tmp_path: Path) -> None:
    for kem in keys.KEMS:
        key = keys.generate_recipient_key(kem)
        priv, pub = tmp_path / f"{kem}.key", tmp_path / f"{kem}.pub"
        keys.write_private_file(priv, keys.recipient_private_pem(key))
        pub.write_bytes(keys.recipient_public_pem(key.public))
        assert keys.load_recipient_private(priv).raw == key.raw
        assert keys.load_recipient_public(pub).key_id == key.key_id
        priv.chmod(0o640)
        with pytest.raises(KeyFileError, match="chmod 600"):
            keys.load_recipient_private(priv)
    device_path = tmp_path / "device.key"
    first = keys.ensure_device_key(device_path)
    assert keys.ensure_device_key(device_path).private_bytes_raw() == first.private_bytes_raw()
    assert device_path.stat().st_mode & 0o777 == 0o600
