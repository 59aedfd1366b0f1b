"""doctor's read-only ledger check on a damaged ledger file: one failed check naming the file,
never a traceback (the file is read with the strict JSON reader)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from agent.host.check import Status
from agent.installer.doctor.state import ledger_check
from agent.paths import LEDGER_FILE


@pytest.mark.parametrize(("content", "why"), [
    (b"[" * 3000 + b"]" * 3000, "at most 64 are allowed"),
    (b'{"records": {}, "records": {}}', "'records' appears twice"),
    (b"{not json", "not valid JSON"),
])
def test_a_damaged_ledger_is_one_failed_check(tmp_path: Path, content: bytes, why: str) -> None:
    key = tmp_path / "device.key"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    key.chmod(0o600)
    (tmp_path / LEDGER_FILE).write_bytes(content)
    config = SimpleNamespace(state_dir=tmp_path, device_key_file=key)
    check = ledger_check(config)  # type: ignore[arg-type]
    assert check.status is Status.FAIL
    assert str(tmp_path / LEDGER_FILE) in check.detail and "unreadable" in check.detail
    assert why in check.detail
