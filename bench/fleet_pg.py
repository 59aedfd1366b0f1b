"""A fleet into PostgreSQL: N simulated gateways -> one TLS mosquitto -> M ``hems-receiver
--database`` processes in one shared subscription group -> the machine's PostgreSQL.

Two phases per run, on the keys, broker and envelopes of bench/fleet.py:

- burst: every gateway publishes all its envelopes at once (QoS 1); measured: envelopes and
  database rows stored per second (first publish to the last commit), and the receivers' CPU
  seconds (from /proc) hence envelopes per receiver core-second;
- paced: the same number of new envelopes at a fixed total rate well below capacity; measured:
  latency from just before each publish to the row's ``stored_at`` (clock_timestamp() in the
  storing transaction, same host clock), p50 and p99.

Afterwards bytes per stored envelope, from ``pg_total_relation_size`` over every partition of
``release``, ``release_record`` and ``seen_envelope``. Used by bench/bench_fleet_pg.py and
tests/proof/test_fleet_pg.py. The PostgreSQL server is ``HEMS_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); a database is created and dropped per run.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from agent.wire.topics import topic_for
from bench.fleet import RECEIVER, Fleet, build, start_broker, stop

ADMIN_URL = os.environ.get("HEMS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
TICK = os.sysconf("SC_CLK_TCK")


@contextmanager
def database() -> Iterator[str]:
    name = f"hems_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        try:
            params = conninfo_to_dict(ADMIN_URL)
            params["dbname"] = name
            yield make_conninfo(**params)  # type: ignore[arg-type]
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def start_receivers(fleet: Fleet, url: str, count: int) -> list[subprocess.Popen[bytes]]:
    exe = Path(sys.executable).with_name("hems-receiver")
    procs = [subprocess.Popen(
        [str(exe), "--broker", f"mqtts://127.0.0.1:{fleet.port}", "--ca", str(fleet.ca),
         "--username", RECEIVER, "--password-file", str(fleet.directory / "receiver.pass"),
         "--device-keys", str(fleet.directory / "devices.json"),
         "--recipient-key", str(fleet.directory / "company.key"),
         "--group", "fleet", "--client-id", f"fleet-receiver-{n}", "--database", url,
         "--log-level", "ERROR"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for n in range(count)]
    deadline = time.monotonic() + 60
    log = fleet.directory / "mosquitto.log"
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if sum(f"fleet-receiver-{n} " in text for n in range(count)) >= count:
            return procs
        time.sleep(0.1)
    stop(procs)
    raise RuntimeError("the receivers did not subscribe within 60 s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _backends(url: str, receivers: int) -> list[int]:
    """PIDs of the PostgreSQL backends serving the receivers (same host: /proc is readable)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            pids = [int(r[0]) for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'hems-receiver' "
                "AND datname = current_database()").fetchall()]
        if len(pids) >= receivers:
            return pids
        time.sleep(0.1)
    raise RuntimeError("the receivers did not connect to the database within 30 s")


def _stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM seen_envelope").fetchone()
    return int(row[0]) if row else 0


async def _connect_all(fleet: Fleet) -> dict[str, aiomqtt.Client]:
    context = ssl.create_default_context(cafile=str(fleet.ca))
    limit = asyncio.Semaphore(50)

    async def one(site: str) -> tuple[str, aiomqtt.Client]:
        async with limit:
            client = aiomqtt.Client("127.0.0.1", fleet.port, identifier=f"hems-{site}",
                                    username=site, password=f"pw-{site}", tls_context=context,
                                    timeout=60)
            await client.__aenter__()
            return site, client

    return dict(await asyncio.gather(*(one(s) for s in fleet.sites)))


async def _phases(fleet: Fleet, url: str, split: int, rate: float,
                  limit_s: float) -> dict[str, Any]:
    clients = await _connect_all(fleet)
    sent: dict[tuple[str, int], float] = {}
    try:
        burst = [(s, q) for s in fleet.sites for q in range(split)]
        started = time.time()

        async def drain(site: str) -> None:
            for seq in range(split):
                sent[(site, seq)] = time.time()
                await clients[site].publish(topic_for(site, "service", "data"),
                                            fleet.envelopes[site][seq], qos=1)

        await asyncio.gather(*(drain(s) for s in fleet.sites))
        while _stored(url) < len(burst) and time.time() - started < limit_s:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        paced = [(s, q) for q in range(split, len(fleet.envelopes[fleet.sites[0]]))
                 for s in fleet.sites]
        t0, tasks = time.monotonic(), []
        for i, (site, seq) in enumerate(paced):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            sent[(site, seq)] = time.time()
            tasks.append(asyncio.create_task(clients[site].publish(
                topic_for(site, "service", "data"), fleet.envelopes[site][seq], qos=1)))
        await asyncio.gather(*tasks)
        while _stored(url) < len(burst) + len(paced) \
                and time.time() - started < limit_s:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)
    return {"started": started, "sent": sent, "burst": set(burst), "paced": set(paced)}


def run(directory: Path, *, n_sites: int, receivers: int, per_site: int, split: int,
        rate: float = 100.0, timeout: float = 600.0) -> dict[str, Any]:
    """One measured run (burst of ``split`` envelopes per site, then the rest paced)."""
    fleet = build(directory, n_sites, per_site)
    start_broker(fleet)
    procs: list[subprocess.Popen[bytes]] = []
    with database() as url:
        try:
            procs = start_receivers(fleet, url, receivers)
            backends = _backends(url, receivers)
            cpu0 = [cpu_seconds(p.pid) for p in procs]
            db0 = [cpu_seconds(pid) for pid in backends]
            t = asyncio.run(_phases(fleet, url, split, rate, timeout))
            cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
            db_cpu = sum(cpu_seconds(pid) - c for pid, c in zip(backends, db0, strict=True))
            figures = _figures(url, t, cpu, receivers)
            figures["db_cpu_s"] = db_cpu
            figures["per_db_core_s"] = figures["stored"] / db_cpu if db_cpu else 0.0
        finally:
            stop(procs)
            if fleet.broker is not None:
                stop([fleet.broker])
    figures["sent"] = fleet.total
    return figures


def _figures(url: str, t: dict[str, Any], cpu: list[float], receivers: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT site, seq, extract(epoch FROM stored_at)::float8, "
                            "received_by FROM seen_envelope").fetchall()
        counts = conn.execute("SELECT (SELECT count(*) FROM seen_envelope), "
                              "(SELECT count(*) FROM release), "
                              "(SELECT count(*) FROM release_record), "
                              "(SELECT count(DISTINCT (site, seq)) FROM release)").fetchone()
        conn.execute("VACUUM ANALYZE")
        sizes = conn.execute(
            "SELECT t, coalesce((SELECT sum(pg_total_relation_size(relid)) "
            "FROM pg_partition_tree(t)), pg_total_relation_size(t)) "
            "FROM unnest(ARRAY['seen_envelope', 'release', 'release_record']::regclass[]) t"
        ).fetchall()
    assert counts is not None
    burst_done = max(ts for site, seq, ts, _ in rows if (site, seq) in t["burst"])
    burst_s = burst_done - t["started"]
    latency = sorted(ts - t["sent"][(site, seq)] for site, seq, ts, _ in rows
                     if (site, seq) in t["paced"])
    per_receiver = [sum(1 for *_, by in rows if by == f"fleet-receiver-{n}")
                    for n in range(receivers)]
    stored = int(counts[0])
    db_rows = int(counts[0]) + int(counts[1]) + int(counts[2])
    total_bytes = sum(int(size) for _, size in sizes)
    return {
        "stored": stored, "distinct": int(counts[3]), "releases": int(counts[1]),
        "burst_envelopes": len(t["burst"]), "burst_s": burst_s,
        "burst_rate": len(t["burst"]) / burst_s,
        "rows_per_s": len(t["burst"]) * db_rows / stored / burst_s,
        "rows_per_envelope": db_rows / stored,
        "per_receiver": per_receiver, "cpu_s": cpu,
        "per_core_s": stored / sum(cpu) if sum(cpu) else 0.0,
        "p50_ms": 1000 * latency[len(latency) // 2] if latency else 0.0,
        "p99_ms": 1000 * latency[min(len(latency) - 1, int(len(latency) * 0.99))]
        if latency else 0.0,
        "paced": len(latency), "bytes_per_envelope": total_bytes / stored,
        "bytes": {str(name): int(size) for name, size in sizes},
    }
