"""Fuzz proof: the files the daemon reads at start-up (configuration, purpose catalogue,
consent ledger). Properties in tests/support/fuzz.py."""

from __future__ import annotations

import pytest

from tests.support.fuzz_cases import cases

pytestmark = pytest.mark.proof
_CASES = cases(2000)

test_config_edits = _CASES["config_edits"]
test_config_random_text = _CASES["config_text"]
test_catalogue_edits = _CASES["catalogue_edits"]
test_catalogue_random = _CASES["catalogue_random"]
test_ledger_damaged_file = _CASES["ledger"]
