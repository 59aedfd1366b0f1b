"""``hems-receiver-admin``: the backend's side of what ``hems-receiver --database`` stores.

Examples::

    hems-receiver-admin --database postgresql://backend@db/hems migrate
    hems-receiver-admin --database postgresql://backend@db/hems deletions
    hems-receiver-admin --database postgresql://backend@db/hems acted 17 --actor ops-tanaka \\
        --note "CRM and billing rows erased"

``deletions`` lists the deletion requests still in state ``received`` (one JSON object per
line: id, site, seq, requested_at, scope, stored_at); ``acted`` records that the backend acted
on one (state ``acted``, with the time and the actor). The same in SQL is in docs/fleet.md.
The database URL may also come from ``HEMS_RECEIVER_DATABASE``; a password is best kept in
``~/.pgpass`` or ``PGPASSWORD``, not on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from agent.errors import AgentError, ReceiverError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hems-receiver-admin",
                                description="Schema and deletion requests of hems-receiver's "
                                "PostgreSQL store.")
    p.add_argument("--database", default=os.environ.get("HEMS_RECEIVER_DATABASE"),
                   help="postgresql://USER@HOST[:PORT]/DBNAME (default: $HEMS_RECEIVER_DATABASE)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the schema migrations this version ships")
    listing = sub.add_parser("deletions", help="list deletion requests not yet acted on")
    listing.add_argument("--all", action="store_true", help="include those already acted on")
    acted = sub.add_parser("acted", help="record that the backend acted on a deletion request")
    acted.add_argument("id", type=int, help="the request's id (from `deletions`)")
    acted.add_argument("--actor", required=True, help="who acted (a person or a job name)")
    acted.add_argument("--note", help="what was done")
    return p


async def _run(args: argparse.Namespace) -> list[str]:
    from agent.cloud.receiver_db import open_connection

    conn = await open_connection(args.database)
    try:
        if args.command == "migrate":
            cur = await conn.execute("SELECT max(version) FROM schema_version")
            row = await cur.fetchone()
            return [f"schema version {row[0] if row else 0}"]
        if args.command == "deletions":
            cur = await conn.execute(
                "SELECT id, site, seq, requested_at, scope, stored_at, state, acted_at, acted_by"
                " FROM deletion_request WHERE %s OR state = 'received' ORDER BY id",
                (args.all,))
            names = [c.name for c in cur.description or []]
            return [json.dumps(_jsonable(dict(zip(names, r, strict=True))), sort_keys=True)
                    for r in await cur.fetchall()]
        cur = await conn.execute(
            "UPDATE deletion_request SET state = 'acted', acted_at = now(), acted_by = %s, "
            "note = %s WHERE id = %s AND state = 'received' RETURNING id",
            (args.actor, args.note, args.id))
        if await cur.fetchone() is None:
            raise ReceiverError(f"deletion request {args.id}: no such request still in state "
                                "received")
        return [f"deletion request {args.id}: acted"]
    finally:
        await conn.close()


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.database:
        print("hems-receiver-admin: give --database or set HEMS_RECEIVER_DATABASE",
              file=sys.stderr)
        return 2
    try:
        for line in asyncio.run(_run(args)):
            sys.stdout.write(line + "\n")
    except AgentError as exc:
        print(f"hems-receiver-admin: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
