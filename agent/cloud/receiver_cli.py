"""``hems-receiver``: the reference receiver as a console program.

Example::

    hems-receiver --broker mqtts://broker.example:8883 --ca ca.pem --username receiver \\
        --password-file receiver.pass --device-keys devices.json \\
        --recipient-key company.key --output accepted.jsonl

With ``--database postgresql://...`` (or ``HEMS_RECEIVER_DATABASE``) accepted envelopes go to
PostgreSQL instead (agent/cloud/receiver_db.py, docs/fleet.md); ``--output`` and ``--replay-db`` do
not apply then.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agent.errors import AgentError, ReceiverError

if TYPE_CHECKING:
    from agent.uplink.session import BrokerConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hems-receiver",
        description="Receive gateway uploads: verify, decrypt, dedupe, check each against its "
        "purpose, and write one JSON line per accepted envelope.")
    p.add_argument("--broker", required=True, help="mqtts://HOST[:PORT] (default port 8883)")
    p.add_argument("--ca", required=True, type=Path, help="the only CA trusted for the broker")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-file", type=Path, help="file holding the broker password")
    p.add_argument("--client-cert", type=Path, help="client certificate (PEM)")
    p.add_argument("--client-key", type=Path, help="client certificate key (PEM)")
    p.add_argument("--client-id", help="MQTT client id (default: hems-receiver-<host>-<group>)")
    p.add_argument("--group", default="hems", help="shared subscription group (default: hems)")
    p.add_argument("--no-share", action="store_true",
                   help="subscribe without a shared subscription (one receiver only)")
    p.add_argument("--mqtt-version", choices=["5", "3.1.1"], default="5")
    p.add_argument("--device-keys", required=True, type=Path,
                   help="JSON file of site id -> device public key, or a directory of <site>.pem")
    p.add_argument("--recipient-key", required=True, type=Path, action="append",
                   help="recipient private key file (repeat for several keys)")
    p.add_argument("--catalogue", type=Path, help="purpose catalogue (default: the factory one)")
    p.add_argument("--replay-db", type=Path, default=Path("hems-receiver-seen.db"),
                   help="sqlite file remembering accepted (site, seq) pairs")
    p.add_argument("--output", default="-", help="JSON lines file to append to, or - for stdout")
    p.add_argument("--database", default=os.environ.get("HEMS_RECEIVER_DATABASE"),
                   help="store into PostgreSQL, postgresql://USER@HOST[:PORT]/DBNAME (default: "
                   "$HEMS_RECEIVER_DATABASE; keep a password in ~/.pgpass or PGPASSWORD); "
                   "needs the 'cloud' extra")
    p.add_argument("--batch", type=int, default=200,
                   help="with --database: most messages stored per transaction (default 200)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def broker_config(args: argparse.Namespace) -> BrokerConfig:
    """Translate the command line into a :class:`agent.uplink.session.BrokerConfig`."""
    from agent.uplink.session import BrokerConfig, endpoint, read_password

    try:
        host, port = endpoint(args.broker)
    except ValueError:
        raise ReceiverError(f"--broker {args.broker!r}: expected mqtts://HOST[:PORT]") from None
    password = None
    if args.password_file is not None:
        try:
            password = read_password(args.password_file)
        except OSError as exc:
            raise ReceiverError(f"--password-file: {exc}") from exc
    client_id = args.client_id or f"hems-receiver-{socket.gethostname()}-{args.group}"
    return BrokerConfig(host=host, port=port, ca_file=args.ca,
                        client_id=client_id[:64], username=args.username, password=password,
                        client_cert=args.client_cert, client_key=args.client_key,
                        protocol=args.mqtt_version)


async def _run(args: argparse.Namespace, output: IO[str]) -> None:
    from agent.cloud.receiver import (
        CatalogueRules,
        Receiver,
        ReplayStore,
        load_device_registry,
        load_recipient_keys,
    )
    config = broker_config(args)
    if args.database:
        await _run_database(args, config)
        return
    receiver = Receiver(device_keys=load_device_registry(args.device_keys),
                        recipient_keys=load_recipient_keys(args.recipient_key),
                        rules=CatalogueRules(args.catalogue), replay=ReplayStore(args.replay_db),
                        output=output)
    await receiver.run(config, None if args.no_share else args.group)


async def _run_database(args: argparse.Namespace, config: BrokerConfig) -> None:
    from agent.cloud.receiver import CatalogueRules, load_device_registry, load_recipient_keys
    try:
        from agent.cloud.receiver_db import DbReceiver, PgStore
    except ImportError as exc:
        raise ReceiverError("--database needs psycopg: pip install 'hems-agent[cloud]'") from exc
    store = PgStore(args.database, config.client_id)
    receiver = DbReceiver(store=store, batch=args.batch,
                          device_keys=load_device_registry(args.device_keys),
                          recipient_keys=load_recipient_keys(args.recipient_key),
                          rules=CatalogueRules(args.catalogue))
    try:
        await store.connect()  # migrates; a wrong URL or schema fails here, before the broker
        await receiver.run(config, None if args.no_share else args.group)
    finally:
        await store.close()


async def _until_stopped(work: Coroutine[Any, Any, None]) -> int:
    """Run ``work`` until SIGINT or SIGTERM; the exit status: 130 after SIGINT, 0 after
    SIGTERM (a service manager's stop). The handlers are set here, not inherited: a receiver
    started in the background of a script or by a manager that ignores SIGINT still stops on
    it."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []

    def stop(signum: signal.Signals) -> None:
        if not received:
            received.append(signum)
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        await work
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 130 if received == [signal.SIGINT] else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.database and args.output != "-":
        print("hems-receiver: --output and --database exclude each other", file=sys.stderr)
        return 2
    if args.batch < 1:
        print("hems-receiver: --batch must be 1 or more", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # `kill -USR1 <pid>` writes every thread's stack to stderr: what a receiver that does not
    # stop, or stops consuming, is waiting on (no envelope content is on a stack line).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        if args.output == "-":
            return asyncio.run(_until_stopped(_run(args, sys.stdout)))
        fd = os.open(args.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(fd, "a", encoding="utf-8") as out:
            return asyncio.run(_until_stopped(_run(args, out)))
    except KeyboardInterrupt:
        return 130
    except (AgentError, OSError) as exc:
        print(f"hems-receiver: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
