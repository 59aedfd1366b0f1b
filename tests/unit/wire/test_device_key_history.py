"""After a key rotation, consent records signed by the retired key still verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.errors import KeyFileError
from agent.paths import ROTATED_KEYS_FILE
from agent.wire.keys import device_history_verifier, device_public_pem, retired_device_keys


def _retire(state: Path, *keys: ed25519.Ed25519PrivateKey) -> None:
    path = state / ROTATED_KEYS_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"keys": [
        {"key_id": "x", "public_key": device_public_pem(k.public_key()).decode()}
        for k in keys]}), encoding="utf-8")


def test_current_and_retired_keys_verify_a_stranger_does_not(tmp_path: Path) -> None:
    old, new, stranger = (ed25519.Ed25519PrivateKey.generate() for _ in range(3))
    _retire(tmp_path, old)
    verify = device_history_verifier(new.public_key(), retired_device_keys(tmp_path))
    message = b"record hash"
    assert verify(message, new.sign(message))
    assert verify(message, old.sign(message))
    assert not verify(message, stranger.sign(message))
    assert not verify(b"other", old.sign(message))


def test_no_rotation_means_no_retired_keys(tmp_path: Path) -> None:
    assert retired_device_keys(tmp_path) == []


def test_a_broken_rotation_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / ROTATED_KEYS_FILE
    path.parent.mkdir(parents=True)
    path.write_text('{"keys": [{"public_key": "not a key"}]}', encoding="utf-8")
    with pytest.raises(KeyFileError, match=r"rotated\.json"):
        retired_device_keys(tmp_path)
