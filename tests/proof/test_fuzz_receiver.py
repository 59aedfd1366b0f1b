"""Fuzz proof: envelopes at the receiver, genuine ones with any header and body the fuzzer
picks and byte-level mutations of them. Nothing modified, replayed or outside its purpose is
accepted. Properties in tests/support/fuzz.py."""

from __future__ import annotations

import pytest

from tests.support.fuzz_cases import cases

pytestmark = pytest.mark.proof

test_receiver_mutated_envelopes = cases(3000)["receiver"]
