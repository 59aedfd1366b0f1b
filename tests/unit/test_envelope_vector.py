"""The test vector in docs/wire-format.md opens, and sealing matches it structurally."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.wire import envelope as env
from agent.wire import keys

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
BODY = {"records": [{"delta": 512.0, "point": "pv.energy"},
                    {"mean": -830.5, "point": "grid.power"}]}


def _vector() -> bytes:
    block = re.search(r"```hex\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block is not None, "docs/wire-format.md has no ```hex block"
    return bytes.fromhex(block.group(1).replace("\n", ""))


def _keys() -> tuple[ed25519.Ed25519PrivateKey, keys.RecipientPrivateKey]:
    device = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    return device, keys.recipient_private_from_raw(keys.KEM_X25519, bytes(range(32, 64)))


def test_documented_vector_opens_to_the_documented_body() -> None:
    device, recipient = _keys()
    opened = env.open_envelope(_vector(), device_keys={"site-0001": device.public_key()},
                               recipient_keys={recipient.key_id: recipient})
    assert opened.body == BODY
    assert opened.header.seq == 42 and opened.header.purpose == "service"
    assert keys.device_key_id(device.public_key()) == "56475aa75463474c0285df5dbf2bcab7"
    assert recipient.key_id == "a0289810032eb417274eebc4a38e6899"


def test_sealing_the_vector_inputs_is_structurally_identical() -> None:
    device, recipient = _keys()
    vector = _vector()
    header = env.parse(vector).header
    sealed = env.seal(header, BODY, recipient=recipient.public, device_key=device)
    prefix = 9 + len(header.to_bytes()) + 2
    assert len(sealed) == len(vector)
    assert sealed[:prefix] == vector[:prefix]
    assert sealed != vector  # a fresh ephemeral key every time
    assert env.open_envelope(sealed, device_keys={"site-0001": device.public_key()},
                             recipient_keys={recipient.key_id: recipient}).body == BODY
