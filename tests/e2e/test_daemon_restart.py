"""A restart in the middle of a window: the window is released once, whole, and the energy the
simulator counted across the restart is in it.

The daemon (`hems-agent run`) runs at 120x against the simulators, a real mosquitto and the
receiver, polling every 0.125 s (every 15 simulated seconds). Energy counters are read every 30
real seconds (an hour simulated): once at the first start, once at the restart, so the window's
whole energy delta is the one across the restart. The simulated home runs on a wall
clock the test can pause: paused until the first counter reading and again from the stop on,
so both readings, and the delta the window must carry, are known exactly.

After SIGTERM the restarted daemon resumes simulated time where the first one saved its state
(the restart itself takes no simulated time, so every minute has readings); after SIGKILL it
resumes at the kill (as real time would), so only what came after the last periodic save and
the restart itself are missing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.server import SimHome, run_site
from tests.e2e.daemon_helpers import (
    Cloud,
    DaemonProcess,
    cloud,
    minimiser_snapshot,
    sim_devices,
    wait_for,
)
from tests.support.mosquitto import Mosquitto
from tests.support.site import SiteFiles, broker_users, make_site

SITE = "site-restart-1"
SPEED = 120.0  # two simulated minutes per second
KILL_SPEED = 120.0
POLL = 0.125  # real seconds: 15 simulated seconds
WINDOW = datetime.fromisoformat("2026-06-01T12:00:00+09:00")  # a service window, sunny
WINDOW_END = WINDOW + timedelta(minutes=30)
START = WINDOW - timedelta(minutes=1)  # the default grants take effect at the first start
CUT_AT = WINDOW + timedelta(minutes=10)

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", broker_users(SITE)) as mosquitto:
        yield mosquitto


class PausableWall:
    """A monotonic clock for the simulated home that stands still while paused."""

    def __init__(self) -> None:
        self._paused_at: float | None = None
        self._lost = 0.0

    def __call__(self) -> float:
        now = time.monotonic() if self._paused_at is None else self._paused_at
        return now - self._lost

    def pause(self) -> None:
        self._paused_at = time.monotonic()

    def resume(self) -> None:
        assert self._paused_at is not None
        self._lost += time.monotonic() - self._paused_at
        self._paused_at = None


class Life:
    """One daemon process and an upper bound of its simulated time (its clock starts after
    the process does)."""

    def __init__(self, daemon: DaemonProcess, start: datetime, speed: float) -> None:
        self.daemon, self.start, self.speed = daemon, start, speed
        self.spawned = time.monotonic()

    @classmethod
    async def begin(cls, files: SiteFiles, start: datetime, speed: float) -> Life:
        return cls(await DaemonProcess.start(files, speed=speed, start=start), start, speed)

    def at_most(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.spawned) * self.speed)


def _pv_wh(home: SimHome) -> int:
    return int(home.snapshot().pv_wh)  # what the inverter's WH register says


def _counter(files: SiteFiles) -> float | None:
    saved = minimiser_snapshot(files)
    rows = [] if saved is None else [s for s in saved["series"] if s[:2] == ["inverter",
                                                                              "pv.energy"]]
    return rows[0][6] if rows else None


def _taken(files: SiteFiles) -> datetime:
    saved = minimiser_snapshot(files)
    assert saved is not None
    return datetime.fromisoformat(saved["taken"])


def _windows(c: Cloud) -> list[dict[str, Any]]:
    return [e for e in c.of_kind("data", "service")
            if e["header"]["window_start"] == int(WINDOW.timestamp())]


async def _first_life(files: SiteFiles, wall: PausableWall, speed: float) -> Life:
    """Start a minute before the window with the home paused until the first counter reading
    is saved; run until the daemon's time passes CUT_AT."""
    life = await Life.begin(files, START, speed)
    await life.daemon.wait_line("ready:")
    await wait_for(lambda: _counter(files) is not None, "a saved counter reading", 30)
    wall.resume()
    await wait_for(lambda: _taken(files) >= CUT_AT, "a save after minute 10", 40)
    return life


async def _finish_window(life: Life, c: Cloud) -> None:
    await life.daemon.wait_line("minimiser state restored")
    await wait_for(lambda: _windows(c), "the 12:00 service window at the receiver", 60)


def _inverter(envelope: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["point"]: r for r in envelope["body"]["records"] if r["device"] == "inverter"}


def _polled(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of points read at every poll (counters, levels, nameplate: slower)."""
    return [r for r in envelope["body"]["records"]
            if r["kind"] in ("power", "gauge", "state", "event")]


async def test_sigterm_mid_window_the_restarted_daemon_releases_it_whole(
        tmp_path: Path, broker: Mosquitto) -> None:
    wall = PausableWall()
    wall.pause()
    async with run_site(home=SimHome(start=START, speed=SPEED, wall=wall)) as site:
        files = make_site(tmp_path / "gw", broker, site_id=SITE,
                          devices=sim_devices(site, poll=POLL))
        before = _pv_wh(site.home)
        async with cloud(files, broker, tmp_path / "seen.db") as c:
            first = await _first_life(files, wall, SPEED)
            assert await first.daemon.terminate() == 0, first.daemon.output()
            wall.pause()
            after = _pv_wh(site.home)  # what the restarted daemon reads
            saved = minimiser_snapshot(files)
            assert saved is not None and ["30min", int(WINDOW.timestamp()),
                                          int(WINDOW_END.timestamp())] in [
                w[:3] for w in saved["windows"]]
            assert not _windows(c)  # the cut window was not released at the stop
            second = await Life.begin(files, datetime.fromisoformat(saved["taken"]), SPEED)
            try:
                await _finish_window(second, c)
            finally:
                code = await second.daemon.terminate()
            assert code == 0, second.daemon.output()
    [window] = _windows(c)
    polled = _polled(window)
    assert len(polled) >= 20 and {r["coverage"] for r in polled} == {1.0}, polled
    assert _inverter(window)["pv.energy"]["values"]["delta"] == after - before > 0


async def test_sigkill_mid_window_loses_at_most_what_came_after_the_last_save(
        tmp_path: Path, broker: Mosquitto) -> None:
    wall = PausableWall()
    wall.pause()
    async with run_site(home=SimHome(start=START, speed=KILL_SPEED, wall=wall)) as site:
        files = make_site(tmp_path / "gw", broker, site_id=SITE,
                          devices=sim_devices(site, poll=POLL))
        before = _pv_wh(site.home)
        async with cloud(files, broker, tmp_path / "seen.db") as c:
            first = await _first_life(files, wall, KILL_SPEED)
            await first.daemon.kill()
            wall.pause()
            after = _pv_wh(site.home)
            killed_by = first.at_most()  # time goes on across the kill, as in a power cut
            saved = _taken(files)  # the last periodic save: no save at a SIGKILL
            second = await Life.begin(files, killed_by, KILL_SPEED)
            try:
                await _finish_window(second, c)
            finally:
                code = await second.daemon.terminate()
            assert code == 0, second.daemon.output()
    [window] = _windows(c)
    pv = _inverter(window)
    # Every minute before the save, and every whole minute after the restart, has readings.
    kept = (saved - WINDOW) // timedelta(minutes=1) + (WINDOW_END - killed_by) // timedelta(
        minutes=1) - 1
    assert pv["pv.power"]["coverage"] * 30 >= kept >= 10, (pv, saved, killed_by)
    # The counter continues from the saved reading: the energy across the kill is all there.
    assert pv["pv.energy"]["values"]["delta"] == after - before > 0
