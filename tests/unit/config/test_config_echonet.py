"""[echonet], [[echonet_devices]] and [broute]: errors name the field; B-route secrets are 0600."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.model import load_config
from agent.errors import ConfigError
from tests.unit.config.test_config import GOOD, _write

ECHONET = """
[echonet]
interface = "192.168.1.20"
timeout = 8

[[echonet_devices]]
name = "pv_echonet"
eoj = "0279"

[[echonet_devices]]
name = "storage"
address = "192.168.1.41"
eoj = "027d1f"
poll_interval = 5
slow_interval = 120

[broute]
device = "/dev/ttyUSB0"
id_file = "broute.id"
password_file = "broute.pass"
"""


def _site(tmp_path: Path, extra: str, *, secret_mode: int = 0o600) -> Path:
    config = _write(tmp_path, GOOD + extra)
    for name in ("broute.id", "broute.pass"):
        (tmp_path / name).write_text("SECRET\n", encoding="ascii")
        (tmp_path / name).chmod(secret_mode)
    return config


def test_sections_load(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path, ECHONET))
    pv, storage = config.echonet_devices
    assert (pv.class_code, pv.instance, pv.address) == (0x0279, None, None)
    assert (storage.eoj, storage.class_code, storage.instance) == ("027D1F", 0x027D, 0x1F)
    assert config.echonet.interface == "192.168.1.20" and config.echonet.discovery
    assert config.broute is not None and config.broute.name == "smart_meter"
    assert config.broute.module == "auto"  # detected from SKINFO unless set
    assert config.broute.id_file == tmp_path / "broute.id"  # relative to the config file
    assert {tmp_path / "broute.id", tmp_path / "broute.pass"} <= set(config.secret_files())


def test_no_echonet_sections_change_nothing(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path, ""))
    assert config.echonet_devices == () and config.broute is None


@pytest.mark.parametrize(("change", "where", "what"), [
    (("eoj = \"027d1f\"", "eoj = \"027D1\""), "echonet_devices[1].eoj", "should match"),
    (("eoj = \"027d1f\"", "eoj = \"02A01F\""), "echonet_devices[1].eoj", "no EPC table"),
    (("address = \"192.168.1.41\"", "address = \"hems.local\""), "echonet_devices[1].address",
     "IPv4"),
    (("interface = \"192.168.1.20\"", "interface = \"eth0\""), "echonet.interface", "IPv4"),
    (("poll_interval = 5", "poll_interval = 0"), "echonet_devices[1].poll_interval",
     "greater than 0"),
    (("poll_interval = 5", "polling = 5"), "echonet_devices[1].polling", "unknown key"),
    (("device = \"/dev/ttyUSB0\"", "device = \"COM3\""), "broute.device", "should match"),
    (("id_file = \"broute.id\"\n", ""), "broute.id_file", "required but missing"),
    (("id_file = \"broute.id\"\n", "id_file = \"broute.id\"\nmodule = \"bp35c3\"\n"),
     "broute.module", "'auto', 'bp35a1' or 'bp35c2'"),
])
def test_errors_name_the_field(tmp_path: Path, change: tuple[str, str], where: str,
                               what: str) -> None:
    old, new = change
    assert old in ECHONET
    with pytest.raises(ConfigError) as error:
        load_config(_site(tmp_path, ECHONET.replace(old, new)))
    assert f": {where}: " in str(error.value) and what in str(error.value)


def test_cross_section_rules(tmp_path: Path) -> None:
    no_discovery = ECHONET.replace("timeout = 8", "timeout = 8\ndiscovery = false")
    with pytest.raises(ConfigError, match=r"echonet_devices\[0\] \('pv_echonet'\): no address"):
        load_config(_site(tmp_path, no_discovery))
    clash = ECHONET.replace('name = "storage"', 'name = "inverter"')  # a Modbus device's name
    with pytest.raises(ConfigError, match="'inverter' appears twice"):
        load_config(_site(tmp_path, clash))
    meter_clash = ECHONET + 'name = "storage"\n'
    with pytest.raises(ConfigError, match="'storage' appears twice"):
        load_config(_site(tmp_path, meter_clash))


def test_broute_secrets_must_be_owner_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"broute\.id is readable by others .*chmod 600"):
        load_config(_site(tmp_path, ECHONET, secret_mode=0o644))
    (tmp_path / "broute.id").unlink()
    with pytest.raises(ConfigError, match=r"secret file .*broute\.id"):
        load_config(tmp_path / "agent.toml")
