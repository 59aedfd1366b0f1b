"""The Debian package, installed for real: `make deb`'s amd64 build with dpkg -i in a fresh
Debian 12 root (mmdebstrap, cached as build/deb-test/bookworm-amd64.tar), then an upgrade that
must keep the household's state, an upgrade the new version's `check-config` refuses (the old
version stays), removal (configuration and state stay) and purge (they go only with
HEMS_AGENT_PURGE_STATE=yes).

The root runs under `unshare` + `chroot` (a private /proc, /dev and /run): systemd-nspawn needs
a host booted with systemd, which this machine is not (see test_unit_under_systemd). With no
/run/systemd/system in the root, the maintainer scripts take their "no systemd running" path:
the unit is enabled (a symlink) but not started, as on an image being built.

Needs root, mmdebstrap, unshare and apt access to a Debian mirror (the first run only).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.wire import keys

pytestmark = [pytest.mark.proof, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "deb-test"
ROOT_TAR = CACHE / "bookworm-amd64.tar"
PY_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# Inside the root: a private /proc, /dev and an empty /run (no systemd running).
ENTER = ('root=$1; shift; mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" '
         '&& mount -t tmpfs tmpfs "$root/run" && exec chroot "$root" env -i '
         'PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"')


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (dpkg in a chroot)"
    for tool in ("mmdebstrap", "unshare", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install mmdebstrap util-linux dpkg)"
    return None


if (why := _missing()) is not None:
    pytestmark.append(pytest.mark.skip(reason=why))


def run(*cmd: str | Path, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def inside(root: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in the Debian root as its root user."""
    return run("unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", ENTER, "sh",
               root, *cmd, check=check)


def build(version: str, out: Path) -> Path:
    run(REPO / "packaging" / "build-deb.sh", "amd64", out, env=os.environ | {
        "DEB_VERSION": version})
    deb = out / f"hems-agent_{version}_amd64.deb"
    assert deb.is_file()
    return deb


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three builds of the tree: the installed version, an upgrade, and one more upgrade."""
    out = tmp_path_factory.mktemp("debs")
    return {v: build(f"{PY_VERSION}-{v}", out) for v in ("1", "2", "3")}


@pytest.fixture(scope="module")
def root_tar() -> Path:
    if not ROOT_TAR.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = ROOT_TAR.with_suffix(".partial.tar")
        run("mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,adduser,"
            "systemd,systemd-sysv,dbus,init-system-helpers",
            "--aptopt=Acquire::Check-Valid-Until \"false\"",
            "--aptopt=Acquire::Check-Date \"false\"",
            "bookworm", partial, "http://deb.debian.org/debian")
        partial.rename(ROOT_TAR)
    return ROOT_TAR


@pytest.fixture
def root(tmp_path: Path, root_tar: Path) -> Iterator[Path]:
    """A fresh Debian 12 root with the packages' inputs in /root/in."""
    directory = tmp_path / "root"
    directory.mkdir()
    with tarfile.open(root_tar) as tar:
        tar.extractall(directory, filter="fully_trusted")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def put_debs(root: Path, debs: dict[str, Path]) -> dict[str, str]:
    (root / "root" / "in").mkdir(parents=True, exist_ok=True)
    for deb in debs.values():
        shutil.copy(deb, root / "root" / "in" / deb.name)
    return {v: f"/root/in/{deb.name}" for v, deb in debs.items()}


def provision(root: Path) -> None:
    """`hems-agent provision` as an installer runs it: default paths, the service user as
    owner. The inputs (broker CA, password, company key) are made here, on the host."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    inputs = root / "root" / "in"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test broker CA")])
    import datetime as dt
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ca_key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    (inputs / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (inputs / "broker.password").write_text("pw\n")
    (inputs / "company.pub").write_bytes(
        keys.recipient_public_pem(keys.generate_recipient_key().public))
    # The inverter does not answer here: the report says FAIL for it (exit 3), all is written
    # (2 would be a refused input).
    done = inside(root, "hems-agent", "provision", "--site-id", "s-0001",
           "--broker-url", "mqtts://127.0.0.1:8883", "--broker-ca", "/root/in/ca.pem",
           "--broker-username", "s-0001", "--broker-password-file", "/root/in/broker.password",
           "--recipient", "company=/root/in/company.pub", "--web-listen", "127.0.0.1:8080",
           "--device", "inverter=127.0.0.1:15020/1", "--no-device-check",
           "--clock-check", "none", "--skip-uplink-test", "--non-interactive", "--yes",
           check=False)
    assert done.returncode != 2, done.stderr
    assert "report saved" in done.stdout


def state_digest(root: Path) -> dict[str, str]:
    state = root / "var" / "lib" / "hems-agent"
    return {str(p.relative_to(state)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(state.rglob("*")) if p.is_file()}


def venv_target(root: Path) -> str:
    return os.readlink(root / "opt" / "hems-agent" / "bin")


def test_install_provision_upgrade_remove_purge(root: Path, debs: dict[str, Path]) -> None:
    paths = put_debs(root, debs)
    inside(root, "dpkg", "-i", paths["1"])

    # What the package owns: user in dialout, directories with the unit's modes, the unit
    # enabled (not started: nothing is provisioned), the command on PATH.
    assert inside(root, "hems-agent", "--version").stdout.strip() == f"hems-agent {PY_VERSION}"
    groups = inside(root, "id", "-nG", "hems-agent").stdout.split()
    assert "dialout" in groups
    listing = inside(root, "stat", "-c", "%n %U %G %a", "/etc/hems-agent",
                     "/var/lib/hems-agent").stdout.splitlines()
    assert listing == ["/etc/hems-agent root hems-agent 750",
                       "/var/lib/hems-agent hems-agent hems-agent 700"]
    wants = root / "etc/systemd/system/multi-user.target.wants/hems-agent.service"
    assert os.readlink(wants) == "/lib/systemd/system/hems-agent.service"
    assert venv_target(root) == f"venvs/{PY_VERSION}-1/bin"
    # Installed from the package's wheels alone: pip saw no index (PIP_CONFIG_FILE=/dev/null).
    python = f"/opt/hems-agent/venvs/{PY_VERSION}-1/bin/python"  # bin/ is a link: the real path
    freeze = inside(root, python, "-m", "pip", "freeze").stdout
    assert f"hems-agent=={PY_VERSION}" in freeze and "amqtt" not in freeze

    provision(root)
    assert inside(root, "hems-agent", "check-config",
                  "/etc/hems-agent/agent.toml").returncode == 0
    # Reinstalling the same version is idempotent: the environment is kept, state untouched.
    before = state_digest(root)
    assert "consent-ledger.json" in before
    (root / "var/lib/hems-agent/outbox.sqlite").write_bytes(b"queued envelopes")
    (root / "var/lib/hems-agent/web-sessions.json").write_text("{}")
    before = state_digest(root)
    inside(root, "dpkg", "-i", paths["1"])
    assert state_digest(root) == before

    # Upgrade: the state stays, the new environment replaces the old one.
    upgrade = inside(root, "dpkg", "-i", paths["2"])
    assert "invalid configuration" not in upgrade.stderr
    assert state_digest(root) == before
    assert venv_target(root) == f"venvs/{PY_VERSION}-2/bin"
    assert sorted(os.listdir(root / "opt/hems-agent/venvs")) == [f"{PY_VERSION}-2"]
    assert (root / "etc/hems-agent/agent.toml").is_file()

    # An upgrade whose check-config refuses the configuration fails; the old version stays.
    config = root / "etc/hems-agent/agent.toml"
    good = config.read_text()
    config.write_text(good + "\nunknown_setting = 1\n")
    refused = inside(root, "dpkg", "-i", paths["3"], check=False)
    assert refused.returncode != 0
    assert "unknown_setting" in refused.stderr
    assert "the installed version keeps running" in refused.stderr
    assert venv_target(root) == f"venvs/{PY_VERSION}-2/bin"
    assert sorted(os.listdir(root / "opt/hems-agent/venvs")) == [f"{PY_VERSION}-2"]
    assert inside(root, "hems-agent", "--version").returncode == 0
    # Fixed, the pending configuration completes the upgrade.
    config.write_text(good)
    inside(root, "dpkg", "--configure", "hems-agent")
    assert venv_target(root) == f"venvs/{PY_VERSION}-3/bin"
    assert state_digest(root) == before

    # remove: the program goes, configuration and state stay.
    inside(root, "dpkg", "--remove", "hems-agent")
    assert not (root / "opt/hems-agent").exists()
    assert not (root / "usr/bin/hems-agent").exists()
    assert config.read_text() == good
    assert state_digest(root) == before

    # purge without the confirmation keeps them and says how to delete them.
    kept = inside(root, "dpkg", "--purge", "hems-agent")
    assert "HEMS_AGENT_PURGE_STATE=yes" in kept.stderr
    assert state_digest(root) == before and config.is_file()
    assert not wants.exists()

    # Installed again, then purged with the confirmation: everything goes.
    inside(root, "dpkg", "-i", paths["3"])
    assert state_digest(root) == before
    inside(root, "env", "HEMS_AGENT_PURGE_STATE=yes", "dpkg", "--purge", "hems-agent")
    assert not (root / "var/lib/hems-agent").exists()
    assert not (root / "etc/hems-agent").exists()
    assert inside(root, "dpkg", "-s", "hems-agent", check=False).returncode != 0


def test_demo_runs_once_its_broker_is_added(root: Path, debs: dict[str, Path]) -> None:
    """The package leaves out the demo's embedded broker (amqtt): the demo says so; with amqtt
    added to the environment from wheels fetched on the build machine, it runs."""
    paths = put_debs(root, debs)
    inside(root, "dpkg", "-i", paths["1"])
    without = inside(root, "hems-agent", "demo", "--duration", "10", check=False)
    assert without.returncode != 0
    assert "amqtt" in without.stderr + without.stdout

    wheels = CACHE / "demo-wheels"
    run(REPO / "build" / "deb" / "tools" / "bin" / "python", "-m", "pip", "download",
        "--quiet", "--only-binary=:all:", "--dest", wheels, "amqtt>=0.12.1,<0.13")
    shutil.copytree(wheels, root / "root" / "demo-wheels")
    python = f"/opt/hems-agent/venvs/{PY_VERSION}-1/bin/python"
    inside(root, python, "-m", "pip", "install", "--quiet", "--no-index",
           "--find-links", "/root/demo-wheels", "amqtt>=0.12.1,<0.13")
    demo = inside(root, "hems-agent", "demo", "--duration", "10", "--state-dir", "/root/demo")
    assert demo.returncode == 0


def test_installed_service_reports_ready(root: Path, debs: dict[str, Path]) -> None:
    """The unit's command, as the unit runs it (the service user, its groups, the provisioned
    configuration), from the installed package, tells a notify socket READY=1; SIGTERM stops
    it cleanly. The unit itself passes `systemd-analyze verify` in the root.

    Not under systemd: systemd-nspawn --boot needs a host booted with systemd, which this
    machine is not (PID 1 is no systemd: 'Failed to open system bus'); the socket here plays
    systemd's part of the notify protocol. The broker and the inverter do not answer: the agent
    is ready all the same (it retries them)."""
    paths = put_debs(root, debs)
    inside(root, "dpkg", "-i", paths["1"])
    verify = inside(root, "systemd-analyze", "verify", "--man=no",
                    "/lib/systemd/system/hems-agent.service", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    provision(root)
    unit = (root / "lib/systemd/system/hems-agent.service").read_text()
    command = next(line.split("=", 1)[1] for line in unit.splitlines()
                   if line.startswith("ExecStart="))

    path = root / "tmp" / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        path.chmod(0o777)
        sock.settimeout(300)  # a guard against a hang, not a measurement
        agent = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", ENTER, "sh",
             str(root), "setpriv", "--reuid=hems-agent", "--regid=hems-agent",
             "--init-groups", "--", "env", "NOTIFY_SOCKET=/tmp/notify.sock", *command.split()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            messages: list[str] = []
            while not any(m.startswith("READY=1") for m in messages):
                messages.append(sock.recv(4096).decode())
        finally:
            # unshare's one child is the agent (sh, chroot, env and setpriv exec), as systemd
            # stops it: SIGTERM to the main process.
            children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
            for child in children:
                os.kill(int(child), signal.SIGTERM)
            _, err = agent.communicate(timeout=120)
    assert any("READY=1" in m for m in messages), (messages, err)
    assert agent.returncode == 0, err
