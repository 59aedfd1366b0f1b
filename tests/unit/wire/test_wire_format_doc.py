"""docs/wire-format.md's own vectors open with the real code: the page cannot drift from it.

Each vector is a set of fenced blocks, each after a ``<!-- wire-vector NAME PART -->`` marker
(PART: keys, header, body, envelope). The envelope must verify and open to the body, with the
header exactly as shown, the keys as listed, the body fitting its schema, the figures the prose
quotes matching, and a strict receiver accepting it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore
from agent.wire import envelope as env
from agent.wire import keys, schemas
from agent.wire.topics import topic_for

DOC = Path(__file__).resolve().parents[3] / "docs" / "wire-format.md"
_BLOCK = re.compile(r"<!-- wire-vector (\S+) (keys|header|body|envelope) -->\n```\w*\n(.*?)```",
                    re.S)


def _vectors() -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for name, part, text in _BLOCK.findall(DOC.read_text(encoding="utf-8")):
        assert part not in found.setdefault(name, {}), f"{name} has two {part} blocks"
        found[name][part] = text.strip("\n")
    return found


VECTORS = _vectors()


def test_the_page_has_both_vectors_complete() -> None:
    assert sorted(VECTORS) == ["mlkem768x25519-consent", "x25519-data"]
    assert all(set(parts) == {"keys", "header", "body", "envelope"} for parts in VECTORS.values())


def _keys(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines())
    return {k.strip(): v.strip() for k, v in pairs}


def _open(name: str) -> tuple[bytes, env.Opened, ed25519.Ed25519PrivateKey,
                              keys.RecipientPrivateKey]:
    parts = VECTORS[name]
    listed = _keys(parts["keys"])
    device = ed25519.Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex(listed["device_private_seed"]))
    recipient = keys.recipient_private_from_raw(listed["recipient_kem"],
                                                bytes.fromhex(listed["recipient_private"]))
    assert device.public_key().public_bytes_raw().hex() == listed["device_public"]
    assert keys.device_key_id(device.public_key()) == listed["device_key_id"]
    assert recipient.key_id == listed["recipient_key_id"]
    if "recipient_public" in listed:
        assert recipient.public.raw.hex() == listed["recipient_public"]
    else:
        assert hashlib.sha256(recipient.public.raw).hexdigest() == listed[
            "recipient_public_sha256"]
    data = bytes.fromhex(parts["envelope"].replace("\n", ""))
    opened = env.open_envelope(data, device_keys={opened_site(data): device.public_key()},
                               recipient_keys={recipient.key_id: recipient})
    return data, opened, device, recipient


def opened_site(data: bytes) -> str:
    return env.parse(data).header.site


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_opens_to_its_body_under_its_keys(name: str) -> None:
    data, opened, _, recipient = _open(name)
    parsed = env.parse(data)
    assert parsed.header_bytes.decode("ascii") == VECTORS[name]["header"]
    assert opened.body == json.loads(VECTORS[name]["body"])
    assert opened.header.kem == recipient.kem
    assert schemas.body_problem(opened.header.kind, opened.body) is None
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    assert f"the {len(data)} bytes are" in text  # the figures the prose quotes
    assert f"`header_len` = `{len(parsed.header_bytes):08x}`" in text
    assert f"`ct_len` = `{len(parsed.ct):08x}` ({len(parsed.ct)})" in text


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_a_strict_receiver_accepts_the_vector(name: str, tmp_path: Path) -> None:
    data, opened, device, recipient = _open(name)
    h = opened.header
    receiver = Receiver(device_keys={h.site: device.public_key()},
                        recipient_keys={recipient.key_id: recipient}, rules=CatalogueRules(),
                        replay=ReplayStore(tmp_path / "seen.db"), output=io.StringIO())
    verdict = receiver.handle(topic_for(h.site, h.purpose, h.kind), data)
    assert verdict.accepted, verdict.reason


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_sealing_the_vector_inputs_is_structurally_identical(name: str) -> None:
    data, opened, device, recipient = _open(name)
    sealed = env.seal(opened.header, opened.body, recipient=recipient.public, device_key=device)
    prefix = 9 + len(opened.header.to_bytes()) + 2
    assert len(sealed) == len(data)
    assert sealed[:prefix] == data[:prefix]
    assert sealed != data  # a fresh ephemeral key every time
    again = env.open_envelope(sealed, device_keys={opened.header.site: device.public_key()},
                              recipient_keys={recipient.key_id: recipient})
    assert again.body == opened.body


def test_the_header_section_lists_every_value_the_code_allows() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("| `kind` | what it carries |"):text.index("`purpose` is `service`")]
    for kind, tiers in env.KIND_TIERS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{kind}` |"))
        assert all(f"`{tier}`" in row for tier in tiers), (kind, tiers)
    for kind in schemas.KINDS:
        assert f"(../agent/wire/schemas/{kind}.schema.json)" in text
