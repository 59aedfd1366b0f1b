"""The command test vector in docs/wire-format.md §9.7 is byte-exact and verifies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.wire.commands import Command, CommandError, CommandType, encode, verify_command

DOC = Path(__file__).parents[3] / "docs" / "wire-format.md"
SEED = bytes(range(0x40, 0x60))
VECTOR_COMMAND = Command(
    id="0f1e2d3c4b5a69788796a5b4c3d2e1f0", site="site-0001", key="ops-2026a",
    type=CommandType.SUSPEND, issued=1767225600, expires=1767229200,
    args={"purpose": "improvement", "reference": "SR-0001"})


def vector() -> bytes:
    text = DOC.read_text(encoding="utf-8")
    marker = text.index("command test vector")
    block = re.search(r"```hex\n(.*?)```", text[marker:], re.S)
    assert block is not None, "docs/wire-format.md §9.7 has no ```hex block"
    return bytes.fromhex(block.group(1).replace("\n", ""))


def test_encoding_the_documented_command_gives_the_documented_bytes() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(SEED)
    assert encode(VECTOR_COMMAND, key) == vector()


def test_the_documented_bytes_verify_with_the_documented_public_key() -> None:
    text = DOC.read_text(encoding="utf-8")
    public_hex = re.search(r"public key `([0-9a-f]{64})`, pinned as id", text)
    assert public_hex is not None
    public = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex.group(1)))
    command = verify_command(vector(), keys={"ops-2026a": public}, site="site-0001",
                             now=1767225300)
    assert command == VECTOR_COMMAND
    assert vector()[9:9 + 197].decode("ascii") in text  # the body shown is the body signed


def test_the_documented_bytes_expire_when_the_doc_says() -> None:
    public = ed25519.Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    with pytest.raises(CommandError) as caught:
        verify_command(vector(), keys={"ops-2026a": public}, site="site-0001", now=1767229200)
    assert caught.value.reason == "expired"
