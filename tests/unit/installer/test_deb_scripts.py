"""The Debian package's maintainer scripts and metadata, without installing anything (the real
install, upgrade and purge are in tests/proof/test_deb_package.py): every script parses as
POSIX sh and stops on errors, the unit waits for the file provision writes, and purge deletes
the household's data only when the operator says so."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent import cli
from agent.installer.provision import plan as provision

REPO = Path(__file__).resolve().parents[3]
DEBIAN = REPO / "packaging" / "debian"
SCRIPTS = ("postinst", "prerm", "postrm")
SH = shutil.which("dash") or shutil.which("sh") or "/bin/sh"


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_parses_and_stops_on_errors(name: str) -> None:
    text = (DEBIAN / name).read_text()
    assert text.startswith("#!/bin/sh\n")
    assert re.search(r"^set -e$", text, re.MULTILINE)
    assert subprocess.run([SH, "-n", str(DEBIAN / name)], check=False).returncode == 0
    assert re.search(r"^\s+\*\)\n.*unknown argument", text, re.MULTILINE)


def test_unit_starts_only_once_provisioned() -> None:
    unit = (REPO / "systemd" / "hems-agent.service").read_text()
    condition = re.search(r"^ConditionPathExists=(.+)$", unit, re.MULTILINE)
    assert condition is not None
    assert condition.group(1) == str(provision.DEFAULT_PATH)
    postinst = (DEBIAN / "postinst").read_text()
    assert f"CONFIG={provision.DEFAULT_PATH}\n" in postinst
    # ExecStart goes through the link postinst switches from one version to the next.
    assert re.search(r"^ExecStart=/opt/hems-agent/bin/hems-agent run ", unit, re.MULTILINE)
    assert 'mv -T "$APP/bin.new" "$APP/bin"' in postinst


def _purge(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """Run postrm purge with rm and deb-systemd-helper replaced by stubs that log their
    arguments: what would it delete?"""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls"
    for tool in ("rm", "deb-systemd-helper", "systemctl"):
        stub = stubs / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n')
        stub.chmod(0o755)
    done = subprocess.run([SH, str(DEBIAN / "postrm"), "purge"], capture_output=True, text=True,
                          env={"PATH": f"{stubs}:{os.environ['PATH']}", **env}, check=False)
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines()


def test_purge_keeps_household_data_unless_confirmed(tmp_path: Path) -> None:
    calls = _purge(tmp_path, {})
    assert "rm -rf /opt/hems-agent" in calls
    assert not [c for c in calls if "/var/lib/hems-agent" in c or "/etc/hems-agent" in c]


def test_purge_deletes_household_data_when_confirmed(tmp_path: Path) -> None:
    calls = _purge(tmp_path, {"HEMS_AGENT_PURGE_STATE": "yes"})
    assert "rm -rf /var/lib/hems-agent /etc/hems-agent" in calls


def test_control_names_what_postinst_runs() -> None:
    control = (DEBIAN / "control.in").read_text()
    depends = re.search(r"^Depends: (.+)$", control, re.MULTILINE)
    assert depends is not None
    # postinst: python3 -m venv, adduser, deb-systemd-helper / deb-systemd-invoke.
    for package in ("python3 (>= 3.11)", "python3-venv", "adduser", "init-system-helpers"):
        assert package in depends.group(1)


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert re.fullmatch(r"hems-agent \S+\n", capsys.readouterr().out)
