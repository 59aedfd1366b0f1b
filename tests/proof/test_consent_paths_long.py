"""The consent-paths state machine (tests/unit/daemon/test_consent_paths.py), long profile: 2,000
random sequences of 40 steps each. The short profile runs in ``make test``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.unit.daemon.test_consent_paths import STATS, ConsentPaths, run

LONG = settings(max_examples=2000, stateful_step_count=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.proof
@pytest.mark.timeout(1800)  # about 9 minutes here; the suite's default of 120 s is for tests
def test_only_the_household_widens_consent_long() -> None:
    assert run(ConsentPaths, LONG) > 0
    assert STATS["grants"] > 0
