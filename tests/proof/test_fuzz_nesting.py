"""Fuzz proof: hostile JSON (deep nesting, huge numbers, long strings, repeated keys, wrong
types, truncation) at the command parser, the envelope header and body parsers, the receiver
and the catalogue parser; thousands of examples each. Properties in tests/support/fuzz_json.py.
"""

from __future__ import annotations

import pytest

from tests.support import fuzz_json as fj

pytestmark = [pytest.mark.proof, pytest.mark.timeout(900)]  # per target; about 1 min idle
_CASES = fj.cases(3000)

test_command_parser = _CASES["command"]
test_envelope_header_parser = _CASES["header"]
test_envelope_body_parser = _CASES["body"]
test_receiver_handles_hostile_json = _CASES["receiver"]
test_catalogue_update_parser = _CASES["catalogue"]
