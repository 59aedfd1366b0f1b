"""``hems-agent provision`` driven by flags against the simulators and a real mosquitto."""

from __future__ import annotations

import json
import stat
import tomllib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.config.model import load_config
from agent.web.security import load_pairing_hash
from agent.wire import keys
from drivers.sim.server import Site, run_site
from tests.conftest import free_port
from tests.integration.test_provision_helpers import (
    PASSWORDS,
    Gateway,
    base_args,
    cli,
    key_id_in,
    pairing_code_in,
    run_daemon_until_ready,
)
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.mosquitto
CONSENT = ["--consent", "maintenance_watch:installer=30min", "--consent-ref", "FORM-2026-0042"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", PASSWORDS) as mosquitto:
        yield mosquitto


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with run_site() as running:
        yield running


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    (tmp_path / "gw").mkdir()
    return Gateway(tmp_path / "gw")


def ledger_records(gw: Gateway) -> list[dict[str, object]]:
    raw = json.loads((gw.state / "consent-ledger.json").read_text(encoding="utf-8"))
    return [raw["records"][k] for k in sorted(raw["records"], key=int)]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_provision_writes_a_gateway_that_passes_its_own_checks(
        gw: Gateway, broker: Mosquitto, site: Site) -> None:
    code, out, err = await cli(*base_args(gw, broker, site), *CONSENT, "--web-tls")
    assert code == 0, err
    assert "PRIVATE KEY" not in out + err  # the signing key is never printed
    # What the daemon will load: check-config (the daemon's own loader) and every key file.
    assert (await cli("check-config", str(gw.config)))[0] == 0
    config = load_config(gw.config)
    device = keys.load_device_key(config.device_key_file)
    assert key_id_in(out) == keys.device_key_id(device.public_key())
    for recipient in config.recipients:
        keys.load_recipient_public(recipient.key_file)
    for secret in config.secret_files():
        assert mode(secret) == 0o600, secret
    assert config.web.tls_key in config.secret_files()  # the page's certificate was made
    assert config.web.tls_cert is not None and config.web.tls_cert.read_bytes().startswith(
        b"-----BEGIN CERTIFICATE-----")
    assert "household page: https://" in out
    assert config.broker.password_file is not None
    assert config.broker.password_file.read_text().strip() == PASSWORDS["s-0001"]
    # The pairing code is shown once and stored only as its scrypt hash.
    pairing = pairing_code_in(out)
    assert pairing is not None and config.web.pairing_hash_file is not None
    assert pairing not in config.web.pairing_hash_file.read_text()
    assert load_pairing_hash(config.web.pairing_hash_file).verify(pairing)
    # Absolute paths in the file, so it does not matter where it is read from.
    raw = tomllib.loads(gw.config.read_text())
    assert Path(raw["device_key_file"]).is_absolute() and Path(raw["state_dir"]).is_absolute()
    assert [d["name"] for d in raw["devices"]] == ["inverter", "battery", "meter"]
    # The consent ledger: the catalogue's defaults plus the household's written consent.
    records = ledger_records(gw)
    installer = [r for r in records if r["collection_method"] == "installer"]
    assert len(installer) == 1 and installer[0]["reference"] == "FORM-2026-0042"
    assert installer[0]["tier"] == "30min" and installer[0]["purpose"] == "maintenance_watch"
    assert all(r["collection_method"] == "factory_default" for r in records[:-1])


async def test_the_report_proves_devices_and_uplink(gw: Gateway, broker: Mosquitto,
                                                    site: Site) -> None:
    code, out, err = await cli(*base_args(gw, broker, site))
    assert code == 0, err
    report = json.loads((gw.state / "commissioning" / "report.json").read_text())
    assert report["site"] == "s-0001"
    assert report["page"] == f"http://{load_config(gw.config).web.listen}/"
    assert report["uplink"]["ok"] is True
    steps = {s["name"]: s["status"] for s in report["uplink"]["steps"]}
    assert steps["publish on own topic"] == "pass"
    assert steps["publish elsewhere refused"] == "pass"
    inverter = report["devices"][0]
    assert inverter["ok"] and inverter["identity"]["model"] == site.inverter.device.identity.model
    assert "pv.energy" in inverter["readings"]
    assert "Denied PUBLISH from s-0001-doctor" in broker.log_text()
    assert report["keys"]["device"]["key_id"] == key_id_in(out)
    assert report["catalogue"]["version"]
    assert {(c["purpose"], c["recipient"]) for c in report["consent"]} >= {
        ("service", "company"), ("maintenance_watch", "installer")}
    page = (gw.state / "commissioning" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page.lower()
    assert "<link" not in page.lower() and "src=" not in page.lower()  # self-contained
    assert "uplink test: OK" in out


async def test_second_run_with_a_new_broker_keeps_keys_ledger_and_pairing(
        tmp_path: Path, gw: Gateway, broker: Mosquitto, site: Site) -> None:
    code, first, err = await cli(*base_args(gw, broker, site), *CONSENT)
    assert code == 0, err
    key_before = (gw.etc / "device.key").read_bytes()
    hash_before = (gw.etc / "pairing.hash").read_bytes()
    records_before = ledger_records(gw)
    moved = Mosquitto(tmp_path / "broker2", PASSWORDS)  # another host, another CA
    moved.start()
    try:
        code, second, err = await cli(
            "provision", "--config", str(gw.config), "--non-interactive", "--no-chown",
            "--broker-url", f"mqtts://127.0.0.1:{moved.port}", "--broker-ca", str(moved.ca))
    finally:
        moved.stop()
    assert code == 0, err
    assert (gw.etc / "device.key").read_bytes() == key_before
    assert key_id_in(second) == key_id_in(first)
    assert "device signing key: kept" in second
    assert (gw.etc / "pairing.hash").read_bytes() == hash_before
    assert pairing_code_in(second) is None  # not shown again: it was not changed
    assert ledger_records(gw) == records_before
    config = load_config(gw.config)
    assert config.broker.url.endswith(f":{moved.port}")
    assert config.broker.ca_file is not None
    assert config.broker.ca_file.read_bytes() == moved.ca.read_bytes()
    assert [d.name for d in config.devices] == ["inverter", "battery", "meter"]
    assert "uplink test: OK" in second  # against the new broker, with the kept credentials


async def test_rotate_keys_keeps_the_old_key_id_valid_until_a_stated_time(
        gw: Gateway, broker: Mosquitto, site: Site) -> None:
    code, first, err = await cli(*base_args(gw, broker, site))
    assert code == 0, err
    code, second, err = await cli("provision", "--config", str(gw.config), "--rotate-keys",
                                  "--key-grace-days", "3", "--non-interactive", "--no-chown")
    assert code == 0, err
    old, new = key_id_in(first), key_id_in(second)
    assert old != new
    assert new == keys.device_key_id(keys.load_device_key(gw.etc / "device.key").public_key())
    assert f"previous key id {old} stays valid at the backend until" in second
    [entry] = json.loads((gw.state / "keys" / "rotated.json").read_text())["keys"]
    assert entry["key_id"] == old and "PRIVATE" not in entry["public_key"]
    until = datetime.fromisoformat(entry["valid_until"])
    assert timedelta(days=2.9) < until - datetime.now(UTC) <= timedelta(days=3)
    assert mode(gw.etc / "device.key") == 0o600
    assert "uplink test: OK" in second  # the new key signs the test envelope


async def test_a_missing_input_names_the_flag_and_writes_nothing(
        gw: Gateway, broker: Mosquitto, site: Site) -> None:
    args = base_args(gw, broker, site)
    at = args.index("--site-id")
    del args[at:at + 2]
    code, _out, err = await cli(*args)
    assert code == 2
    assert "Site id is missing: give --site-id" in err
    assert not gw.etc.exists() and not gw.state.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--device", "pump=127.0.0.1:{dead}/1"], "device pump does not answer"),
    (["--broker-url", "http://broker"], "is malformed: expected mqtts://HOST:PORT"),
    (["--consent", "proposals:company=1d"], "give the paper form's reference with --consent-ref"),
    (["--consent", "proposals:company=raw", "--consent-ref", "F-1"], "consent:"),
    (["--recipient", "nobody={company}"], "recipient 'nobody' is not in the catalogue"),
    # What run refuses is refused here, before anything is written.
    (["--web-listen", "0.0.0.0:8080"], "page address '0.0.0.0:8080': 0.0.0.0 listens on every"),
    (["--state-dir", "/proc/hems-state"], "state_dir: /proc/hems-state: is under /proc"),
    (["--recipient", "company={company_private}"], "a private key, not a public key"),
])
async def test_bad_input_is_refused_before_anything_is_written(
        gw: Gateway, broker: Mosquitto, site: Site, extra: list[str], message: str) -> None:
    args = base_args(gw, broker, site)
    company = args[args.index("--recipient") + 1].split("=", 1)[1]
    private = gw.root / "company.key"
    private.write_bytes(keys.recipient_private_pem(keys.generate_recipient_key()))
    extra = [e.format(dead=free_port(), company=company, company_private=private)
             for e in extra]
    code, out, err = await cli(*args, *extra)
    assert code == 2, out
    assert message in err
    assert not gw.etc.exists() and not gw.state.exists()


async def test_devices_chosen_in_a_scan_are_added(gw: Gateway, broker: Mosquitto,
                                                  site: Site) -> None:
    saved = gw.root / "devices.json"
    code, _, err = await cli("scan", "--hosts", "127.0.0.1", "--port", str(site.meter.port),
                             "--units", "1", "--select", "all", "--save", str(saved))
    assert code == 0, err
    code, _, err = await cli(*base_args(gw, broker, site), "--devices-from", str(saved),
                               "--skip-uplink-test")
    assert code == 0, err
    config = load_config(gw.config)
    # The same meter found again is the configured one, not a second device.
    assert [d.name for d in config.devices] == ["inverter", "battery", "meter"]
    # Another device the scan calls "meter" is kept beside it.
    other = dict(json.loads(saved.read_text())["devices"][0], port=site.battery.port)
    saved.write_text(json.dumps({"devices": [other]}))
    code, _out, err = await cli("provision", "--config", str(gw.config), "--devices-from",
                               str(saved), "--no-device-check", "--non-interactive",
                               "--no-chown", "--skip-uplink-test")
    assert code == 0, err
    config = load_config(gw.config)
    assert [d.name for d in config.devices] == ["inverter", "battery", "meter", "meter-2"]


async def test_the_daemon_starts_from_what_provision_wrote_before_and_after_rotation(
        gw: Gateway, broker: Mosquitto, site: Site) -> None:
    code, _, err = await cli(*base_args(gw, broker, site), *CONSENT)
    assert code == 0, err
    messages, code, err = await run_daemon_until_ready(gw)
    assert any("READY=1" in m for m in messages), err
    assert code == 0, err
    # The ledger is signed by the device key; rotation re-signs it so the daemon still opens it.
    code, _, err = await cli("provision", "--config", str(gw.config), "--rotate-keys",
                             "--non-interactive", "--no-chown", "--skip-uplink-test")
    assert code == 0, err
    messages, code, err = await run_daemon_until_ready(gw)
    assert any("READY=1" in m for m in messages), err
    assert code == 0, err
    installer = [r for r in ledger_records(gw) if r["collection_method"] == "installer"]
    assert len(installer) == 1  # the daemon kept the household's written consent
