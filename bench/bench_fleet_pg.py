"""Fleet into PostgreSQL: N simulated gateways -> one TLS mosquitto -> 1, 2 and 3
``hems-receiver --database`` processes in one shared group -> the machine's PostgreSQL (see
bench/fleet_pg.py). On this 2-core machine the broker, the gateways' client side, PostgreSQL
and the receivers share the same two cores, with other work running.

``BENCH_FLEET_SITES``, ``BENCH_FLEET_PER_SITE`` (half burst, half paced) and
``BENCH_FLEET_RATE`` (paced envelopes per second) change the load.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.fleet_pg import run
from bench.table import print_table


def main() -> None:
    sites = int(os.environ.get("BENCH_FLEET_SITES", "300"))
    per_site = int(os.environ.get("BENCH_FLEET_PER_SITE", "12"))
    rate = float(os.environ.get("BENCH_FLEET_RATE", "100"))
    rows = []
    for receivers in (1, 2, 3):
        with tempfile.TemporaryDirectory() as tmp:
            r = run(Path(tmp), n_sites=sites, receivers=receivers, per_site=per_site,
                    split=per_site // 2, rate=rate)
        rows.append([receivers, r["stored"], f"{r['burst_rate']:,.0f}",
                     f"{r['burst_rate'] / receivers:,.0f}", f"{r['per_core_s']:,.0f}",
                     f"{r['per_db_core_s']:,.0f}",
                     f"{r['rows_per_s']:,.0f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                     f"{r['bytes_per_envelope']:,.0f}",
                     "/".join(str(n) for n in r["per_receiver"])])
    print(f"{sites} gateways (TLS, own device key), {per_site} envelopes each (5 records): half "
          f"published at once (throughput), half paced at {rate:.0f}/s (latency, publish to "
          "row stored):\n")
    print_table(["receivers", "stored", "envelopes/s", "per receiver", "per receiver core-s",
                 "per db core-s", "db rows/s", "p50 ms", "p99 ms", "bytes/envelope",
                 "stored by each"], rows)


if __name__ == "__main__":
    main()
