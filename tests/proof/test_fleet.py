"""Fleet proof: 1,000 simulated gateways (own device key, own TLS connection, per-site ACL)
publish to one mosquitto; two ``hems-receiver`` processes share one subscription group. Every
envelope is accepted exactly once across the group, by exactly one receiver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.fleet import accepted_lines, run

pytestmark = [pytest.mark.proof, pytest.mark.mosquitto]


@pytest.mark.timeout(600)
def test_a_thousand_gateways_two_receivers_each_envelope_once(tmp_path: Path) -> None:
    result = run(tmp_path, n_sites=1000, receivers=2, per_site=3)
    assert result["accepted"] == result["sent"] == 3000
    lines = [json.loads(line) for line in accepted_lines(tmp_path, 2)]
    seen = [(line["header"]["site"], line["header"]["seq"]) for line in lines]
    assert len(set(seen)) == len(seen) == 3000
    assert {site for site, _ in seen} == {f"s-{n:05d}" for n in range(1000)}
    per_receiver = [len((tmp_path / f"accepted-{n}.jsonl").read_text().splitlines())
                    for n in range(2)]
    assert all(count > 0 for count in per_receiver), per_receiver  # the group shares the load

