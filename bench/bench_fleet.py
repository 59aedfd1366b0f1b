"""Fleet scale: envelopes received and verified per second by M ``hems-receiver`` processes in
one shared subscription group, as M grows (1, 2, 4), with N = 1,000 simulated gateways on one
TLS mosquitto (see bench/fleet.py). On this 2-core machine the broker, the gateways' client
side and the receivers share the same two cores.

``BENCH_FLEET_SITES`` and ``BENCH_FLEET_PER_SITE`` change N and envelopes per gateway.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.fleet import run
from bench.table import print_table


def main() -> None:
    sites = int(os.environ.get("BENCH_FLEET_SITES", "1000"))
    per_site = int(os.environ.get("BENCH_FLEET_PER_SITE", "10"))
    rows = []
    for receivers in (1, 2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            r = run(Path(tmp), n_sites=sites, receivers=receivers, per_site=per_site)
        rows.append([sites, receivers, int(r["sent"]), int(r["accepted"]),
                     f"{r['published_s']:.2f}", f"{r['seconds']:.2f}", f"{r['rate']:,.0f}"])
    print(f"{sites} gateways (one TLS connection and device key each), {per_site} envelopes "
          "each, QoS 1, published at once; time until every envelope is accepted:\n")
    print_table(["gateways", "receivers", "sent", "accepted", "all PUBACKed after s",
                 "all accepted after s", "envelopes/s accepted"], rows)


if __name__ == "__main__":
    main()
