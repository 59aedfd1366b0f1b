"""The unit file is hardened: systemd-analyze rates its exposure at or below 2.0 ("OK")."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import require_binary

UNIT = Path(__file__).resolve().parents[3] / "systemd" / "hems-agent.service"


def _exposure(unit: Path) -> float:
    tool = require_binary("systemd-analyze", "systemd")
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_unit_is_rated_ok() -> None:
    assert _exposure(UNIT) <= 2.0


def test_a_weakened_unit_rates_worse(tmp_path: Path) -> None:
    lines = [
        line for line in UNIT.read_text(encoding="utf-8").splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability",
                                "NoNewPrivileges", "MemoryDeny", "Lock", "UMask"))
    ]
    weak = tmp_path / "hems-agent.service"
    weak.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _exposure(weak) > 2.0


def test_unit_runs_the_daemon_with_notify_and_watchdog() -> None:
    text = UNIT.read_text(encoding="utf-8")
    for setting in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=",
                    "ConfigurationDirectory=", "SupplementaryGroups=dialout"):
        assert setting in text


def test_unit_sets_the_open_files_limit_above_the_pages_connections() -> None:
    from agent.web.connections import RESERVED_DESCRIPTORS, PageLimits, connection_budget

    found = re.search(r"^LimitNOFILE=(\d+)$", UNIT.read_text(encoding="utf-8"), re.MULTILINE)
    assert found, "the unit sets no LimitNOFILE: systemd's default soft limit is 1024"
    limit = int(found.group(1))
    pages = connection_budget(PageLimits(), limit)
    assert pages == PageLimits().max_connections  # the page's full bound fits
    assert limit - pages >= RESERVED_DESCRIPTORS
