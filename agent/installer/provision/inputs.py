"""Gathering ``hems-agent provision``'s inputs: a flag (checked), else the existing
configuration, else a prompt on the terminal, else stop naming the missing flag.

Nothing is written here: the answers go into the raw configuration and the files to copy, which
become a plan that is applied at the very end.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agent.installer.provision.checks import (
    ConsentInput,
    ProvisionError,
    RecipientInput,
    check_ca_file,
    check_consent,
    check_recipient,
    nonempty,
)

if TYPE_CHECKING:
    from agent.installer.provision.prompts import Prompter

T = TypeVar("T")


def existing_config(path: Path) -> dict[str, Any]:
    from agent.config.model import read_toml
    from agent.errors import ConfigError

    if not path.exists():
        return {}
    try:
        return read_toml(path)
    except ConfigError as exc:
        raise ProvisionError(f"cannot read the existing configuration: {exc}; fix or "
                             "move it aside") from exc


def pick(flag: object, raw: dict[str, Any], key: str, check: Callable[[str], T],
         question: str, ask: Prompter | None, default: str | None = None) -> T | Any:
    """A flag (checked), else the existing value, else a prompt, else the default, else stop."""
    if flag is not None:
        try:
            return check(str(flag))
        except ValueError as exc:
            raise ProvisionError(str(exc)) from exc
    current = get_value(raw, key)
    if current is not None:
        return current
    if ask is not None:
        return ask.ask(question, check, default=default)
    if default is not None:
        return default
    raise ProvisionError(f"{question} is missing: give --{key.split('.')[-1].replace('_', '-')}")


def get_value(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def credentials(args: argparse.Namespace, broker: dict[str, Any], conf: Path,
                 files: dict[Path, bytes], private: dict[Path, bytes],
                 ask: Prompter | None) -> str | None:
    """Password or client certificate; returns a new password to write (None: keep)."""
    if args.client_cert is not None or args.client_key is not None:
        if args.client_cert is None or args.client_key is None:
            raise ProvisionError("--client-cert and --client-key go together")
        files[conf / "client.pem"] = read_input(args.client_cert, "client certificate")
        private[conf / "client.key"] = read_input(args.client_key, "client key")
        broker["client_cert"], broker["client_key"] = str(conf / "client.pem"), str(
            conf / "client.key")
    if args.broker_username is not None:
        broker["username"] = args.broker_username
    password = None
    if args.broker_password_file is not None:
        password = read_input(args.broker_password_file, "password file").decode().strip()
    elif ask is not None and "password_file" not in broker and "client_cert" not in broker:
        broker.setdefault("username", ask.ask("Broker user name", nonempty))
        password = ask.ask("Broker password", nonempty, secret=True)
    if password is not None:
        if not password:
            raise ProvisionError(f"{args.broker_password_file}: the password file is empty")
        broker["password_file"] = str(conf / "broker.password")
    if "username" not in broker and "client_cert" not in broker:
        raise ProvisionError("broker credentials are missing: give --broker-username and "
                             "--broker-password-file, or --client-cert and --client-key")
    return password


def ca_file(args: argparse.Namespace, broker: dict[str, Any], conf: Path,
            files: dict[Path, bytes], ask: Prompter | None) -> None:
    """The broker's CA, copied next to the configuration (pinned: never the system's CAs)."""
    if args.broker_ca is None and broker.get("ca_file"):
        return
    if args.broker_ca is not None:
        try:
            source = check_ca_file(args.broker_ca)
        except ValueError as exc:
            raise ProvisionError(str(exc)) from exc
    elif ask is not None:
        source = ask.ask("Broker CA file (PEM)", check_ca_file)
    else:
        raise ProvisionError("the broker's CA is missing: give --broker-ca FILE")
    files[conf / "broker-ca.pem"] = source.read_bytes()
    broker["ca_file"] = str(conf / "broker-ca.pem")


def read_input(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise ProvisionError(f"{what} {path}: {exc.strerror}") from exc


def recipients(args: argparse.Namespace, raw: dict[str, Any], conf: Path,
                files: dict[Path, bytes], ask: Prompter | None) -> tuple[RecipientInput, ...]:
    known = catalogue_recipients(raw)
    try:
        given = [check_recipient(text, known) for text in args.recipient]
    except ValueError as exc:
        raise ProvisionError(str(exc)) from exc
    if not given and not raw.get("recipients"):
        if ask is None:
            raise ProvisionError("no recipient key: give --recipient company=FILE (and the "
                                 "support centre's, installers'...)")
        given = ask.recipient(known)
        if not given:
            raise ProvisionError("at least one recipient key (the company's) is needed")
    entries = {r["id"]: r for r in raw.get("recipients", [])}
    for r in given:
        target = conf / "recipients" / f"{r.id}.pub"
        files[target] = r.data
        entries[r.id] = {**entries.get(r.id, {}), "id": r.id, "key_file": str(target),
                         "kem": r.kem}
    for text in args.recipient_name:
        rid, sep, name = text.partition("=")
        if not sep or rid not in entries or not name.strip():
            raise ProvisionError(f"--recipient-name {text!r}: expected ID=NAME for a recipient "
                                 "that has a key")
        entries[rid]["display_name"] = name.strip()
    raw["recipients"] = list(entries.values())
    return tuple(given)


def catalogue_recipients(raw: dict[str, Any]) -> frozenset[str]:
    from policy.catalogue import load_catalogue
    from policy.errors import PolicyError

    try:
        catalogue = load_catalogue(raw.get("catalogue"))
    except PolicyError as exc:
        raise ProvisionError(f"catalogue: {exc}") from exc
    return frozenset(r.id for p in catalogue.spec.purposes for r in p.recipients)


def consents(args: argparse.Namespace, raw: dict[str, Any]) -> tuple[ConsentInput, ...]:
    try:
        consents = tuple(check_consent(text) for text in args.consent)
    except ValueError as exc:
        raise ProvisionError(str(exc)) from exc
    if consents and not (args.consent_ref or "").strip():
        raise ProvisionError("--consent records the household's written consent: give the "
                             "paper form's reference with --consent-ref")
    return consents
