"""Header rules a foreign decoder can rely on: the tiers each kind may carry, one consent-hash
form, windows only on data; repeated keys refused in header and body."""

from __future__ import annotations

import dataclasses
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.errors import EnvelopeError
from agent.wire import envelope as env
from agent.wire import keys
from tests.support import fuzz_json as fj

RECIPIENT = keys.generate_recipient_key()
DEVICE = ed25519.Ed25519PrivateKey.generate()


def header(**changes: object) -> env.Header:
    base = env.Header(
        site="s-0001", purpose="service", tier="off", kind="consent",
        recipient_key=RECIPIENT.key_id, kem=RECIPIENT.kem,
        device_key=keys.device_key_id(DEVICE.public_key()), catalogue="2026.1",
        consent_id="ledger-12", consent_hash="ab" * 32, seq=7, window_start=None,
        window_end=None, created=1767227401000)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "tier", "windowed"), [
    ("consent", "off", False), ("consent", "raw", False), ("consent", "events", False),
    ("data", "events", True), ("data", "1mo", True), ("deletion", "events", False),
    ("event", "events", False),
])
def test_each_kind_takes_its_tiers(kind: str, tier: str, windowed: bool) -> None:
    window = {"window_start": 1767225600, "window_end": 1767227400} if windowed else {}
    made = header(kind=kind, tier=tier, **window)
    assert env.header_from_bytes(made.to_bytes()) == made


@pytest.mark.parametrize(("kind", "tier"), [
    ("consent", "banana"), ("data", "off"), ("deletion", "30min"), ("event", "off"),
    ("event", "raw"),
])
def test_a_tier_its_kind_does_not_take_is_refused(kind: str, tier: str) -> None:
    window = {"window_start": 1767225600, "window_end": 1767227400} if kind == "data" else {}
    with pytest.raises(EnvelopeError, match=f"header tier/kind: tier '{tier}' is not allowed"):
        header(kind=kind, tier=tier, **window)


@pytest.mark.parametrize("value", ["sha256:" + "ab" * 32, "AB" * 32, "ab" * 31, "-", ""])
def test_consent_hash_has_one_form(value: str) -> None:
    with pytest.raises(EnvelopeError, match="consent_hash: not 64 lowercase hex"):
        header(consent_hash=value)


def test_windows_belong_to_data_only() -> None:
    with pytest.raises(EnvelopeError, match="kind consent must have null windows"):
        header(window_start=1767225600, window_end=1767227400)
    with pytest.raises(EnvelopeError, match="kind data must have a window"):
        header(kind="data", tier="30min")


def test_a_receiver_refuses_a_header_another_sender_built_with_a_wrong_tier() -> None:
    raw = json.loads(header().to_bytes())
    raw["tier"] = "banana"
    with pytest.raises(EnvelopeError, match="tier/kind"):
        env.parse(fj.seal_raw(json.dumps(raw, sort_keys=True).encode(), b"{}"))


def test_repeated_keys_are_refused_in_header_and_body() -> None:
    good = fj._header(kind="data").to_bytes()
    repeated = good[:-1] + b',"seq":2}'
    with pytest.raises(EnvelopeError, match=r"header refused \(duplicate_key\)"):
        env.parse(fj.seal_raw(repeated, b"{}"))
    sealed = fj.seal_raw(good, b'{"records":[],"records":[1]}')
    with pytest.raises(EnvelopeError, match=r"body refused \(duplicate_key\)"):
        env.open_envelope(sealed, device_keys={fj.SITE: fj._DEVICE.public_key()},
                          recipient_keys={fj._RECIPIENT.key_id: fj._RECIPIENT})
