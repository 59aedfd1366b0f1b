"""``hems-agent provision``: set up a gateway in one repeatable run, ending with a report.

The run reads the existing configuration (if any), takes the installer's flags, asks on the
terminal for whatever required value is still missing, checks everything (recipient keys are
shown with their fingerprints, devices must answer, consents must fit the catalogue), and only
then writes: keys and secrets (0600, never printed), the configuration (absolute paths), the
consent ledger (factory defaults from the catalogue, plus any written consent the household gave
on paper, recorded with source ``installer`` and the form's reference). It is idempotent: a
second run changes only what it was given, keeps the device key unless ``--rotate-keys`` (the
old public key is kept in ``<state_dir>/keys/rotated.json`` with the time until which the
backend should still accept it) and never touches existing consent records.

Layout it writes (``<conf>`` is the configuration file's directory)::

    <conf>/agent.toml  device.key (0600)  device.pub  broker.password (0600)  broker-ca.pem
    <conf>/client.pem  client.key (0600)  pairing.hash (0600)  web.pem  web.key (0600)
    <conf>/recipients/<id>.pub
    <state>/consent-ledger.json  <state>/keys/rotated.json
    <state>/commissioning/report.{txt,json,html}
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import provision_inputs as inputs
from agent.config import DEFAULT_PATH
from agent.paths import ROTATED_KEYS_FILE
from agent.provision_checks import (
    ConsentInput,
    ProvisionError,
    RecipientInput,
    check_broker_url,
    check_listen,
    check_site_id,
    check_timezone,
    fingerprint,
)
from agent.provision_devices import devices
from agent.provision_prompts import Prompter

if TYPE_CHECKING:
    from agent.config import AgentConfig

DEFAULT_STATE = Path("/var/lib/hems-agent")
DEFAULT_OWNER = "hems-agent"
PAIRING_DIGITS = 10


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything the run will write, decided and checked before anything is written."""

    path: Path
    raw: dict[str, Any]
    password: str | None
    files: dict[Path, bytes] = field(default_factory=dict)  # public files
    private: dict[Path, bytes] = field(default_factory=dict)  # 0600 files
    recipients: tuple[RecipientInput, ...] = ()
    consents: tuple[ConsentInput, ...] = ()
    reference: str | None = None
    rotate: bool = False
    grace: timedelta = timedelta(days=7)
    new_pairing: bool = False
    web_tls: bool = False
    owner: str | None = None

    @property
    def conf_dir(self) -> Path:
        return self.path.parent


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
    from agent.report import after_provision

    print_outcome(outcome)
    return after_provision(plan.path, test_uplink=not args.skip_uplink_test)


# -- the plan ------------------------------------------------------------------------------


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
    devices(args, raw, ask)
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

    from agent.config import AgentConfig, _resolve_paths, format_validation_error
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
          f"{len(raw.get('devices', []))} device(s)")
    for r in plan.recipients:
        print(f"recipient {r.id} ({r.kem}) fingerprint {fingerprint(r.key_id)}")
    for c in plan.consents:
        print(f"written consent to record: {c.purpose} → {c.recipient} at {c.tier} "
              f"(form {plan.reference})")


def apply_plan(plan: Plan) -> dict[str, Any]:
    """Write everything (see the module docstring); returns what the installer must see."""
    from agent import keys
    from agent.config import load_config
    from agent.errors import AgentError

    state = Path(plan.raw["state_dir"])
    try:
        for directory in (plan.conf_dir, plan.conf_dir / "recipients", state / "keys"):
            directory.mkdir(parents=True, exist_ok=True)
        state.chmod(0o700)
        outcome = _device_key(plan, Path(plan.raw["device_key_file"]), state)
        for target, data in plan.files.items():
            _write_public(target, data)
        for target, data in plan.private.items():
            keys.write_private_file(target, data)
        if plan.password is not None:
            keys.write_private_file(Path(plan.raw["broker"]["password_file"]),
                                    plan.password.encode() + b"\n")
        if plan.new_pairing:
            outcome["pairing_code"] = _pairing(Path(plan.raw["web"]["pairing_hash_file"]))
        if plan.web_tls and not Path(plan.raw["web"]["tls_key"]).exists():
            _page_certificate(plan.raw["web"])
        _write_public(plan.path, to_toml(plan.raw).encode("utf-8"))
        config = load_config(plan.path)
        outcome["consent"] = _ledger(plan, config)
        _chown(plan, config)
    except (AgentError, OSError) as exc:
        raise ProvisionError(f"writing failed: {exc}") from exc
    outcome["config"] = str(plan.path)
    return outcome


def _device_key(plan: Plan, path: Path, state: Path) -> dict[str, Any]:
    """Keep, create or rotate the device signing key; the private half is never shown."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from agent import keys

    outcome: dict[str, Any] = {"device_key": "kept"}
    if not path.exists():
        outcome["device_key"] = "generated"
    elif plan.rotate:
        old = keys.load_device_key(path).public_key()
        now = datetime.now(UTC).replace(microsecond=0)
        entry = {"key_id": keys.device_key_id(old), "public_key": keys.device_public_pem(old)
                 .decode(), "retired": now.isoformat(),
                 "valid_until": (now + plan.grace).isoformat()}
        log_path = state / ROTATED_KEYS_FILE
        history = json.loads(log_path.read_text()) if log_path.exists() else {"keys": []}
        history["keys"].append(entry)
        new = ed25519.Ed25519PrivateKey.generate()
        # The retired public key is recorded first: consent records it signed keep verifying
        # (agent.keys.device_history_verifier), so the ledger itself is never rewritten.
        _write_public(log_path, json.dumps(history, indent=2).encode() + b"\n")
        keys.write_private_file(path, keys.device_private_pem(new))
        outcome.update(device_key="rotated", rotated=entry)
    key = keys.ensure_device_key(path).public_key()
    pem = keys.device_public_pem(key)
    _write_public(path.with_suffix(".pub"), pem)
    outcome.update(device_public_pem=pem.decode(), device_key_id=keys.device_key_id(key))
    return outcome


def _pairing(path: Path) -> str:
    from agent.keys import write_private_file
    from agent.web.security import hash_pairing_code

    code = new_pairing_code()
    write_private_file(path, hash_pairing_code(code).encode("ascii") + b"\n")
    return code


def _page_certificate(web: dict[str, Any]) -> None:
    """A self-signed certificate for the page's LAN address (the household accepts it once)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from agent.keys import write_private_file

    address = ipaddress.ip_address(web["listen"].rpartition(":")[0].strip("[]"))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hems-agent household page")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(address)]), critical=False)
            .sign(key, hashes.SHA256()))
    write_private_file(Path(web["tls_key"]), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    _write_public(Path(web["tls_cert"]), cert.public_bytes(serialization.Encoding.PEM))


def _ledger(plan: Plan, config: AgentConfig) -> list[str]:
    """Open (or create, with the catalogue's defaults) the ledger; record written consents."""
    from agent.catalogue_store import newest_catalogue
    from agent.keys import device_history_verifier, load_device_key, retired_device_keys
    from agent.paths import LEDGER_FILE
    from policy.catalogue import load_catalogue
    from policy.ledger import Ledger
    from policy.tiers import parse

    now = datetime.now(UTC)
    device = load_device_key(config.device_key_file)
    state_dir = config.state_dir
    verify = device_history_verifier(device.public_key(), retired_device_keys(state_dir))
    catalogue = newest_catalogue(load_catalogue(config.catalogue), state_dir)
    ledger = Ledger.open(state_dir / LEDGER_FILE, catalogue, config.site_id, now,
                         sign=device.sign, verify=verify)
    recorded = []
    try:
        state = ledger.state()
        for c in plan.consents:
            current = state.get((c.purpose, c.recipient))
            if (current is not None and current.tier == parse(c.tier)
                    and current.data.get("reference") == plan.reference):
                continue  # the same form recorded by an earlier run
            ledger.set_grant(c.purpose, c.recipient, c.tier, source="installer",
                             reference=plan.reference, now=now)
            recorded.append(f"{c.purpose}:{c.recipient}={c.tier}")
    finally:
        ledger.close()
    return recorded


def _chown(plan: Plan, config: AgentConfig) -> None:
    ids = owner_ids(plan.owner)
    if ids is None:
        return
    for secret in config.secret_files():
        os.chown(secret, *ids)
    for root, dirs, names in os.walk(config.state_dir):
        for name in [*dirs, *names]:
            os.chown(Path(root) / name, *ids)
    os.chown(config.state_dir, *ids)


def _write_public(path: Path, data: bytes) -> None:
    """Atomic write, mode 0644 (configuration, public keys, certificates)."""
    from agent.keys import write_file_atomic

    write_file_atomic(path, data, mode=0o644)


def to_toml(raw: dict[str, Any]) -> str:
    """The configuration as TOML: scalars first, then tables, then arrays of tables."""
    lines = ["# Written by hems-agent provision; re-run it to change a setting (it keeps the",
             "# rest). Relative paths are relative to this file's directory."]
    lines += [f"{k} = {_scalar(v)}" for k, v in raw.items()
              if not isinstance(v, dict | list) and v is not None]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]", *(f"{kk} = {_scalar(vv)}" for kk, vv in v.items()
                                      if vv is not None)]
    for k, v in raw.items():
        if isinstance(v, list):
            for item in v:
                lines += ["", f"[[{k}]]", *(f"{kk} = {_scalar(vv)}" for kk, vv in item.items()
                                            if vv is not None)]
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


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


def new_pairing_code() -> str:
    """Digits only: easy to type on a phone and to read out over the telephone."""
    return "".join(secrets.choice("0123456789") for _ in range(PAIRING_DIGITS))


def owner_ids(owner: str | None) -> tuple[int, int] | None:
    """(uid, gid) to chown secrets and state to, when running as root; None otherwise.

    ``owner`` None: no chown; ``""``: the service user if it exists."""
    import pwd

    if os.geteuid() != 0 or owner is None:
        return None
    try:
        entry = pwd.getpwnam(owner or DEFAULT_OWNER)
    except KeyError:
        if owner:
            raise ProvisionError(f"--owner {owner}: no such user") from None
        return None
    return entry.pw_uid, entry.pw_gid
