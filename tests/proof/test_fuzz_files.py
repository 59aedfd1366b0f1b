"""Fuzz proof: the files the daemon reads at start-up (configuration, purpose catalogue,
consent ledger). Properties in tests/support/fuzz.py."""

from __future__ import annotations

import json

import pytest

from tests.support import fuzz as f
from tests.support.fuzz_cases import cases

pytestmark = pytest.mark.proof
_CASES = cases(2000)

test_config_edits = _CASES["config_edits"]
test_config_random_text = _CASES["config_text"]
test_catalogue_edits = _CASES["catalogue_edits"]
test_catalogue_random = _CASES["catalogue_random"]
test_ledger_damaged_file = _CASES["ledger"]


def test_ledger_with_a_damaged_field_name_is_an_integrity_error() -> None:
    """Found by the fuzzer: one byte of a field name damaged in the stored catalogue (here
    ``content`` renamed) must give the ledger's own error, not a KeyError."""
    data = json.loads(f.ledger_bytes()[0])
    catalogue = data["catalogues"]["1"]
    catalogue["c\x00ntent"] = catalogue.pop("content")
    f.check_ledger(json.dumps(data).encode())


def test_ledger_with_a_damaged_document_id_is_an_integrity_error() -> None:
    """Found by the fuzzer: a flipped byte in a document id (TinyDB parses ids with int())
    must give the ledger's own error, not a ValueError."""
    data = json.loads(f.ledger_bytes()[0])
    data["catalogues"]["1q"] = data["catalogues"].pop("1")
    f.check_ledger(json.dumps(data).encode())
