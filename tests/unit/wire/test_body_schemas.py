"""The body schemas load, cover every kind, and the validator checks what they say."""

from __future__ import annotations

from typing import Any

import pytest

from agent.wire import schemas
from agent.wire.topics import KINDS
from tests.support.bodies import consent_body, deletion_body, event_body


def test_every_kind_has_a_schema_using_only_checked_keywords() -> None:
    assert set(schemas.KINDS) == KINDS
    for kind in KINDS:
        assert schemas.schema(kind)["$schema"].endswith("2020-12/schema")


def test_a_keyword_the_validator_does_not_check_is_refused() -> None:
    with pytest.raises(schemas.SchemaError, match=r"unsupported keywords \['uniqueItems'\]"):
        schemas._check_keywords({"properties": {"a": {"uniqueItems": True}}}, "x")


@pytest.mark.parametrize(("kind", "body", "problem"), [
    ("consent", consent_body(), None),
    ("consent", {**consent_body(), "seq": True}, "/seq: expected integer, got boolean"),
    ("consent", {**consent_body(), "seq": -1}, "/seq: below 0"),
    ("consent", {**consent_body(), "v": 2}, "/v: must be 1"),
    ("consent", {**consent_body(), "tier": "off"}, "/tier: not one of"),
    ("consent", {**consent_body(), "timestamp": "2026-01-02"}, "/timestamp: not an ISO 8601"),
    ("consent", {**consent_body(), "timestamp": "2026-01-02T03:04+00:00"}, "/timestamp: not"),
    ("consent", {**consent_body(), "timestamp": "2026-13-02T03:04:05Z"}, "/timestamp: not"),
    ("consent", {**consent_body(), "timestamp": "2026-01-02T03:04:05.5Z"}, None),
    ("consent", {**consent_body(), "record_hash": "ab" * 32 + "\n"}, "/record_hash: does not"),
    ("consent", {**consent_body(), "record_hash": "sha256:" + "ab" * 32},
     "/record_hash: does not match"),
    ("deletion", deletion_body(), None),
    ("deletion", {**deletion_body(), "ledger_head": {"count": 1}},
     "/ledger_head: missing ['hash']"),
    ("event", event_body(), None),
    ("event", {"type": "uplink_test", "events": [{"point": "a", "value": "b"}]}, None),
    ("event", [], "fits none of its forms"),
])
def test_validator(kind: str, body: Any, problem: str | None) -> None:
    found = schemas.body_problem(kind, body)
    assert found == problem if problem is None else problem in (found or "")


def test_raw_samples_are_time_value_pairs() -> None:
    record = {"device": "d", "point": "grid.power", "kind": "power", "unit": "W",
              "values": {}, "coverage": 1.0, "good": 1, "bad": 0,
              "samples": [["2026-01-01T00:00:05+00:00", 512.5]]}
    body = {"purpose": "support", "recipient": "support_centre", "tier": "raw",
            "start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:01:00+00:00",
            "records": [record], "missing": [["meter", "grid.energy_import"]],
            "consent_record_id": "r", "consent_record_hash": "ab" * 32,
            "catalogue_version": "2026.1"}
    assert schemas.body_problem("data", body) is None
    record["samples"] = [[512.5, "2026-01-01T00:00:05+00:00"]]
    assert "/records/0/samples/0/0: expected string" in (schemas.body_problem("data", body) or "")
    record["samples"] = [["2026-01-01T00:00:05+00:00", 1, 2]]
    assert "3 items" in (schemas.body_problem("data", body) or "")
