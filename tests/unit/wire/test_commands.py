"""The command format: round trip and every reason a command is refused."""

from __future__ import annotations

import json
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.wire.commands import (
    MAX_COMMAND,
    MAX_LIFETIME,
    CommandError,
    CommandType,
    canonical,
    encode,
    new_command,
    parse,
    verify_command,
)

SITE = "site-0001"
NOW = 1_767_225_600.0
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KEYS = {"ops-a": KEY.public_key(), "ops-b": OTHER.public_key()}


def signed(**overrides: object) -> bytes:
    fields: dict[str, object] = {"site": SITE, "key": "ops-a", "type": "diagnostics",
                                 "args": {}, "now": NOW, "ttl": 600}
    fields.update(overrides)
    signer = fields.pop("signer", KEY)
    return encode(new_command(**fields), signer)  # type: ignore[arg-type]


def reason(payload: bytes, now: float = NOW + 1, site: str = SITE) -> str:
    with pytest.raises(CommandError) as caught:
        verify_command(payload, keys=KEYS, site=site, now=now)
    return caught.value.reason


def resign(body: dict[str, object], signer: ed25519.Ed25519PrivateKey = KEY) -> bytes:
    raw = canonical(body)
    head = b"HEMC" + struct.pack(">BI", 1, len(raw)) + raw
    return head + struct.pack(">H", 64) + signer.sign(head)


def body_of(payload: bytes) -> dict[str, object]:
    result: dict[str, object] = json.loads(parse(payload).signed[9:])
    return result


def test_round_trip_with_each_of_several_keys() -> None:
    for key_id, signer in (("ops-a", KEY), ("ops-b", OTHER)):
        payload = signed(key=key_id, signer=signer, type="suspend",
                         args={"purpose": "improvement", "reference": "SR-1"})
        command = verify_command(payload, keys=KEYS, site=SITE, now=NOW)
        assert command.type is CommandType.SUSPEND and command.key == key_id
        assert command.args == {"purpose": "improvement", "reference": "SR-1"}


def test_bad_signature() -> None:
    payload = bytearray(signed())
    payload[-1] ^= 1
    assert reason(bytes(payload)) == "bad_signature"


def test_signed_by_another_pinned_key_than_it_names() -> None:
    assert reason(signed(key="ops-a", signer=OTHER)) == "bad_signature"


def test_a_changed_body_breaks_the_signature() -> None:
    payload = signed(type="suspend", args={"purpose": "proposals", "reference": "SR-1"})
    tampered = payload.replace(b"proposals", b"improvmnt")
    assert reason(tampered) == "bad_signature"


def test_wrong_site() -> None:
    assert reason(signed(site="site-0002")) == "wrong_site"


def test_expired_at_the_expiry_instant() -> None:
    payload = signed(ttl=600)
    verify_command(payload, keys=KEYS, site=SITE, now=NOW + 599)
    assert reason(payload, now=NOW + 600) == "expired"


def test_issued_in_the_future_beyond_the_allowed_skew() -> None:
    assert reason(signed(now=NOW + 3600)) == "not_yet_valid"
    verify_command(signed(now=NOW + 200), keys=KEYS, site=SITE, now=NOW)


def test_unknown_key_id() -> None:
    assert reason(signed(key="ops-z")) == "unknown_key"


def test_oversized_is_refused_before_parsing() -> None:
    assert reason(b"HEMC" + b"\0" * MAX_COMMAND) == "oversized"


@pytest.mark.parametrize("payload", [
    b"", b"HEM", b"XXXX\x01\0\0\0\0", b"HEMC\x02\0\0\0\0\0\x40" + b"\0" * 64,
    b"HEMC\x01\xff\xff\xff\xff", b"HEMC\x01\0\0\0\x02{}\0\x40" + b"\0" * 63,
    b"HEMC\x01\0\0\0\x02{}\0\x40" + b"\0" * 65,
])
def test_malformed_layout(payload: bytes) -> None:
    assert reason(payload) == "malformed"


@pytest.mark.parametrize("change", [
    lambda b: b.pop("expires"),
    lambda b: b.update(extra=1),
    lambda b: b.update(v=2),
    lambda b: b.update(type="reboot"),
    lambda b: b.update(id="short"),
    lambda b: b.update(site="Site/+"),
    lambda b: b.update(issued="1767225600"),
    lambda b: b.update(expires=b["issued"]),
    lambda b: b.update(expires=b["issued"] + MAX_LIFETIME + 1),
    lambda b: b.update(args=[]),
    lambda b: b.update(args={"unexpected": 1}),
    lambda b: b.update(type="suspend", args={"purpose": "improvement"}),
    lambda b: b.update(type="grant_request", args={
        "purpose": "support", "recipient": "support_centre", "tier": "raw",
        "hours": 0, "reference": "SR-1"}),
    lambda b: b.update(type="export", args={"reference": "has spaces"}),
])
def test_malformed_body_even_when_signed(change: object) -> None:
    body = body_of(signed())
    change(body)  # type: ignore[operator]
    assert reason(resign(body)) == "malformed"


def test_body_that_is_not_json() -> None:
    raw = b"\xff not json"
    head = b"HEMC" + struct.pack(">BI", 1, len(raw)) + raw
    assert reason(head + struct.pack(">H", 64) + KEY.sign(head)) == "malformed"


def test_encoding_refuses_a_command_over_the_size_limit() -> None:
    big = {"catalogue": {"x": "a" * MAX_COMMAND}}
    with pytest.raises(CommandError, match="exceeds"):
        signed(type="catalogue_update", args=big)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_command_error(data: bytes) -> None:
    with pytest.raises(CommandError):
        verify_command(data, keys=KEYS, site=SITE, now=NOW)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=271), st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_refused(index: int, flip: int) -> None:
    payload = bytearray(signed(type="suspend", args={"purpose": "all", "reference": "R-1"}))
    payload[index % len(payload)] ^= flip
    with pytest.raises(CommandError):
        verify_command(bytes(payload), keys=KEYS, site=SITE, now=NOW + 1)
