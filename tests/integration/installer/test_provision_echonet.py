"""A Japanese home from the installer's side: PV and a battery on ECHONET Lite (the loopback
emulator) and the smart meter on the B-route (the fake SK module on a pty). ``provision`` finds
and adds them by flags, ``check-config`` counts them, ``doctor`` reads each once and ``report``
lists them."""

from __future__ import annotations

import json
import stat

import pytest

from agent.config.model import load_config
from agent.demo.echonet import EchonetSite
from tests.integration.test_provision_helpers import Gateway
from tests.support.fake_sk_module import FakeSkModule
from tests.support.installer import (
    PASSWORD,
    RBID,
    args,
    broute_args,
    cli,
    hand_written,
)
from tests.support.installer import gw as gw
from tests.support.installer import home as home
from tests.support.installer import module as module


async def test_provision_finds_echonet_devices_and_joins_the_broute_meter(
        gw: Gateway, home: EchonetSite, module: FakeSkModule) -> None:
    code, out, err = await cli(*args(gw, home, "--echonet-scan", "--echonet-select", "1,2"),
                               *broute_args(gw, module))
    assert code == 0, out + err
    assert "1. " in out and "Household solar power generation" in out  # the list shown
    assert ("smart meter joined (bp35a1 module), channel 33, link quality LQI 225 "
            "(about -42 dBm), instantaneous power 632.0 W") in out
    config = load_config(gw.config)
    assert [(d.name, d.eoj, d.address) for d in config.echonet_devices] == [
        ("pv", "02791F", home.gateway.address), ("battery", "027D02", home.gateway.address)]
    assert config.echonet.port == home.port and config.echonet.interface == home.interface
    assert config.broute is not None and config.broute.device == module.path
    # The utility's secrets are in 0600 files beside the configuration, never in it.
    text = gw.config.read_text()
    assert RBID not in text and PASSWORD not in text and RBID not in out + err
    for path, value in ((config.broute.id_file, RBID),
                        (config.broute.password_file, PASSWORD)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() == value
    code, out, err = await cli("check-config", str(gw.config))
    assert code == 0, err
    assert "OK (3 devices (2 ECHONET Lite, B-route smart meter), 1 recipients)" in out


async def test_a_device_by_address_and_a_rerun_keep_one_entry_each(
        gw: Gateway, home: EchonetSite, module: FakeSkModule) -> None:
    battery = f"{home.gateway.address}:027D"
    code, out, err = await cli(*args(gw, home, "--echonet-device", battery))
    assert code == 0, out + err
    code, out, err = await cli(*args(gw, home, "--echonet-device", battery,
                                     "--echonet-device", f"grid={home.meter.address}"))
    assert code == 0, out + err
    config = load_config(gw.config)
    assert [(d.name, d.eoj) for d in config.echonet_devices] == [("battery", "027D02"),
                                                                 ("grid", "028801")]
    assert config.broute is None


async def test_bad_echonet_and_broute_input_is_refused_naming_it(
        gw: Gateway, home: EchonetSite, module: FakeSkModule) -> None:
    silent = home.interface.rsplit(".", 1)[0] + ".9"
    code, _, err = await cli(*args(gw, home, "--echonet-device", silent))
    assert code == 2 and f"ECHONET Lite device at {silent} does not answer" in err
    code, _, err = await cli(*args(gw, home, "--echonet-scan"))
    assert code == 2 and "choose with --echonet-select" in err
    code, _, err = await cli(*args(gw, home), *broute_args(gw, module, password="short"))
    assert code == 2 and "the B-route password is 5 characters; it has 12" in err
    code, _, err = await cli(*args(gw, home), *broute_args(gw, module,
                                                          password="WRONGPASS123"))
    assert code == 2 and "B-route join refused (EVENT 24)" in err
    assert not gw.config.exists()  # nothing written


@pytest.fixture
async def hand_configured(gw: Gateway, home: EchonetSite, module: FakeSkModule) -> str:
    """A gateway with a Modbus inverter that does not answer, provisioned by flags, then
    ECHONET Lite devices (PV by discovery, a battery at an address where nothing answers, a
    LAN meter) and the B-route meter written into agent.toml by hand. The silent address."""
    code, out, err = await cli(*args(gw, None, "--device", "inverter=127.0.0.1:1/1",
                                     "--no-device-check"))
    assert code == 3, out + err  # the inverter does not answer
    silent = home.interface.rsplit(".", 1)[0] + ".9"
    hand_written(gw, home, module, battery_address=silent)
    return silent


async def test_check_config_counts_devices_of_every_protocol(gw: Gateway,
                                                             hand_configured: str) -> None:
    code, out, err = await cli("check-config", str(gw.config))
    assert code == 0, err
    assert "OK (5 devices (1 Modbus, 3 ECHONET Lite, B-route smart meter), 1 recipients)" in out


async def test_doctor_reads_each_echonet_device_and_the_broute_meter_once(
        gw: Gateway, module: FakeSkModule, hand_configured: str) -> None:
    silent = hand_configured
    code, out, err = await cli("doctor", "--config", str(gw.config), "--json")
    assert code == 1, err
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    # The battery nobody answers for is a failed check of its own, with the fix.
    battery = checks.get("device battery", {})
    assert battery.get("status") == "fail", list(checks)
    assert battery["detail"] == f"ECHONET Lite {silent} 027D02: no answer within 0.5 s"
    assert "same LAN" in battery["fix"]
    assert checks["device pv"]["status"] == "pass"  # found by multicast discovery
    assert checks["device meter"]["status"] == "pass"
    assert checks["config valid"]["detail"].endswith(
        "5 devices (1 Modbus, 3 ECHONET Lite, B-route smart meter), 1 recipient(s)")
    meter = checks["device smart_meter"]
    assert meter["status"] == "pass", meter
    assert meter["detail"].startswith(f"B-route module {module.path}: 0xFFFFFE, values "
                                      "plausible; joined in ")
    assert meter["detail"].endswith("channel 33, link quality LQI 225 (about -42 dBm), SK "
                                    "dialect bp35a1 (ROHM BP35A1, Tessera RL7023 Stick-D/IPS)")
    assert module.joins == 1 and module.commands.count("SKSENDTO") == 2  # context, then read


async def test_report_lists_devices_of_every_protocol(gw: Gateway,
                                                      hand_configured: str) -> None:
    code, out, err = await cli("report", "--config", str(gw.config), "--skip-uplink-test",
                               "--format", "json")
    assert code == 1, err  # the battery and the inverter failed
    devices = {d["name"]: d for d in json.loads(out)["devices"]}
    assert {n: (d["protocol"], d["ok"]) for n, d in devices.items()} == {
        "inverter": ("modbus", False), "pv": ("echonet", True), "battery": ("echonet", False),
        "meter": ("echonet", True), "smart_meter": ("broute", True)}
    assert devices["smart_meter"]["readings"]["grid.power"]["value"] == 632.0
    assert devices["smart_meter"]["link"]["lqi"] == 225
    assert devices["pv"]["readings"]["pv.power"]["value"] is not None


async def test_a_failed_device_is_described_in_words(gw: Gateway) -> None:
    code, out, err = await cli(*args(gw, None, "--device", "dead=127.0.0.1:1/1",
                                     "--no-device-check"))
    assert code == 3, out + err
    code, out, err = await cli("report", "--config", str(gw.config), "--skip-uplink-test")
    assert code == 1, err
    line = next(s for s in out.splitlines() if s.startswith("  dead"))
    # Not "dead (127.0.0.1:1 unit 1): - - serial - — FAIL": no placeholders for what the
    # device never said, and what to check.
    assert line.startswith("  dead (Modbus 127.0.0.1:1 unit 1): FAILED: it did not answer (")
    assert "serial" not in line and " - " not in line
    assert line.endswith("Check: check the device is powered, its cable or Wi-Fi link, and its "
                         "address, port and unit id (hems-agent scan finds them)")
    code, html, err = await cli("report", "--config", str(gw.config), "--skip-uplink-test",
                                "--format", "html")
    assert "<td>not reported</td>" in html and "serial None" not in html
