"""Any flipped bit anywhere in an envelope is rejected: every bit position is tried."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.errors import EnvelopeError
from agent.wire import envelope as env
from agent.wire import keys

_SEED = bytes(range(32))


def test_every_single_bit_flip_is_rejected() -> None:
    device = ed25519.Ed25519PrivateKey.from_private_bytes(_SEED)
    recipient = keys.recipient_private_from_raw(keys.KEM_X25519, bytes(range(32, 64)))
    header = env.Header(
        site="s1", purpose="service", tier="1d", kind="data",
        recipient_key=recipient.key_id, device_key=keys.device_key_id(device.public_key()),
        catalogue="1", consent_id="c", consent_hash="ab" * 32, seq=1,
        window_start=0, window_end=86400, created=1,
    )
    data = env.seal(header, {"records": [{"point": "pv.energy", "delta": 1}]},
                    recipient=recipient.public, device_key=device)
    device_keys = {"s1": device.public_key()}
    recipient_keys = {recipient.key_id: recipient}
    assert env.open_envelope(data, device_keys=device_keys, recipient_keys=recipient_keys)
    accepted = []
    for bit in range(len(data) * 8):
        tampered = bytearray(data)
        tampered[bit // 8] ^= 1 << (bit % 8)
        try:
            env.open_envelope(bytes(tampered), device_keys=device_keys,
                              recipient_keys=recipient_keys)
        except EnvelopeError:
            continue
        accepted.append(bit)
    assert accepted == [], f"bit flips accepted at {accepted[:10]} of {len(data) * 8}"
