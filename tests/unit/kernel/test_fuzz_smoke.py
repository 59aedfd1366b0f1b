"""Fuzz smoke run: every fuzz target of ``make proof`` with a few dozen fixed examples, so a
regression in error handling shows up in ``make test`` too (see tests/support/fuzz.py)."""

from __future__ import annotations

from tests.support.fuzz_cases import cases

_CASES = cases(25)

test_codec = _CASES["codec"]
test_sunspec_decode = _CASES["sunspec_decode"]
test_discovery_mapping_and_poll = _CASES["discovery"]
test_profile_edits = _CASES["profile_edits"]
test_profile_random_json = _CASES["profile_random"]
test_config_edits = _CASES["config_edits"]
test_config_random_text = _CASES["config_text"]
test_catalogue_edits = _CASES["catalogue_edits"]
test_catalogue_random = _CASES["catalogue_random"]
test_ledger_damaged_file = _CASES["ledger"]
test_receiver_mutated_envelopes = _CASES["receiver"]
