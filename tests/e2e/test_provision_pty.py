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
from agent.installer.provision.checks import fingerprint
from drivers.sim.server import Site, run_site
from tests.conftest import free_port
from tests.integration.test_provision_helpers import Gateway, recipient_file
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
