"""Fuzz proof: Modbus response decoding (codec, SunSpec decoding, discovery + mapping + poll
over arbitrary register maps) and register profiles. Properties in tests/support/fuzz.py."""

from __future__ import annotations

import pytest

from tests.support.fuzz_cases import cases

pytestmark = pytest.mark.proof
_CASES = cases(3000)

test_codec = _CASES["codec"]
test_sunspec_decode = _CASES["sunspec_decode"]
test_discovery_mapping_and_poll = _CASES["discovery"]
test_profile_edits = _CASES["profile_edits"]
test_profile_random_json = _CASES["profile_random"]
