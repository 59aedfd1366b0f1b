"""No growth: the real daemon's memory does not climb over two hours at ten devices.

``hems-agent run`` (a real subprocess) with ten simulated SunSpec inverters, each polled every
simulated second, a TLS mosquitto, the household page and metrics on, after a page login and a
consent change, runs two simulated hours on a clock ten times faster than real time (about 12
real minutes), sampled by bench/growth.py. The least-squares slope of its RSS against
simulated hours, after the first 10 simulated minutes, must be under 0.5 MB an hour; readings
must have flowed at one poll a simulated second (17 points an inverter), service windows must
have been sealed and published, and the outbox must end with nothing left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.growth import parser, run

pytestmark = [pytest.mark.proof, pytest.mark.mosquitto]


@pytest.mark.timeout(1800)
def test_rss_does_not_grow_over_two_simulated_hours(tmp_path: Path) -> None:
    args = parser().parse_args(["--hours", "2", "--speed", "10", "--devices", "10",
                                "--warmup-min", "10", "--out", str(tmp_path / "out"),
                                "--keep", str(tmp_path / "work")])
    summary = run(args)

    assert summary["sim_h"] >= 2.0
    assert summary["fit_samples"] >= 100, summary
    assert summary["slope_mb_per_h"] < 0.5, summary
    # The readings a home of ten inverters polled every second yields: 170 a simulated second.
    assert 0.9 <= summary["keeps_up"] <= 1.1, summary
    # Four 30-min windows ended (09:30 .. 11:00 simulated): sealed, published, acknowledged.
    assert summary["releases"] > 0, summary
    assert summary["published"] >= summary["releases"], summary
    assert summary["outbox_depth_last"] <= summary["outbox_depth_max"] < 100, summary
    assert (tmp_path / "out" / "growth.csv").exists()
    assert (tmp_path / "out" / "growth.svg").read_text(encoding="utf-8").startswith("<svg")
