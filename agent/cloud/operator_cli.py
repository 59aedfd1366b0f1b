"""``hems-operator``: make operator keys, sign commands for a gateway and send them.

Examples::

    hems-operator keygen ops-2026a.key ops-2026a.pub
    hems-operator sign --key ops-2026a.key --key-id ops-2026a --site site-0001 \\
        --out cmd.bin suspend --purpose improvement --reference SR-1234
    hems-operator send --key ops-2026a.key --key-id ops-2026a --site site-0001 \\
        --broker mqtts://broker.example:8883 --ca ca.pem --username operator \\
        --password-file operator.pass grant-request --purpose support \\
        --recipient support_centre --tier raw --hours 24 --reference SR-1234

The gateway answers with a signed ``event`` envelope (purpose ``service``) sealed to the
company's key: ``hems-receiver`` writes it out like any other upload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.errors import AgentError

# CLI name -> (wire type, argument adder)
_TYPES: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def _type(name: str, wire: str) -> Callable[[Callable[[argparse.ArgumentParser], None]],
                                             Callable[[argparse.ArgumentParser], None]]:
    def register(add: Callable[[argparse.ArgumentParser], None]
                 ) -> Callable[[argparse.ArgumentParser], None]:
        _TYPES[name] = (wire, add)
        return add
    return register


def _reference(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True,
                   help="the support centre's request reference (recorded in the ledger)")


@_type("catalogue-update", "catalogue_update")
def _catalogue(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", required=True, type=Path, help="the new catalogue (JSON)")


@_type("suspend", "suspend")
def _suspend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--purpose", required=True, help="purpose id, or 'all' (every optional use)")
    p.add_argument("--recipient", help="only this recipient of the purpose")
    _reference(p)


_type("stop-third-party", "stop_third_party")(_reference)
_type("export", "export")(_reference)
_type("delete", "delete")(_reference)


@_type("grant-request", "grant_request")
def _grant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--purpose", required=True)
    p.add_argument("--recipient", required=True)
    p.add_argument("--tier", required=True)
    p.add_argument("--hours", required=True, type=int, help="how long the grant would last")
    _reference(p)


@_type("diagnostics", "diagnostics")
def _diagnostics(p: argparse.ArgumentParser) -> None:
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hems-operator",
                                description="Operator keys and signed gateway commands.")
    sub = p.add_subparsers(dest="action", required=True)
    keygen = sub.add_parser("keygen", help="write a new Ed25519 operator key pair")
    keygen.add_argument("private", type=Path, help="private key file (written mode 0600)")
    keygen.add_argument("public", type=Path, help="public key file (pin it on gateways)")
    sign = sub.add_parser("sign", help="sign a command and write it to a file")
    send = sub.add_parser("send", help="sign a command and publish it to the gateway")
    for action in (sign, send):
        action.add_argument("--key", required=True, type=Path, help="operator private key")
        action.add_argument("--key-id", required=True, help="the id the gateways pinned it as")
        action.add_argument("--site", required=True, help="the gateway's site id")
        action.add_argument("--ttl", type=int, default=3600,
                            help="seconds the command stays valid (default 3600)")
        action.add_argument("--out", type=Path, required=action is sign,
                            help="write the signed command here")
    send.add_argument("--broker", required=True, help="mqtts://HOST[:PORT]")
    send.add_argument("--ca", required=True, type=Path, help="the only CA trusted")
    send.add_argument("--username", help="broker user name")
    send.add_argument("--password-file", type=Path, help="file holding the broker password")
    send.add_argument("--client-id", default="hems-operator")
    for action in (sign, send):
        types = action.add_subparsers(dest="type", required=True)
        for name, (_, add) in _TYPES.items():
            add(types.add_parser(name))
    return p


def command_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``args`` object of the command the command line describes."""
    wire = _TYPES[args.type][0]
    if wire == "catalogue_update":
        try:
            return {"catalogue": json.loads(args.file.read_text(encoding="utf-8"))}
        except (OSError, ValueError) as exc:
            raise AgentError(f"--file {args.file}: {exc}") from exc
    names = ("purpose", "recipient", "tier", "hours", "reference")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def signed_command(args: argparse.Namespace, now: float | None = None) -> tuple[str, bytes]:
    """(command id, signed bytes) for the command line."""
    from agent.wire.commands import encode, new_command
    from agent.wire.keys import load_device_key

    key = load_device_key(args.key)
    command = new_command(site=args.site, key=args.key_id, type=_TYPES[args.type][0],
                          args=command_args(args), now=time.time() if now is None else now,
                          ttl=args.ttl)
    return command.id, encode(command, key)


def keygen(private: Path, public: Path) -> str:
    """Write a key pair; returns its fingerprint (hex of SHA-256 of the raw public key)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from agent.wire.keys import (
        device_key_id,
        device_private_pem,
        device_public_pem,
        write_private_file,
    )

    if private.exists():
        raise AgentError(f"{private} exists; refusing to overwrite an operator key")
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_file(private, device_private_pem(key))
    public.write_bytes(device_public_pem(key.public_key()))
    return device_key_id(key.public_key())


async def publish(args: argparse.Namespace, payload: bytes) -> None:
    """Publish one command with QoS 1 and wait for its acknowledgement."""
    from agent.errors import UplinkError
    from agent.uplink.session import BrokerConfig, connect, endpoint, read_password, tls_context
    from agent.wire.topics import control_topic

    try:
        host, port = endpoint(args.broker)
    except ValueError:
        raise AgentError(f"--broker {args.broker!r}: expected mqtts://HOST[:PORT]") from None
    password = None
    if args.password_file is not None:
        try:
            password = read_password(args.password_file)
        except OSError as exc:
            raise AgentError(f"--password-file: {exc}") from exc
    config = BrokerConfig(host=host, port=port, ca_file=args.ca,
                          client_id=args.client_id, username=args.username, password=password,
                          session_expiry=0)
    async with connect(config, tls_context(config)) as session:
        try:
            await session.publish(control_topic(args.site), payload, qos=1)
        except UplinkError as exc:
            raise AgentError(f"publish failed: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.action == "keygen":
            print(f"operator key written; fingerprint {keygen(args.private, args.public)}")
            return 0
        command_id, payload = signed_command(args)
        if args.out is not None:
            args.out.write_bytes(payload)
        if args.action == "send":
            asyncio.run(publish(args, payload))
        print(f"command {command_id} ({len(payload)} bytes) "
              f"{'sent' if args.action == 'send' else 'signed'}")
    except (AgentError, OSError) as exc:
        print(f"hems-operator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
