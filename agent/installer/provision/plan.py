"""``hems-agent provision``: set up a gateway in one repeatable run, ending with a report.

The run reads the existing configuration (if any), takes the installer's flags, asks on the
terminal for whatever required value is still missing, checks everything (recipient keys are
shown with their fingerprints, devices must answer — Modbus, ECHONET Lite
(:mod:`agent.installer.provision.echonet`) and the B-route smart meter, which is joined once —
consents must fit the catalogue), and only then writes: keys and secrets (0600, never
printed), the configuration (absolute paths), the consent ledger (factory defaults from the
catalogue, plus any written consent the household gave on paper, recorded with source
``installer`` and the form's reference). It is idempotent: a
second run changes only what it was given, keeps the device key unless ``--rotate-keys`` (the
old public key is kept in ``<state_dir>/keys/rotated.json`` with the time until which the
backend should still accept it) and never touches existing consent records.

Layout it writes (``<conf>`` is the configuration file's directory)::

    <conf>/agent.toml  device.key (0600)  device.pub  broker.password (0600)  broker-ca.pem
    <conf>/client.pem  client.key (0600)  pairing.hash (0600)  web.pem  web.key (0600)
    <conf>/recipients/<id>.pub  broute.id (0600)  broute.password (0600)
    <state>/consent-ledger.json  <state>/keys/rotated.json
    <state>/commissioning/report.{txt,json,html}
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config.model import DEFAULT_PATH
from agent.installer.provision import echonet, inputs
from agent.installer.provision.checks import (
    ProvisionError,
    check_broker_url,
    check_listen,
    check_site_id,
    check_timezone,
    fingerprint,
)
from agent.installer.provision.devices import devices
from agent.installer.provision.prompts import Prompter
from agent.installer.provision.write import DEFAULT_OWNER, Plan, apply_plan

DEFAULT_STATE = Path("/var/lib/hems-agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", type=Path, default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    add("--state-dir", type=Path, help=f"state directory (default {DEFAULT_STATE})")
    add("--site-id", help="the site's pseudonym, as registered at the backend")
    add("--broker-url", help="mqtts://HOST:PORT")
    add("--broker-ca", help="PEM file of the CA that signed the broker's certificate")
    add("--broker-username", help="broker user name (usually the site id)")
    add("--broker-password-file", type=Path, help="file holding the broker password")
    add("--client-cert", type=Path, help="client certificate PEM (instead of a password)")
    add("--client-key", type=Path, help="client certificate's private key PEM")
    add("--recipient", action="append", default=[], metavar="ID=FILE",
        help="a recipient's public key (company, support_centre, installer, ...); repeat")
    add("--recipient-name", action="append", default=[], metavar="ID=NAME",
        help="the real company behind a recipient (e.g. installer=ACME Solar), shown on the page")
    add("--timezone", help="the household's time zone (default Asia/Tokyo)")
    add("--web-listen", metavar="ADDR:PORT", help="LAN address of the household page")
    add("--web-tls", action="store_true", help="make a TLS certificate for the page")
    add("--device", action="append", default=[], metavar="NAME=HOST[:PORT][/UNIT]",
        help="a Modbus device (NAME=/dev/ttyUSB0/UNIT for RS-485); repeat")
    add("--devices-from", type=Path, help="JSON written by hems-agent scan --save")
    add("--baud", type=int, default=9600, help="RS-485 baud rate for new lines (default 9600)")
    add("--no-device-check", action="store_true", help="accept devices that do not answer")
    echonet.add_arguments(parser)
    add("--consent", action="append", default=[], metavar="PURPOSE:RECIPIENT=TIER",
        help="record the household's written consent (needs --consent-ref)")
    add("--consent-ref", help="reference of the signed paper consent form")
    add("--metrics-listen", metavar="ADDR:PORT", help="the local metrics endpoint")
    add("--clock-check", choices=("adjtimex", "timedatectl", "none"))
    add("--rotate-keys", action="store_true", help="replace the device signing key")
    add("--key-grace-days", type=float, default=7.0,
        help="days the backend keeps accepting the old key after --rotate-keys (default 7)")
    add("--new-pairing-code", action="store_true", help="replace the household pairing code")
    add("--owner", help=f"user owning secrets and state when run as root (default "
                        f"{DEFAULT_OWNER} if it exists)")
    add("--no-chown", action="store_true", help="leave ownership as it is, even as root")
    add("--non-interactive", action="store_true", help="never ask; fail naming what is missing")
    add("--yes", action="store_true", help="write without asking for confirmation")
    add("--skip-uplink-test", action="store_true", help="do not test the broker in the report")


def main(args: argparse.Namespace) -> int:
    interactive = not args.non_interactive and sys.stdin.isatty()
    prompter = Prompter() if interactive else None
    try:
        plan = make_plan(args, prompter)
        show_plan(plan)
        if prompter is not None and not args.yes and not prompter.confirm("Write all this?"):
            print("nothing written")
            return 1
        outcome = apply_plan(plan)
    except ProvisionError as exc:
        print(f"hems-agent provision: {exc}", file=sys.stderr)
        return 2
    from agent.installer.report import after_provision

    print_outcome(outcome)
    return after_provision(plan.path, test_uplink=not args.skip_uplink_test)


def make_plan(args: argparse.Namespace, ask: Prompter | None) -> Plan:
    """Merge flags, the existing configuration and answers into a checked plan."""
    path = args.config.expanduser().absolute()
    conf = path.parent
    raw = inputs.existing_config(path)
    raw["site_id"] = inputs.pick(args.site_id, raw, "site_id", check_site_id, "Site id", ask)
    raw["timezone"] = inputs.pick(args.timezone, raw, "timezone", check_timezone, "Time zone",
                                  ask, "Asia/Tokyo")
    raw["state_dir"] = str((args.state_dir or Path(raw.get("state_dir") or DEFAULT_STATE))
                           .expanduser().absolute())
    raw.setdefault("device_key_file", str(conf / "device.key"))
    if args.clock_check is not None:
        raw.setdefault("clock", {})["sync_check"] = args.clock_check
    if args.metrics_listen is not None:
        raw["metrics_listen"] = args.metrics_listen
    broker = raw.setdefault("broker", {})
    broker["url"] = inputs.pick(args.broker_url, raw, "broker.url", check_broker_url,
                                "Broker URL (mqtts://HOST:PORT)", ask)
    files: dict[Path, bytes] = {}
    private: dict[Path, bytes] = {}
    inputs.ca_file(args, broker, conf, files, ask)
    password = inputs.credentials(args, broker, conf, files, private, ask)
    web = _web(args, raw, conf, ask)
    recipients = inputs.recipients(args, raw, conf, files, ask)
    # Devices of any protocol given (or configured): ask for none; else ask for each kind.
    given = bool(args.device or args.devices_from or args.echonet_scan or args.echonet_device
                 or args.broute_device or raw.get("devices") or raw.get("echonet_devices")
                 or raw.get("broute"))
    devices(args, raw, ask, prompt=not given)
    echonet.echonet_devices(args, raw, None if given and not args.echonet_scan else ask)
    echonet.broute(args, raw, conf, private, None if given and not args.broute_device else ask)
    plan = Plan(path=path, raw=raw, password=password, files=files, private=private,
                recipients=recipients, consents=inputs.consents(args, raw),
                reference=args.consent_ref, rotate=args.rotate_keys,
                grace=timedelta(days=args.key_grace_days),
                new_pairing=args.new_pairing_code or not Path(web["pairing_hash_file"]).exists(),
                web_tls=args.web_tls, owner=None if args.no_chown else args.owner or "")
    _validate(plan)
    return plan


def _web(args: argparse.Namespace, raw: dict[str, Any], conf: Path,
         ask: Prompter | None) -> dict[str, Any]:
    web: dict[str, Any] = raw.setdefault("web", {})
    web["listen"] = inputs.pick(args.web_listen, raw, "web.listen", check_listen,
                                "Household page address (LAN ADDRESS:PORT)", ask,
                                "127.0.0.1:8080")
    web["pairing_hash_file"] = str(conf / "pairing.hash")
    if args.web_tls:
        web["tls_cert"], web["tls_key"] = str(conf / "web.pem"), str(conf / "web.key")
    return web


def _validate(plan: Plan) -> None:
    """The configuration as it will be written must load; consents must fit the catalogue."""
    import tempfile

    from pydantic import ValidationError

    from agent.config.model import AgentConfig, _resolve_paths, format_validation_error
    from policy.catalogue import load_catalogue
    from policy.errors import PolicyError
    from policy.ledger import Ledger

    try:
        AgentConfig.model_validate(_resolve_paths(plan.raw, plan.conf_dir))
    except ValidationError as exc:
        raise ProvisionError(format_validation_error(plan.path, exc)) from exc
    if not plan.consents:
        return
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as scratch:  # a dry run on a throw-away ledger
        try:
            ledger = Ledger.open(Path(scratch) / "l.json", load_catalogue(plan.raw.get(
                "catalogue")), plan.raw["site_id"], now)
            for c in plan.consents:
                ledger.set_grant(c.purpose, c.recipient, c.tier, source="installer",
                                 reference=plan.reference, now=now)
            ledger.close()
        except PolicyError as exc:
            raise ProvisionError(f"consent: {exc}") from exc


def show_plan(plan: Plan) -> None:
    """What will be written, with each new recipient key's fingerprint to compare."""
    raw = plan.raw
    print(f"site {raw['site_id']}, broker {raw['broker']['url']}, page {raw['web']['listen']}, "
          f"{len(raw.get('devices', []))} Modbus device(s), "
          f"{len(raw.get('echonet_devices', []))} ECHONET Lite device(s), "
          + ("B-route smart meter on " + raw["broute"]["device"] if raw.get("broute")
             else "no B-route smart meter"))
    for r in plan.recipients:
        print(f"recipient {r.id} ({r.kem}) fingerprint {fingerprint(r.key_id)}")
    for c in plan.consents:
        print(f"written consent to record: {c.purpose} → {c.recipient} at {c.tier} "
              f"(form {plan.reference})")


def print_outcome(outcome: dict[str, Any]) -> None:
    print(f"device signing key: {outcome['device_key']}")
    print(outcome["device_public_pem"].rstrip())
    print(f"  key id {outcome['device_key_id']} (fingerprint "
          f"{fingerprint(outcome['device_key_id'])}): register it at the backend")
    if outcome.get("rotated"):
        old = outcome["rotated"]
        print(f"  previous key id {old['key_id']} stays valid at the backend until "
              f"{old['valid_until']}; tell the backend team both ids")
    if outcome.get("pairing_code"):
        print(f"household pairing code (shown once, write it on the household's sheet): "
              f"{outcome['pairing_code']}")
    print(f"configuration written and valid: {outcome['config']}")
