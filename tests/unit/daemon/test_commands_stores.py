"""The pieces around the command format: seen ids, the stored catalogue, the token bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ValidationError

from agent.config.model import AgentConfig
from agent.daemon.downlink import TokenBucket, load_operator_keys
from agent.daemon.seen_ids import SeenIds
from agent.errors import KeyFileError
from agent.store.catalogue import (
    CATALOGUE_FILE,
    is_newer,
    newest_catalogue,
    store_catalogue,
    version_key,
)
from agent.wire.keys import device_public_pem
from policy.catalogue import load_catalogue, parse_catalogue


def test_seen_ids_refuse_a_replay_across_reopening(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path / "ids.sqlite")
    assert seen.add("command-0001", expires=100)
    assert not seen.add("command-0001", expires=100)
    seen.close()
    again = SeenIds(tmp_path / "ids.sqlite")
    assert not again.add("command-0001", expires=100)
    again.close()


def test_seen_ids_are_forgotten_only_after_their_expiry(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path / "ids.sqlite")
    seen.add("command-0001", expires=100)
    seen.add("command-0002", expires=200)
    assert seen.prune(100) == 0
    assert seen.prune(150) == 1
    assert len(seen) == 1
    seen.close()


def test_token_bucket_allows_a_burst_then_the_refill_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(3, 0.5, lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 1.0  # half a token per second: not yet
    assert not bucket.take()
    now[0] += 1.0
    assert bucket.take()
    now[0] += 1000.0  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(("a", "b"), [("2026.1", "2026.2"), ("2026.9", "2026.10"),
                                      ("2026", "2026.0"), ("2026.1", "2027.1")])
def test_versions_order_numerically(a: str, b: str) -> None:
    assert version_key(a) < version_key(b)


@pytest.mark.parametrize("bad", ["", "2026.x", "v2026", "2026..1", "1.2.3.4.5.6.7"])
def test_versions_that_are_not_numbers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="dot-separated"):
        version_key(bad)


def _version(version: str) -> bytes:
    spec = json.loads(load_catalogue().canonical_json())
    spec["version"] = version
    return json.dumps(spec).encode()


def test_the_stored_catalogue_wins_at_start_up_only_while_newer(tmp_path: Path) -> None:
    factory = load_catalogue()
    assert newest_catalogue(factory, tmp_path) is factory
    store_catalogue(tmp_path, _version("2026.2"))
    assert newest_catalogue(factory, tmp_path).version == "2026.2"
    configured = parse_catalogue(_version("2027.1"))
    assert newest_catalogue(configured, tmp_path) is configured
    assert is_newer(configured, factory) and not is_newer(factory, factory)


def test_a_damaged_stored_catalogue_is_ignored(tmp_path: Path) -> None:
    (tmp_path / CATALOGUE_FILE).write_text("{broken", encoding="utf-8")
    factory = load_catalogue()
    assert newest_catalogue(factory, tmp_path) is factory


def _config(tmp_path: Path, entries: list[tuple[str, Path]]) -> AgentConfig:
    keys = [{"id": key_id, "key_file": str(path)} for key_id, path in entries]
    return AgentConfig.model_validate({
        "site_id": "site-0001", "device_key_file": str(tmp_path / "device.key"),
        "broker": {"url": "mqtts://127.0.0.1:8883", "ca_file": str(tmp_path / "ca.pem")},
        "recipients": [{"id": "company", "key_file": str(tmp_path / "company.pub")}],
        "operator_keys": keys})


def test_operator_keys_load_by_id(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "a.pub").write_bytes(device_public_pem(key.public_key()))
    (tmp_path / "b.pub").write_bytes(key.public_key().public_bytes_raw())
    keys = load_operator_keys(_config(tmp_path, [("ops-a", tmp_path / "a.pub"),
                                                 ("ops-b", tmp_path / "b.pub")]))
    assert sorted(keys) == ["ops-a", "ops-b"]


def test_operator_key_problems_name_the_file_or_the_id(tmp_path: Path) -> None:
    (tmp_path / "bad.pub").write_text("not a key", encoding="utf-8")
    with pytest.raises(KeyFileError, match=r"missing\.pub: cannot read operator key"):
        load_operator_keys(_config(tmp_path, [("ops-a", tmp_path / "missing.pub")]))
    with pytest.raises(KeyFileError, match=r"bad\.pub: not an Ed25519 public key"):
        load_operator_keys(_config(tmp_path, [("ops-a", tmp_path / "bad.pub")]))
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "a.pub").write_bytes(device_public_pem(key.public_key()))
    # A repeated id is refused when the configuration is validated, before any key is read.
    with pytest.raises(ValidationError, match="operator_keys: 'ops-a' appears twice"):
        _config(tmp_path, [("ops-a", tmp_path / "a.pub")] * 2)
