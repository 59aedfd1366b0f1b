"""hems-receiver's PostgreSQL store alone: envelopes stored per second by one connection in
batches of 200 (the ``--batch`` default), and bytes on disk per envelope and per row once the
tables hold a realistic number of rows (``pg_total_relation_size`` over every partition,
indexes included, after VACUUM). No broker and no cryptography: already opened service
releases (30-minute windows, five records each, as bench/fleet.py seals them) go straight to
:meth:`agent.cloud.receiver_db.PgStore.store`.

``BENCH_STORE_ENVELOPES`` changes the count (default 50,000: 1,000 homes for about a day at
the factory grants).
"""

from __future__ import annotations

import asyncio
import os
import time

import psycopg

from agent.cloud.receiver_db import PgStore
from agent.wire import envelope
from bench.fleet import POINTS, WINDOW_0
from bench.fleet_pg import database
from bench.table import print_table

TABLES = ("seen_envelope", "release", "release_record")


def _opened(site: int, seq: int) -> envelope.Opened:
    start = WINDOW_0 + 1800 * seq
    header = envelope.Header(
        site=f"s-{site:07d}", purpose="service", tier="30min", kind="data",
        recipient_key="ab" * 16, device_key="cd" * 16, catalogue="2026.1", consent_id="cr-1",
        consent_hash="ab" * 32, seq=seq, window_start=start, window_end=start + 1800,
        created=(start + 1805) * 1000)
    body = {"records": [{"point": p, "mean": 1000.0 + i + seq, "max": 2000.0 + i}
                        for i, p in enumerate(POINTS)]}
    return envelope.Opened(header=header, body=body)


async def _fill(url: str, count: int, sites: int) -> float:
    store = PgStore(url, "bench")
    batch: list[envelope.Opened] = []
    started = time.perf_counter()
    try:
        for n in range(count):
            batch.append(_opened(n % sites, n // sites))
            if len(batch) == 200:
                await store.store(batch)
                batch = []
        if batch:
            await store.store(batch)
    finally:
        await store.close()
    return time.perf_counter() - started


def main() -> None:
    count = int(os.environ.get("BENCH_STORE_ENVELOPES", "50000"))
    with database() as url:
        seconds = asyncio.run(_fill(url, count, sites=1000))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            rows = []
            for table in TABLES:
                found = conn.execute(
                    f"SELECT count(*), coalesce((SELECT sum(pg_total_relation_size(relid)) "
                    f"FROM pg_partition_tree('{table}')), pg_total_relation_size('{table}')) "
                    f"FROM {table}").fetchone()
                assert found is not None
                rows.append([table, int(found[0]), f"{int(found[1]) / 2**20:,.1f}",
                             f"{int(found[1]) / int(found[0]):,.0f}",
                             f"{int(found[1]) / count:,.0f}"])
    total = sum(float(r[2].replace(",", "")) for r in rows) * 2**20
    print(f"{count:,} envelopes (1,000 sites, 5 records each) stored in {seconds:.1f} s: "
          f"{count / seconds:,.0f} envelopes/s, {count * 7 / seconds:,.0f} rows/s, one "
          f"connection, batches of 200; {total / count:,.0f} bytes per envelope in all:\n")
    print_table(["table", "rows", "MiB", "bytes/row", "bytes/envelope"], rows)


if __name__ == "__main__":
    main()
