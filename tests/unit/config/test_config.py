"""Configuration: one validated file; every error names the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.model import load_config
from agent.errors import ConfigError

GOOD = """
site_id = "site-0001"
timezone = "Asia/Tokyo"
state_dir = "state"
device_key_file = "device.key"

[broker]
url = "mqtts://broker.example:8883"
ca_file = "ca.pem"
username = "site-0001"
password_file = "broker.pass"

[[recipients]]
id = "company"
key_file = "company.pub"

[[buses]]
name = "rs485"
port = "/dev/ttyAMA0"
baud = 9600

[[devices]]
name = "inverter"
host = "192.168.1.30"

[[devices]]
name = "battery"
transport = "rtu"
bus = "rs485"
unit = 3
"""


def _write(tmp_path: Path, text: str) -> Path:
    for secret in ("device.key", "broker.pass"):
        path = tmp_path / secret
        path.write_text("secret\n", encoding="utf-8")
        path.chmod(0o600)
    config = tmp_path / "agent.toml"
    config.write_text(text, encoding="utf-8")
    return config


def test_good_config_loads_into_frozen_models(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert [d.name for d in config.devices] == ["inverter", "battery"]
    assert config.devices[0].port == 502
    assert config.state_dir == tmp_path / "state"
    with pytest.raises(ValueError, match="frozen"):
        config.devices[0].port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("[broker]", "[broker]\nurll = 'x'"), "broker.urll: unknown key"),
        (('host = "192.168.1.30"', 'host = "192.168.1.30"\nport = 70000'),
         "devices[0].port: Input should be less than or equal to 65535"),
        (('url = "mqtts://broker.example:8883"', 'url = "http://broker"'),
         "broker.url: must look like mqtts://"),
        (('bus = "rs485"', 'bus = "rs232"'), "uses bus 'rs232', not defined"),
        (('timezone = "Asia/Tokyo"', 'timezone = "Asia/Tokio"'), "unknown time zone 'Asia/Tokio'"),
        (('site_id = "site-0001"\n', ""), "site_id: required but missing"),
        (('ca_file = "ca.pem"\n', ""), "mqtts needs ca_file"),
        (("broker.example:8883", "broker.example:88830"), "broker.url: the port must be"),
        (("broker.example:8883", "broker.example:0"), "broker.url: the port must be"),
    ],
)
def test_errors_name_file_field_and_problem(tmp_path: Path, change: tuple[str, str],
                                            expected: str) -> None:
    path = _write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_page_never_binds_to_a_public_address(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD + '\n[web]\nlisten = "8.8.8.8:80"\n')
    with pytest.raises(ConfigError, match=r"web\.listen: .*never the WAN"):
        load_config(path)


def test_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    (tmp_path / "broker.pass").chmod(0o644)
    with pytest.raises(ConfigError, match=r"broker.pass is readable by others \(mode 0644\)"):
        load_config(path)


def test_page_never_binds_to_every_interface(tmp_path: Path) -> None:
    for wildcard in ("0.0.0.0", "[::]"):  # Python counts both as private addresses
        path = _write(tmp_path, GOOD + f'\n[web]\nlisten = "{wildcard}:8080"\n')
        with pytest.raises(ConfigError, match=r"web\.listen: .* listens on every interface"):
            load_config(path)


def test_broken_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "site_id = \n")
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML"):
        load_config(path)


def test_metrics_listen_is_checked_and_can_be_turned_off(tmp_path: Path) -> None:
    bad = _write(tmp_path, GOOD.replace('site_id = "site-0001"\n',
                                        'site_id = "site-0001"\nmetrics_listen = "localhost"\n'))
    with pytest.raises(ConfigError, match="metrics_listen: must be ADDRESS:PORT"):
        load_config(bad)
    off = _write(tmp_path, GOOD.replace('site_id = "site-0001"\n',
                                        'site_id = "site-0001"\nmetrics_listen = ""\n'))
    assert load_config(off).metrics_listen is None
