"""``hems-agent demo --readings-only`` end to end: simulators, discovery, polling, the table."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli

HEMS_AGENT = Path(sys.executable).parent / "hems-agent"
NUMBER = r"-?[\d,]+(?:\.\d+)?"


def _values(output: str, point: str) -> list[float]:
    """Every numeric value printed for ``point`` (one per refresh)."""
    pattern = re.compile(rf"^\s+{re.escape(point)}\s+({NUMBER})\s", re.MULTILINE)
    return [float(m.replace(",", "")) for m in pattern.findall(output)]


def test_demo_runs_for_its_duration_and_prints_readings() -> None:
    assert HEMS_AGENT.exists(), "the package is not installed in this environment"
    done = subprocess.run([str(HEMS_AGENT), "demo", "--readings-only", "--duration", "5",
                           "--speed", "60"],
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for point in ("pv.power", "grid.power", "battery.power", "pv.energy"):
        assert _values(out, point), f"no value for {point}\n{out}"
    soc = _values(out, "battery.soc")
    assert soc and all(0 <= v <= 100 for v in soc)
    energy = _values(out, "grid.energy_import")
    assert energy == sorted(energy)  # counters never go back
    assert "demo stopped" in out
    assert "Traceback" not in done.stderr


def test_ctrl_c_stops_cleanly_with_status_zero() -> None:
    proc = subprocess.Popen([str(HEMS_AGENT), "demo", "--readings-only", "--speed", "120",
                             "--refresh", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # wait for the first table: everything is up by then
            seen.append(line)
            if line.strip().startswith("battery.state"):
                break
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert _values("".join(seen), "pv.power")
    assert "demo stopped" in rest
    assert "Traceback" not in err


@pytest.mark.parametrize(("option", "value"), [("--speed", "0"), ("--duration", "-1"),
                                               ("--start", "yesterday")])
def test_bad_option_is_named(option: str, value: str, capsys: pytest.CaptureFixture[str]
                             ) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", option, value])
    assert exited.value.code == 2
    assert option in capsys.readouterr().err
