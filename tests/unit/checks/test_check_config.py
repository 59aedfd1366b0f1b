"""``check-config`` refuses every configuration ``run`` refuses, naming the file and the field.

A real gateway's files (keys, the broker's CA, a pairing hash, an operator key, the state
directory) are written, then one thing is broken per case. check-config is its real ``main``;
``run`` calls the same :func:`agent.config_checks.load_checked` before it starts anything (one
case starts ``hems-agent run`` as a process to show it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config_checks import load_checked
from agent.daemon.state import load_recipients
from agent.errors import ConfigError, KeyFileError
from agent.installer import check_config as config_cli
from agent.installer.provision.checks import check_listen
from agent.wire import keys
from tests.support.mosquitto import make_tls

CONFIG = """
site_id = "site-0001"
state_dir = "state"
device_key_file = "device.key"

[broker]
url = "mqtts://broker.example:8883"
ca_file = "ca.pem"
username = "site-0001"
password_file = "broker.pass"

[web]
listen = "127.0.0.1:8080"

[[recipients]]
id = "company"
key_file = "company.pub"

[[operator_keys]]
id = "ops"
key_file = "ops.pub"
"""


@dataclass
class Gateway:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "agent.toml"

    def edit(self, old: str, new: str) -> None:
        text = self.config.read_text(encoding="utf-8")
        assert old in text
        self.config.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    """Every file a working configuration names, written for real."""
    keys.write_private_file(tmp_path / "device.key",
                            keys.device_private_pem(ed25519.Ed25519PrivateKey.generate()))
    keys.write_private_file(tmp_path / "broker.pass", b"pw-one\n")
    make_tls(tmp_path)
    company = keys.generate_recipient_key()
    (tmp_path / "company.pub").write_bytes(keys.recipient_public_pem(company.public))
    (tmp_path / "company.key").write_bytes(keys.recipient_private_pem(company))
    operator = ed25519.Ed25519PrivateKey.generate().public_key()
    (tmp_path / "ops.pub").write_bytes(keys.device_public_pem(operator))
    (tmp_path / "state").mkdir(mode=0o700)
    gateway = Gateway(tmp_path)
    gateway.config.write_text(CONFIG, encoding="utf-8")
    return gateway


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = config_cli.main(argparse.Namespace(file=path))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_working_gateway_passes(gw: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check_config(gw.config, capsys)
    assert code == 0, out
    assert "OK (0 devices, 1 recipients)" in out
    assert sorted(p.name for p in (gw.root / "state").iterdir()) == []  # the probe is gone


def test_certificates_and_their_keys_are_loaded_as_a_pair(
        gw: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    gw.edit('password_file = "broker.pass"', 'password_file = "broker.pass"\n'
            'client_cert = "server.pem"\nclient_key = "server.key"')
    gw.edit('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:8080"\n'
            'tls_cert = "server.pem"\ntls_key = "server.key"')
    assert check_config(gw.config, capsys)[0] == 0
    other = ed25519.Ed25519PrivateKey.generate()
    keys.write_private_file(gw.root / "other.key", keys.device_private_pem(other))
    gw.edit('tls_key = "server.key"', 'tls_key = "other.key"')
    code, out = check_config(gw.config, capsys)
    assert code == 2
    assert (f"{gw.config}: web.tls_key: {gw.root}/other.key: not the private key of "
            f"{gw.root}/server.pem") in out


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """``directory`` cannot take a write: mode 0500, or (as root, whom modes do not stop) a
    read-only tmpfs mounted on it, as after a read-only remount."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        yield
        directory.chmod(0o700)
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(directory)],
                           capture_output=True, text=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here: {mount.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def _garbage(name: str) -> Callable[[Gateway], None]:
    return lambda gw: (gw.root / name).write_bytes(b"not a key at all\n")


def _empty(name: str) -> Callable[[Gateway], None]:
    return lambda gw: (gw.root / name).write_bytes(b"")


def _cut_short(name: str) -> Callable[[Gateway], None]:
    def cut(gw: Gateway) -> None:
        pem = (gw.root / name).read_bytes()
        (gw.root / name).write_bytes(pem[:len(pem) // 2] + b"\n-----END CERTIFICATE-----\n")
    return cut


def _key_as_ca(gw: Gateway) -> None:
    (gw.root / "ca.pem").write_bytes((gw.root / "device.key").read_bytes())


def _missing(name: str) -> Callable[[Gateway], None]:
    return lambda gw: (gw.root / name).unlink()


def _state_is_a_file(gw: Gateway) -> None:
    (gw.root / "state").rmdir()
    (gw.root / "state").write_text("", encoding="utf-8")


def _state_under_proc(gw: Gateway) -> None:
    gw.edit('state_dir = "state"', 'state_dir = "/proc/self/hems-state"')


def _private_as_recipient(gw: Gateway) -> None:
    gw.edit('key_file = "company.pub"', 'key_file = "company.key"')


def _empty_password(gw: Gateway) -> None:
    (gw.root / "broker.pass").write_bytes(b"\n")


def _nested(gw: Gateway) -> None:
    gw.config.write_text(CONFIG + "x = " + "[" * 2000 + "]" * 2000 + "\n", encoding="utf-8")


def _page_key_without_certificate(gw: Gateway) -> None:
    gw.edit('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:8080"\ntls_key = "server.key"')


def _wildcard_page(gw: Gateway) -> None:
    gw.edit('listen = "127.0.0.1:8080"', 'listen = "0.0.0.0:8080"')


def _wildcard_page_v6(gw: Gateway) -> None:
    gw.edit('listen = "127.0.0.1:8080"', 'listen = "[::]:8080"')


# (break it, field, what the message says); FILE below is the gateway's directory.
CASES: dict[str, tuple[Callable[[Gateway], None], str, str]] = {
    "recipient key missing": (_missing("company.pub"), "recipients[0].key_file",
                              "FILE/company.pub: no such file"),
    "recipient key garbage": (_garbage("company.pub"), "recipients[0].key_file",
                              "FILE/company.pub: not a PEM public key"),
    "recipient key is private": (_private_as_recipient, "recipients[0].key_file",
                                 "FILE/company.key: a private key, not a public key"),
    "CA missing": (_missing("ca.pem"), "broker.ca_file", "FILE/ca.pem: no such file"),
    "CA garbage": (_garbage("ca.pem"), "broker.ca_file", "FILE/ca.pem: not a PEM certificate"),
    "CA empty": (_empty("ca.pem"), "broker.ca_file", "FILE/ca.pem: not a PEM certificate"),
    "CA is a key": (_key_as_ca, "broker.ca_file", "FILE/ca.pem: not a PEM certificate"),
    "CA cut short": (_cut_short("ca.pem"), "broker.ca_file",
                     "FILE/ca.pem: not a PEM certificate"),
    "operator key garbage": (_garbage("ops.pub"), "operator_keys[0].key_file",
                             "FILE/ops.pub: not an Ed25519 public key"),
    "operator key missing": (_missing("ops.pub"), "operator_keys[0].key_file",
                             "FILE/ops.pub: no such file"),
    "device key missing": (_missing("device.key"), "device_key_file",
                           "FILE/device.key: no such file"),
    "state dir is a file": (_state_is_a_file, "state_dir",
                            "FILE/state: exists and is not a directory"),
    "state dir under /proc": (_state_under_proc, "state_dir",
                              "/proc/self/hems-state: is under /proc"),
    "state dir read-only": (lambda gw: None, "state_dir", "FILE/state: cannot be written"),
    "password file empty": (_empty_password, "broker.password_file",
                            "FILE/broker.pass: is empty"),
    "nested TOML": (_nested, "", "not valid TOML: tables or arrays nested too deeply"),
    "page on 0.0.0.0": (_wildcard_page, "web.listen",
                        "0.0.0.0 listens on every interface"),
    "page on ::": (_wildcard_page_v6, "web.listen", "[::] listens on every interface"),
    "page key without certificate": (_page_key_without_certificate, "web",
                                     "tls_cert and tls_key go together"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_config_refuses_what_run_refuses_naming_file_and_field(
        gw: Gateway, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    breaks, field, says = CASES[case]
    breaks(gw)
    expected = f"{gw.config}: {field}: " if field else f"{gw.config}: "
    expected += says.replace("FILE", str(gw.root))
    read_only_state = case == "state dir read-only"
    with read_only(gw.root / "state") if read_only_state else contextlib.nullcontext():
        code, out = check_config(gw.config, capsys)
        assert code == 2, out
        assert expected in out
        assert len(out.splitlines()) == 2  # the heading and one line: no traceback
        with pytest.raises(ConfigError) as refused:  # what run calls before it starts
            load_checked(gw.config)
        assert expected in str(refused.value)


def test_every_problem_is_listed_not_only_the_first(
        gw: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    for breaks in (_missing("ca.pem"), _garbage("ops.pub"), _empty_password, _state_is_a_file):
        breaks(gw)
    code, out = check_config(gw.config, capsys)
    assert code == 2
    fields = [line.split(": ")[1] for line in out.splitlines()[1:]]
    assert fields == ["broker.ca_file", "broker.password_file", "operator_keys[0].key_file",
                      "state_dir"]


def test_a_secret_readable_by_others_names_its_field(
        gw: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    (gw.root / "broker.pass").chmod(0o640)
    code, out = check_config(gw.config, capsys)
    assert code == 2
    assert (f"{gw.config}: broker.password_file: secret file {gw.root}/broker.pass is readable "
            f"by others (mode 0640); run: chmod 600 {gw.root}/broker.pass") in out


def test_a_huge_file_is_refused_before_it_is_parsed(
        gw: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    gw.config.write_text(CONFIG + "#" * (2 << 20) + "\n", encoding="utf-8")
    code, out = check_config(gw.config, capsys)
    assert code == 2
    assert f"{gw.config}: larger than 1024 KiB: not a configuration file" in out


def test_a_recipient_key_of_another_kem_is_refused_by_check_and_start(gw: Gateway) -> None:
    gw.edit('key_file = "company.pub"', 'key_file = "company.pub"\nkem = "mlkem768x25519"')
    with pytest.raises(ConfigError, match=r"recipients\[0\]\.key_file: .*company\.pub: the key "
                                          r"is x25519 but the recipient is configured with kem"):
        load_checked(gw.config)
    from agent.config.model import load_config

    with pytest.raises(KeyFileError, match="configured with kem mlkem768x25519"):
        load_recipients(load_config(gw.config))  # the daemon's own loader: the same rule


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "8.8.8.8:8080"])
def test_provision_refuses_the_page_addresses_run_refuses(listen: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"page address '{listen}': ")):
        check_listen(listen)
    assert check_listen("192.168.1.20:8080") == "192.168.1.20:8080"


def test_check_config_command_exit_codes(gw: Gateway) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    ok = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(gw.config)],
                        capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "OK (0 devices, 1 recipients)" in ok.stdout
    gw.edit("[broker]", "[brokr]")
    bad = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(gw.config)],
                         capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 2
    assert "brokr: unknown key" in bad.stderr


def test_run_refuses_it_too_and_names_the_field(gw: Gateway) -> None:
    """The finding's case: run said ``cannot run: [Errno 17] File exists`` for a state
    directory that is a file."""
    _state_is_a_file(gw)
    run = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(gw.config)],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONWARNINGS": "error"})
    assert run.returncode == 2, run.stdout + run.stderr
    assert (f"{gw.config}: state_dir: {gw.root}/state: exists and is not a directory"
            in run.stderr)
    assert "Errno" not in run.stderr + run.stdout
