"""Fleet proof on PostgreSQL: 1,000 simulated gateways (own device key, own TLS connection,
per-site ACL) publish to one mosquitto; three ``hems-receiver --database`` processes share one
subscription group and store into the machine's PostgreSQL. Every envelope is stored exactly
once across the group (one ``seen_envelope`` and one ``release`` row per (site, seq), five
records each), and every member stores a share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("CI") != "true":  # under CI a missing extra is a failure, not a skip
    pytest.importorskip("psycopg", reason="the 'cloud' extra (psycopg) is not installed")

from bench.fleet_pg import run
from tests.support.postgres import fresh_database

pytestmark = [pytest.mark.proof, pytest.mark.mosquitto]
pg_url = pytest.fixture(fresh_database)  # skips (or fails under CI) without PostgreSQL


@pytest.mark.timeout(900)
def test_a_thousand_gateways_three_receivers_each_envelope_stored_once(
        tmp_path: Path, pg_url: str) -> None:
    result = run(tmp_path, n_sites=1000, receivers=3, per_site=4, split=2, rate=200.0)
    assert result["sent"] == 4000
    assert result["stored"] == result["distinct"] == result["releases"] == 4000
    assert result["rows_per_envelope"] == 7  # seen + release + five records
    assert all(n > 0 for n in result["per_receiver"]), result["per_receiver"]
    assert sum(result["per_receiver"]) == 4000
