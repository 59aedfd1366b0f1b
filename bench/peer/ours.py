"""Our read path as a process of its own, for the side-by-side bench.

``python -m bench.peer.ours --state DIR PORT...``: for each simulator port, SunSpec discovery,
mapping and a :class:`drivers.device.ModbusDevice` polled every second with the read planner;
readings go to the policy pipeline (minimiser feed, windows flushed each second, releases sealed
with HPKE + Ed25519 and committed to the sqlite outbox), as in the daemon. Two finer grants
than the factory ones (service 1min, support raw) make releases happen every minute.

Prints one line a second: ``readings envelopes`` (totals), which the harness reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.host.metrics import Metrics
from agent.pipeline import Pipeline
from agent.store.outbox import Outbox
from agent.wire.keys import ensure_device_key, generate_recipient_key
from drivers.device import ModbusDevice
from drivers.sunspec.discovery import discover, read_model
from drivers.sunspec.mapping import map_points
from drivers.transport import Bus
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.rights import ReleaseLog

SITE = "s-bench"


def pipeline(state: Path) -> Pipeline:
    state.mkdir(parents=True, exist_ok=True)
    # Opened and granted an hour ago: a window is released to a grant only if it started
    # after the grant, so this makes the current minute's windows eligible at once.
    now = datetime.now(UTC) - timedelta(hours=1)
    catalogue = load_catalogue()
    device_key = ensure_device_key(state / "device.key")
    ledger = Ledger.open(state / "ledger.json", catalogue, SITE, now, sign=device_key.sign)
    for purpose, recipient, tier in (("service", "company", "1min"),
                                     ("support", "support_centre", "raw")):
        ledger.set_grant(purpose, recipient, tier, source="household_page", now=now)
    recipients = {r: generate_recipient_key().public
                  for r in ("company", "support_centre", "installer")}
    return Pipeline(site_id=SITE, ledger=ledger, minimiser=Minimiser(catalogue),
                    outbox=Outbox(state / "outbox.sqlite"), device_key=device_key,
                    recipients=recipients, metrics=Metrics(),
                    release_log=ReleaseLog(state / "release-log.jsonl", catalogue, SITE))


async def open_device(stack: contextlib.AsyncExitStack, port: int, n: int) -> ModbusDevice:
    bus = await stack.enter_async_context(Bus.tcp("127.0.0.1", port, timeout=2.0))
    found = await discover(bus, unit=1)
    blocks = {m.start: await read_model(bus, m, unit=1) for m in found.models}
    # every point once a second, like the peer (the daemon's poll_interval = 1)
    points = [dataclasses.replace(p, interval=1.0) for p in map_points(found, blocks)]
    return ModbusDevice(name=f"inverter-{n}", reader=bus, unit=1, points=points,
                        identity=found.identity, cost=bus.cost_model)


async def run(ports: list[int], state: Path) -> None:
    pipe = pipeline(state)
    readings = envelopes = 0
    async with contextlib.AsyncExitStack() as stack:
        devices = [await open_device(stack, port, n) for n, port in enumerate(ports)]
        next_cycle = time.monotonic()
        while True:
            now = time.monotonic()
            for device in devices:
                batch = await device.poll(now)
                pipe.submit(batch)
                readings += len(batch)
            envelopes += pipe.tick(datetime.now(UTC))
            print(readings, envelopes, flush=True)
            next_cycle += 1.0
            await asyncio.sleep(max(0.0, next_cycle - time.monotonic()))


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.peer.ours")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()
    profile = os.environ.get("BENCH_PROFILE")  # a cProfile stats file, to see where CPU goes
    if profile:
        import cProfile
        import signal

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with cProfile.Profile() as prof:
            with contextlib.suppress(KeyboardInterrupt, SystemExit):
                asyncio.run(run(args.ports, args.state))
            prof.dump_stats(profile)
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.ports, args.state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
