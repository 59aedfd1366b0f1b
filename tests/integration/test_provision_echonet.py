"""A Japanese home from the installer's side: PV and a battery on ECHONET Lite (the loopback
emulator) and the smart meter on the B-route (the fake SK module on a pty). ``provision`` finds
and adds them by flags, ``check-config`` counts them, ``doctor`` reads each once and ``report``
lists them."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config import load_config
from agent.demo_echonet import EchonetSite
from tests.integration.test_provision_helpers import Gateway
from tests.support.fake_sk_module import FakeSkModule
from tests.support.installer import (
    PASSWORD,
    RBID,
    args,
    broute_args,
    cli,
    emulated_home,
    fake_module,
    fast_timeouts,
    gateway,
)


@pytest.fixture
async def home() -> AsyncIterator[EchonetSite]:
    async with emulated_home() as site:
        yield site


@pytest.fixture
async def module() -> AsyncIterator[FakeSkModule]:
    async with fake_module() as fake:
        yield fake


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    return gateway(tmp_path)


async def test_provision_finds_echonet_devices_and_joins_the_broute_meter(
        gw: Gateway, home: EchonetSite, module: FakeSkModule) -> None:
    code, out, err = await cli(*args(gw, home, "--echonet-scan", "--echonet-select", "1,2"),
                               *broute_args(gw, module))
    assert code == 0, out + err
    assert "1. " in out and "Household solar power generation" in out  # the list shown
    assert "smart meter joined, channel 33, link quality LQI 225 (about -42 dBm)" in out
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


async def test_check_config_doctor_and_report_cover_all_three_protocols(
        gw: Gateway, home: EchonetSite, module: FakeSkModule) -> None:
    code, out, err = await cli(*args(gw, home, "--echonet-scan", "--echonet-select", "all",
                                     "--device", "inverter=127.0.0.1:1/1",
                                     "--no-device-check"), *broute_args(gw, module))
    assert code in (0, 3), out + err
    fast_timeouts(gw)
    # A storage battery at an address where nothing answers.
    silent = home.interface.rsplit(".", 1)[0] + ".9"
    text = gw.config.read_text().replace(
        'name = "battery"\neoj = "027D02"\naddress = "' + home.gateway.address + '"',
        'name = "battery"\neoj = "027D02"\naddress = "' + silent + '"')
    gw.config.write_text(text)
    code, out, _ = await cli("check-config", str(gw.config))
    assert "OK (5 devices (1 Modbus, 3 ECHONET Lite, B-route smart meter)" in out
    code, out, err = await cli("doctor", "--config", str(gw.config), "--json", "--timeout", "1")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["config valid"]["detail"].endswith(
        "5 devices (1 Modbus, 3 ECHONET Lite, B-route smart meter), 1 recipient(s)")
    assert checks["device pv"]["status"] == "pass"
    assert checks["device meter"]["status"] == "pass"
    battery = checks["device battery"]
    assert battery["status"] == "fail" and f"ECHONET Lite {silent} 027D02" in battery["detail"]
    assert "same LAN" in battery["fix"]
    meter = checks["device smart_meter"]
    assert meter["status"] == "pass", meter
    assert "LQI 225 (about -42 dBm)" in meter["detail"] and "channel 33" in meter["detail"]
    code, out, err = await cli("report", "--config", str(gw.config), "--skip-uplink-test",
                               "--format", "json")
    assert code == 1, err  # the battery and the inverter failed
    devices = {d["name"]: d for d in json.loads(out)["devices"]}
    assert {n: (d["protocol"], d["ok"]) for n, d in devices.items()} == {
        "inverter": ("modbus", False), "pv": ("echonet", True), "battery": ("echonet", False),
        "meter": ("echonet", True), "smart_meter": ("broute", True)}
    assert devices["smart_meter"]["readings"]["grid.power"]["value"] == 632.0
    assert devices["pv"]["readings"]["pv.power"]["value"] is not None
    code, out, err = await cli("report", "--config", str(gw.config), "--skip-uplink-test")
    line = next(s for s in out.splitlines() if s.startswith("  inverter"))
    # A failed device is described in words, without placeholders for what it never said.
    assert "FAILED: it did not answer" in line and "serial -" not in line
    assert " - - " not in line and "Check: check the device is powered" in line
