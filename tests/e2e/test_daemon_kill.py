"""Crash safety: SIGKILL the daemon at random moments, restart it, and lose nothing committed.

Simulated devices keep running and the broker is up (down for a stretch of the kills). Each
kill lands at a seeded random moment: some during start-up (ledger and outbox being opened),
most while it polls, releases and publishes. After the last restart the daemon is stopped
gracefully once its outbox drained. Simulated time continues across restarts, as real time
would, so a window is never released twice.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.server import run_site
from tests.e2e.daemon_helpers import Cloud, DaemonProcess, cloud, release_log, sim_devices, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.site import SiteFiles, broker_users, make_site

SITE = "site-kill-1"
SPEED = 2880.0  # 30-minute windows close every 0.6 s, a day passes in 30 s
START = datetime.fromisoformat("2026-06-01T23:56:00+09:00")
SEED = 20260601
KILLS = 12
BROKER_DOWN = range(4, 7)  # these lives run (and die) with the broker stopped

pytestmark = pytest.mark.mosquitto

Window = tuple[str, str, int, int]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", broker_users(SITE)) as mosquitto:
        yield mosquitto


def _logged(files: SiteFiles) -> Counter[Window]:
    return Counter((e["purpose"], e["recipient"], int(datetime.fromisoformat(e["start"])
                                                      .timestamp()),
                    int(datetime.fromisoformat(e["end"]).timestamp()))
                   for e in release_log(files))


def _received(c: Cloud, names: dict[str, str]) -> Counter[Window]:
    return Counter((h["purpose"], names[h["recipient_key"]], h["window_start"], h["window_end"])
                   for h in (e["header"] for e in c.data()))


async def _kill_at_random(files: SiteFiles, rng: random.Random, life: int,
                          sim_now: Any) -> bool:
    """One life: start, die by SIGKILL at a random moment; whether it had reached ready."""
    daemon = await DaemonProcess.start(files, speed=SPEED, start=sim_now())
    if life % 4 == 3:  # anywhere in start-up, opening the ledger and outbox included
        await asyncio.sleep(rng.uniform(0.2, 1.5))
    else:
        await daemon.wait_line("ready:")
        await asyncio.sleep(rng.uniform(0.2, 3.0))
    await daemon.kill()
    return daemon.saw("ready:")


async def test_sigkill_at_random_moments_loses_nothing_committed(
        tmp_path: Path, broker: Mosquitto) -> None:
    rng = random.Random(SEED)
    loop = asyncio.get_running_loop()
    origin = loop.time()

    def sim_now() -> datetime:
        return START + timedelta(seconds=(loop.time() - origin) * SPEED)

    async with run_site(speed=SPEED, start=START) as site:
        files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=sim_devices(site))
        names = {key.key_id: name for name, key in files.recipient_keys.items()}
        async with cloud(files, broker, tmp_path / "seen.db") as c:
            ready = 0
            for life in range(KILLS):
                if life == BROKER_DOWN.start:
                    broker.stop()
                elif life == BROKER_DOWN.stop:
                    broker.start()
                ready += await _kill_at_random(files, rng, life, sim_now)
            daemon = await DaemonProcess.start(files, speed=SPEED, start=sim_now())
            try:
                await daemon.wait_line("ready:")  # the ledger loads after every kill
                await wait_for(lambda: set(_logged(files)) <= set(_received(c, names)),
                               "every logged release at the receiver", 60)
                await wait_for(lambda: daemon.saw("outbox 0 queued") or _depth(files) == 0,
                               "an empty outbox", 30)
            finally:
                code = await daemon.terminate()
            assert code == 0, daemon.output()
    _check(files, c, names, ready)


def _depth(files: SiteFiles) -> int:
    with sqlite3.connect(files.state_dir / "outbox.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0])


def _check(files: SiteFiles, c: Cloud, names: dict[str, str], ready: int) -> None:
    assert ready >= KILLS * 3 // 4  # every life that was waited for reached ready
    seqs = Counter((e["header"]["site"], e["header"]["seq"]) for e in c.envelopes())
    assert seqs and max(seqs.values()) == 1  # each accepted (site, seq) exactly once
    logged, received = _logged(files), _received(c, names)
    assert sum(logged.values()) >= 20, "too few releases to prove anything"
    assert not set(logged) - set(received), "committed releases never arrived"
    assert max(logged.values()) == 1 and max(received.values()) == 1  # no window twice
    # Day windows are released only by a life that spans midnight: improvement may be absent.
    assert "service" in {w[0] for w in received} <= {"service", "improvement"}
    assert set(c.receiver.rejected) <= {"replay"}  # resent after a kill, dropped as seen
    assert _depth(files) == 0
