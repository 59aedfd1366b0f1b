"""``hems-agent doctor`` on a provisioned gateway: all pass, then one fault at a time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.host.check import Check, Status
from agent.installer.doctor.run import run_checks
from agent.installer.scan.range import implausible
from drivers.sim.server import Site, run_site
from tests.integration.test_provision_helpers import PASSWORDS, Gateway, base_args, cli
from tests.support.mosquitto import Mosquitto, make_tls

pytestmark = pytest.mark.mosquitto
UNIT_FILE = Path(__file__).parents[3] / "systemd" / "hems-agent.service"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", PASSWORDS) as mosquitto:
        yield mosquitto


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with run_site() as running:
        yield running


async def provisioned(tmp_path: Path, broker: Mosquitto, site: Site, **kw: str) -> Gateway:
    (tmp_path / "gw").mkdir()
    gw = Gateway(tmp_path / "gw")
    code, _, err = await cli(*base_args(gw, broker, site, **kw), "--skip-uplink-test")
    assert code == 0, err
    return gw


async def checks_of(gw: Gateway) -> dict[str, Check]:
    return {c.name: c for c in await run_checks(gw.config, unit_file=UNIT_FILE, deadline=2.0)}


def failures(checks: dict[str, Check]) -> list[str]:
    return [name for name, c in checks.items() if c.status is Status.FAIL]


async def test_a_healthy_gateway_passes_every_check_and_exits_zero(
        tmp_path: Path, broker: Mosquitto, site: Site) -> None:
    gw = await provisioned(tmp_path, broker, site)
    code, out, err = await cli("doctor", "--config", str(gw.config), "--unit-file",
                               str(UNIT_FILE), "--json")
    assert code == 0, out + err
    document = json.loads(out)
    assert document["ok"] is True
    names = [c["name"] for c in document["checks"]]
    assert names == ["config valid", "secrets", "clock", "device inverter", "device battery",
                     "device meter", "broker reachable", "broker TLS", "broker credentials",
                     "publish on own topic", "publish elsewhere refused", "outbox",
                     "consent ledger", "watchdog"]
    assert {c["status"] for c in document["checks"]} == {"pass", "warn"}  # clock: not checked
    refused = next(c for c in document["checks"] if c["name"] == "publish elsewhere refused")
    assert refused["detail"].endswith("refused (0x87 Not authorized)")
    valid = document["checks"][0]
    assert valid["detail"].endswith("3 devices (3 Modbus), 1 recipient(s)")


async def test_a_secret_readable_by_others_fails_with_the_chmod_fix(
        tmp_path: Path, broker: Mosquitto, site: Site) -> None:
    gw = await provisioned(tmp_path, broker, site)
    (gw.etc / "device.key").chmod(0o644)
    code, out, _ = await cli("doctor", "--config", str(gw.config), "--unit-file", str(UNIT_FILE))
    assert code == 1
    assert "FAIL  secrets:" in out and "device.key is readable by others" in out
    assert "fix: chmod 600" in out


async def test_an_unreachable_broker_fails_reachability(tmp_path: Path, broker: Mosquitto,
                                                        site: Site) -> None:
    gw = await provisioned(tmp_path, broker, site)
    broker.stop()
    checks = await checks_of(gw)
    assert failures(checks) == ["broker reachable"]
    assert "internet link" in checks["broker reachable"].fix
    assert "broker TLS" not in checks  # the steps after the first failure are not run


async def test_a_wrong_ca_fails_tls_and_says_which_file(tmp_path: Path, broker: Mosquitto,
                                                        site: Site) -> None:
    gw = await provisioned(tmp_path, broker, site)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_tls(tmp_path / "other")
    (gw.etc / "broker-ca.pem").write_bytes(other_ca.read_bytes())
    checks = await checks_of(gw)
    assert failures(checks) == ["broker TLS"]
    assert "not trusted" in checks["broker TLS"].detail
    assert "broker-ca.pem" in checks["broker TLS"].fix


async def test_wrong_credentials_fail_the_login(tmp_path: Path, broker: Mosquitto,
                                                site: Site) -> None:
    gw = await provisioned(tmp_path, broker, site)
    (gw.etc / "broker.password").write_text("not-the-password\n")
    checks = await checks_of(gw)
    assert failures(checks) == ["broker credentials"]
    assert "refused the login" in checks["broker credentials"].detail


async def test_a_refused_publish_on_the_sites_own_topic_fails(
        tmp_path: Path, broker: Mosquitto, site: Site) -> None:
    # Configured as site s-0002 but logging in as s-0001: the ACL refuses its topics.
    gw = await provisioned(tmp_path, broker, site, site_id="s-0002", user="s-0001")
    checks = await checks_of(gw)
    assert failures(checks) == ["publish on own topic"]
    # The code with its name, as MQTT v5 defines it: an installer need not look 0x87 up.
    assert "PUBACK reason code 0x87 Not authorized" in checks["publish on own topic"].detail
    assert "ACL" in checks["publish on own topic"].fix


async def test_a_silent_device_and_a_tampered_ledger_fail(tmp_path: Path, broker: Mosquitto,
                                                          site: Site) -> None:
    gw = await provisioned(tmp_path, broker, site)
    await site.meter.stop()
    ledger = gw.state / "consent-ledger.json"
    raw = json.loads(ledger.read_text())
    raw["records"]["3"]["tier"] = "raw"  # an edit after the fact
    ledger.write_text(json.dumps(raw))
    checks = await checks_of(gw)
    assert failures(checks) == ["device meter", "consent ledger"]
    assert "powered" in checks["device meter"].fix
    assert "edited" in checks["consent ledger"].detail


async def test_a_missing_watchdog_unit_fails(tmp_path: Path, broker: Mosquitto,
                                             site: Site) -> None:
    gw = await provisioned(tmp_path, broker, site)
    unit = tmp_path / "hems-agent.service"
    unit.write_text(UNIT_FILE.read_text().replace("WatchdogSec=60s", ""))
    checks = {c.name: c for c in await run_checks(gw.config, unit_file=unit, deadline=2.0)}
    assert failures(checks) == ["watchdog"]


async def test_everything_unreachable_still_ends_with_a_diagnosis(tmp_path: Path,
                                                                  broker: Mosquitto) -> None:
    async with run_site() as site:
        gw = await provisioned(tmp_path, broker, site)
    broker.stop()
    checks = await checks_of(gw)
    assert failures(checks) == ["device inverter", "device battery", "device meter",
                                "broker reachable"]


def test_implausible_values_are_named() -> None:
    assert implausible({"pv.power": {"value": -120.0}, "battery.soc": {"value": 104},
                        "grid.power": {"value": -900.0}}) == [
        "pv.power is negative (-120.0 W)", "battery.soc is 104 %, outside 0-100 %"]
    assert implausible({"pv.power": {"value": 0.0}, "battery.soc": {"value": None}}) == []


def test_a_broken_config_is_the_only_check(tmp_path: Path) -> None:
    import asyncio

    bad = tmp_path / "agent.toml"
    bad.write_text('site_id = "s-0001"\n')
    checks = asyncio.run(run_checks(bad))
    assert [(c.name, c.status) for c in checks] == [("config valid", Status.FAIL)]
    assert "broker: required but missing" in checks[0].detail
