"""Storage faults: the state directory on a 2 MiB tmpfs fills up, then turns read-only.

Storage failure is fatal by design: the daemon must exit non-zero naming the reason, leave the
consent ledger and the outbox intact (they verify and open cleanly), and once space (or write
access) is back, a restart must succeed and drain what was committed, exactly once.

Needs root (mount); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config.model import load_config
from agent.daemon.state import open_state
from agent.host.metrics import Metrics
from drivers.sim.server import run_site
from tests.e2e.daemon_helpers import (
    Cloud,
    DaemonProcess,
    release_log,
    sent_seqs,
    sim_devices,
    wait_for,
)
from tests.proof.fault_rig import (
    check_exactly_once,
    check_state,
    logged,
    outbox_depth,
    quick_cloud,
    received,
    recipient_names,
)
from tests.support.mosquitto import Mosquitto
from tests.support.site import SiteFiles, broker_users, make_site

pytestmark = [pytest.mark.proof, pytest.mark.mosquitto]

SITE = "site-disk-1"
SPEED = 1440.0
START = datetime.fromisoformat("2026-06-01T23:56:00+09:00")
LEFT_FREE = 256 * 1024  # what the filler leaves of the 2 MiB


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", broker_users(SITE)) as mosquitto:
        yield mosquitto


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "gw" / "state"
    mount.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


def _fill(mount: Path) -> Path:
    """A file taking all but LEFT_FREE bytes of the filesystem."""
    stat = os.statvfs(mount)
    free = stat.f_bavail * stat.f_frsize
    filler = mount / "filler"
    filler.write_bytes(b"\0" * max(0, free - LEFT_FREE))
    return filler


def _install(files: SiteFiles) -> None:
    at = START - timedelta(minutes=1)
    state = open_state(load_config(files.config), Metrics(), now=at)
    # beyond the test's four simulated days: an expiry purges queued support envelopes, which
    # the release log has already listed (a known gap, see the notes in docs/results.md)
    state.ledger.set_grant("support", "support_centre", "raw", source="installer", now=at,
                           expires=at + timedelta(days=10))
    state.close()


async def _until_it_dies(files: SiteFiles, start: datetime, limit: float) -> DaemonProcess:
    daemon = await DaemonProcess.start(files, speed=SPEED, start=start)
    await daemon.wait_line("ready:")
    code = await daemon.wait(limit)
    assert code != 0, daemon.output()
    return daemon


async def _recover(files: SiteFiles, start: datetime, c: Cloud) -> None:
    """Restart; it must reach ready and drain everything committed, and what its stop releases.

    It is stopped only once its uplink is connected: a daemon stopped before that keeps the
    windows its last tick releases queued in the outbox until its next start (by design), and
    after the last recovery there is none. Connected, the stop sends them (drain_on_stop)."""
    daemon = await DaemonProcess.start(files, speed=SPEED, start=start)
    try:
        await daemon.wait_line("ready:")
        await daemon.wait_line("uplink connected", 60)
        await _all_arrived(files, c, daemon, "every committed release at the receiver", 180)
        await wait_for(lambda: outbox_depth(files) == 0, "a drained outbox", 60)
    finally:
        code = await daemon.terminate()
    assert code == 0, daemon.output()
    await _all_arrived(files, c, daemon, "the releases of the stop at the receiver", 30)


async def _all_arrived(files: SiteFiles, c: Cloud, daemon: DaemonProcess, what: str,
                       limit: float) -> None:
    """Wait until every committed release not withdrawn reached the receiver; on failure say
    which are still queued in the outbox (unsent) and which are gone from it (lost)."""
    names = recipient_names(files)
    try:
        await wait_for(lambda: set(logged(files)) <= set(received(c, names)), what, limit)
    except AssertionError:
        missing = set(logged(files)) - set(received(c, names))
        with contextlib.closing(sqlite3.connect(files.state_dir / "outbox.sqlite")) as db:
            queued = {row[0] for row in db.execute("SELECT seq FROM envelopes")}
        sent = sent_seqs(files)
        fate = sorted((e["seq"] in queued and e["seq"] not in sent, e["seq"], e["purpose"],
                       e["tier"], e["start"]) for e in release_log(files)
                      if _window(e) in missing)
        raise AssertionError(f"timed out waiting for {what}: {len(missing)} committed releases "
                             f"missing, outbox depth {outbox_depth(files)}, receiver accepted "
                             f"{c.receiver.accepted} rejected {dict(c.receiver.rejected)}; "
                             f"(still queued, seq, purpose, tier, start): {fate[:5]}\n"
                             f"{daemon.output()[-3000:]}") from None


def _window(entry: dict[str, Any]) -> tuple[str, str, int, int]:
    return (entry["purpose"], entry["recipient"],
            int(datetime.fromisoformat(entry["start"]).timestamp()),
            int(datetime.fromisoformat(entry["end"]).timestamp()))


@pytest.mark.timeout(400)
async def test_disk_full_and_read_only_state_are_fatal_clear_and_recoverable(
        tmp_path: Path, broker: Mosquitto, small_disk: Path) -> None:
    async with run_site(speed=SPEED, start=START) as site:
        # the backlog a full disk leaves (raw support data) drains at 200 envelopes/s, not the
        # default 20, so the recovery fits the test's time
        files = make_site(tmp_path / "gw", broker, site_id=SITE,
                          devices=sim_devices(site, poll=0.05),
                          extra="\n[outbox]\ndrain_rate = 200.0\n")
        _install(files)
        async with quick_cloud(files, broker, tmp_path / "seen.db") as c:
            # the cloud's persistent subscription must exist before the broker goes down, or
            # the backlog published at its return reaches nobody
            await wait_for(lambda: f"SUBSCRIBE from receiver-{SITE}" in broker.log_text(),
                           "the receiver's subscription", 30)
            # 1. disk full, broker down so the outbox grows until the filesystem is full
            broker.stop()
            filler = _fill(small_disk)
            full = await _until_it_dies(files, START, 120)
            reason = full.output().lower()
            assert "no space" in reason or "disk is full" in reason or "full" in reason, reason
            check_state(files)
            filler.unlink()
            # space returns: a 2 MiB filesystem is smaller than sqlite's default WAL before its
            # checkpoint (1,000 pages), so give the recovery room as a real SD card would
            _remount(small_disk, "size=64m")
            broker.start()
            await _recover(files, START + timedelta(days=1), c)
            # 2. the state directory is read-only when the daemon starts (a remount read-only
            # under a running daemon is refused by the kernel while sqlite holds files open for
            # writing, so the fault is met at start-up, as after an SD card fell back to ro)
            _remount(small_disk, "ro")
            try:
                daemon = await DaemonProcess.start(files, speed=SPEED,
                                                   start=START + timedelta(days=2))
                code = await daemon.wait(60)
            finally:
                _remount(small_disk, "rw")
            assert code != 0, daemon.output()
            readonly = daemon.output().lower()
            assert "read-only" in readonly or "readonly" in readonly, readonly
            check_state(files)
            await _recover(files, START + timedelta(days=3), c)
    check_exactly_once(c, files)
    print(f"\nstorage: disk full exit {full.proc.returncode}: {_last_error(full)}; read-only exit "
          f"{code}: {_last_error(daemon)}")


def _last_error(daemon: DaemonProcess) -> str:
    errors = [line for line in daemon.lines if "error" in line.lower()]
    return errors[-1] if errors else daemon.lines[-1]
