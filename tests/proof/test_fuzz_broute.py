"""Fuzz proof: the SK line parsers and the B-route meter's line handling with many thousand
lines. Properties in tests/support/fuzz_broute.py."""

from __future__ import annotations

import pytest

from tests.support.fuzz_broute import cases

pytestmark = pytest.mark.proof
_CASES = cases(5000)

test_sk_lines_raise_only_driver_errors = _CASES["sk_lines"]
test_epandesc_fields_raise_only_driver_errors = _CASES["epandesc"]
test_meter_line_handler_never_raises = _CASES["meter_lines"]
test_only_the_meter_secured_is_heard = _CASES["meter_senders"]
test_meter_pushes_never_raise = _CASES["meter_pushes"]
