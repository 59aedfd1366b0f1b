"""``hems-agent provision`` on a real pseudo-terminal: it asks only for what is missing, refuses
bad answers with a clear message and a second chance, and writes nothing until confirmed."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pexpect
import pytest

from agent.config.model import load_config
from agent.demo.echonet import EchonetSite
from agent.installer.provision.checks import fingerprint
from drivers.sim.server import Site, run_site
from tests.conftest import free_port
from tests.integration.test_provision_helpers import Gateway, recipient_file
from tests.support.fake_sk_module import FakeSkModule
from tests.support.installer import PASSWORD, RBID, emulated_home, fake_module
from tests.support.mosquitto import make_tls

ROOT = Path(__file__).parents[2]


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with run_site() as running:
        yield running


def spawn(gw: Gateway, *extra: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable, ["-m", "agent.cli", "provision", "--config", str(gw.config),
                         "--state-dir", str(gw.state), "--clock-check", "none", "--no-chown",
                         "--skip-uplink-test", *extra],
        cwd=str(ROOT), encoding="utf-8", timeout=30, dimensions=(50, 200))


async def answer(child: pexpect.spawn, prompt: str, reply: str) -> None:
    await child.expect(prompt, async_=True)
    child.sendline(reply)


async def test_prompts_refuse_bad_input_then_write_once_confirmed(tmp_path: Path,
                                                                  site: Site) -> None:
    gw = Gateway(tmp_path)
    ca, _, _ = make_tls(tmp_path)
    company, key_id = recipient_file(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN SOMETHING-----\nAAAA\n-----END SOMETHING-----\n")
    child = spawn(gw)
    try:
        await answer(child, r"Site id: ", "bad id!")
        await answer(child, r"site id 'bad id!'.*try again.*\r\nSite id: ", "s-0001")
        await answer(child, r"Time zone \[Asia/Tokyo\]: ", "")
        await answer(child, r"Broker URL \(mqtts://HOST:PORT\): ", "http://broker.example")
        await answer(child, r"is malformed: expected mqtts://HOST:PORT.*\r\nBroker URL.*: ",
                     "mqtts://broker.example:8883")
        await answer(child, r"Broker CA file \(PEM\): ", str(ca))
        await answer(child, r"Broker user name: ", "s-0001")
        await answer(child, r"Broker password: ", "pw-one")
        await answer(child, r"Household page address .*\[127\.0\.0\.1:8080\]: ", "")
        await answer(child, r"Recipient public key ID=FILE .*: ", f"company={garbage}")
        await answer(child, r"unknown key format.*\r\nRecipient public key ID=FILE .*: ",
                     f"company={company}")
        await child.expect(re.escape(fingerprint(key_id)), async_=True)
        await answer(child, r"fingerprint as on the key sheet\? \[y/N\]: ", "y")
        await answer(child, r"Recipient public key ID=FILE .*: ", "")
        await answer(child, r"Device NAME=HOST\[:PORT\]\[/UNIT\] .*: ",
                     f"inverter=127.0.0.1:{free_port()}/1")
        await answer(child, r"device inverter does not answer.*\r\nDevice NAME=.*: ",
                     f"inverter=127.0.0.1:{site.inverter.port}/1")
        await answer(child, r"Device NAME=.*: ", "")
        await answer(child, r"Search the LAN for ECHONET Lite devices .*\? \[y/N\]: ", "")
        await answer(child, r"B-route module serial device .*: ", "")
        await child.expect(r"Write all this\? \[y/N\]: ", async_=True)
        assert not gw.etc.exists() and not gw.state.exists()  # nothing yet
        child.sendline("y")
        await child.expect(r"household pairing code .*: \d{10}", async_=True)
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    config = load_config(gw.config)
    assert config.site_id == "s-0001" and [d.name for d in config.devices] == ["inverter"]
    assert config.broker.password_file is not None
    assert config.broker.password_file.read_text().strip() == "pw-one"
    assert "pw-one" not in (child.before or "")  # typed without echo, never shown


async def test_declining_at_the_end_writes_nothing(tmp_path: Path, site: Site) -> None:
    gw = Gateway(tmp_path)
    ca, _, _ = make_tls(tmp_path)
    company, _ = recipient_file(tmp_path)
    password = tmp_path / "pw"
    password.write_text("pw-one\n")
    child = spawn(gw, "--site-id", "s-0001", "--broker-url", "mqtts://broker.example:8883",
                  "--broker-ca", str(ca), "--broker-username", "s-0001",
                  "--broker-password-file", str(password), "--recipient", f"company={company}",
                  "--web-listen", "127.0.0.1:8080", "--timezone", "Asia/Tokyo",
                  "--device", f"inverter=127.0.0.1:{site.inverter.port}/1")
    try:
        await answer(child, r"Write all this\? \[y/N\]: ", "n")  # nothing else was asked
        await child.expect(r"nothing written", async_=True)
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert not gw.etc.exists() and not gw.state.exists()


async def test_a_japanese_home_pv_and_battery_on_echonet_lite_meter_on_the_b_route(
        tmp_path: Path) -> None:
    """The installer's session for a home with PV and a battery on ECHONET Lite and the smart
    meter on the B-route: pick from the scan, type the module and the utility's secrets (a
    wrong one is refused, a wrong pair fails the join and is asked again), then write."""
    gw = Gateway(tmp_path)
    ca, _, _ = make_tls(tmp_path)
    company, key_id = recipient_file(tmp_path)
    home: EchonetSite
    module: FakeSkModule
    async with emulated_home() as home, fake_module(dialect="bp35c2") as module:
        child = spawn(gw, "--echonet-interface", home.interface, "--echonet-port",
                      str(home.port), "--echonet-wait", "0.5")
        try:
            await answer(child, r"Site id: ", "s-0001")
            await answer(child, r"Time zone \[Asia/Tokyo\]: ", "")
            await answer(child, r"Broker URL \(mqtts://HOST:PORT\): ",
                         "mqtts://broker.example:8883")
            await answer(child, r"Broker CA file \(PEM\): ", str(ca))
            await answer(child, r"Broker user name: ", "s-0001")
            await answer(child, r"Broker password: ", "pw-one")
            await answer(child, r"Household page address .*: ", "")
            await answer(child, r"Recipient public key ID=FILE .*: ", f"company={company}")
            await child.expect(re.escape(fingerprint(key_id)), async_=True)
            await answer(child, r"fingerprint as on the key sheet\? \[y/N\]: ", "y")
            await answer(child, r"Recipient public key ID=FILE .*: ", "")
            await answer(child, r"Device NAME=HOST.*: ", "")  # no Modbus device here
            await answer(child, r"Search the LAN for ECHONET Lite devices \(solar, battery, "
                                r"meter\)\? \[y/N\]: ", "y")
            await child.expect(r"1\. .*02791F Household solar power generation", async_=True)
            await child.expect(r"2\. .*027D02 Storage battery", async_=True)
            await child.expect(r"3\. .*028801 Low-voltage smart", async_=True)
            await answer(child, r"Add which\? .*\[all\]: ", "7")
            await answer(child, r"'7' is not one of the listed numbers 1\.\.3.*\r\n"
                                r"Add which\? .*: ", "1,2")
            await answer(child, r"B-route module serial device .*: ", "/dev/ttyUSB9")
            await answer(child, r"/dev/ttyUSB9: no such device; is the module plugged in\?.*"
                                r"\r\nB-route module serial device .*: ", module.path)
            await answer(child, r"B-route ID \(32 characters\): ", "0123")
            await answer(child, r"the B-route ID is 4 characters; it has 32 .*\r\n"
                                r"B-route ID \(32 characters\): ", RBID)
            await answer(child, r"B-route password \(12 characters\): ", "WRONGPASS123")
            await child.expect(r"B-route join refused \(EVENT 24\).*enter the ID and "
                               r"password again", async_=True)
            await answer(child, r"B-route ID \(32 characters\): ", RBID)
            await answer(child, r"B-route password \(12 characters\): ", PASSWORD)
            # The module's SK dialect is found by asking it: nothing about its make is asked.
            await child.expect(r"smart meter joined \(bp35c2 module\), channel 33, link "
                               r"quality LQI 225 \(about -42 dBm\), instantaneous power "
                               r"632\.0 W", async_=True)
            await child.expect(r"2 ECHONET Lite device\(s\), B-route smart meter on ",
                               async_=True)
            await answer(child, r"Write all this\? \[y/N\]: ", "y")
            await child.expect(r"household pairing code .*: \d{10}", async_=True)
            await child.expect(r"household sheet \(Japanese, A4", async_=True)
            await child.expect(pexpect.EOF, async_=True)
        finally:
            child.close()
        transcript = child.before or ""
    assert child.exitstatus == 0, transcript
    config = load_config(gw.config)
    assert [(d.name, d.eoj) for d in config.echonet_devices] == [("pv", "02791F"),
                                                                 ("battery", "027D02")]
    assert config.broute is not None and config.broute.device == module.path
    assert config.broute.id_file.read_text().strip() == RBID
    assert module.joins >= 2  # once to check before writing, once for the report
    for typed in (RBID, PASSWORD, "WRONGPASS123"):  # typed without echo, never shown
        assert typed not in transcript
