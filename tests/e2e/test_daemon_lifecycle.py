"""The daemon's life under systemd: notify protocol, exit codes, failures that must and must
not take it down.

`hems-agent run` runs as a subprocess against simulators and a real mosquitto; systemd's
notify socket is a unix datagram socket bound here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import resource
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import httpx2
import pytest

from drivers.sim.server import run_site
from tests.conftest import free_port
from tests.e2e.daemon_helpers import (
    DaemonProcess,
    metric,
    page_toml,
    release_log,
    set_metrics_listen,
    sim_devices,
    wait_for,
)
from tests.support.mosquitto import Mosquitto
from tests.support.site import broker_users, make_site

SITE = "site-life-1"
SPEED = 1440.0
START = datetime.fromisoformat("2026-06-01T23:56:00+09:00")
WATCHDOG_USEC = 2_000_000  # systemd expects a ping every 2 s; the daemon pings every 1 s

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", broker_users(SITE)) as mosquitto:
        yield mosquitto


class NotifySocket:
    """systemd's side of sd_notify: a datagram socket; every message with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.messages.append((loop.time(), data.decode()))

    def fields(self, key: str) -> list[tuple[float, str]]:
        """(arrival, value) of every ``KEY=value`` line received."""
        return [(at, line.split("=", 1)[1]) for at, message in self.messages
                for line in message.splitlines() if line.startswith(f"{key}=")]


@contextlib.contextmanager
def _short_dir() -> Iterator[Path]:
    # A unix socket path must stay under 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="hems-", dir="/tmp") as name:
        yield Path(name)


@contextlib.asynccontextmanager
async def notify_socket() -> AsyncIterator[NotifySocket]:
    with _short_dir() as directory:
        notify = NotifySocket(directory / "notify")
        task = asyncio.create_task(notify.collect())
        try:
            yield notify
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            notify.sock.close()


async def test_notify_ready_once_status_watchdog_and_stopping(
        tmp_path: Path, broker: Mosquitto) -> None:
    web_port = free_port()
    async with run_site() as site, notify_socket() as notify:
        files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=sim_devices(site),
                          extra=page_toml(tmp_path / "gw", web_port))
        daemon = await DaemonProcess.start(files, speed=None, start=None, env={
            "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        try:
            await wait_for(lambda: notify.fields("READY"), "READY=1", 30)
            # READY comes only once the page listens (and the pollers and uplink run).
            async with httpx2.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{web_port}/login")).status_code == 200
            await wait_for(lambda: len(notify.fields("WATCHDOG")) >= 4, "four watchdog pings",
                           20)
        finally:
            code = await daemon.terminate(limit=25)  # the bound: shutdown_timeout and then some
        await wait_for(lambda: notify.fields("STOPPING"), "STOPPING=1", 5)
    assert code == 0, daemon.output()
    ready, pings = notify.fields("READY"), notify.fields("WATCHDOG")
    assert [value for _, value in ready] == ["1"]
    assert ready[0][0] <= pings[0][0]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(pings)]
    assert max(gaps) < WATCHDOG_USEC / 1e6  # never late for systemd
    statuses = [value for _, value in notify.fields("STATUS")]
    assert any("3 devices" in s and "outbox" in s and "uplink" in s for s in statuses)
    assert notify.fields("STOPPING")[0][0] > ready[0][0]


async def test_a_manager_that_does_not_read_its_socket_never_freezes_the_daemon(
        tmp_path: Path, broker: Mosquitto) -> None:
    metrics_port = free_port()
    with _short_dir() as directory:
        deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        deaf.bind(str(directory / "notify"))  # bound, never read: its queue fills up
        files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=[])
        set_metrics_listen(files, metrics_port)
        # Pings every 0.1 s: the queue (10 datagrams) is full within a second.
        daemon = await DaemonProcess.start(files, speed=None, start=None, env={
            "NOTIFY_SOCKET": str(directory / "notify"), "WATCHDOG_USEC": "200000"})
        try:
            await daemon.wait_line("ready:")
            await asyncio.sleep(2.0)
            await metric(metrics_port, "hems_outbox_depth")  # the loop still answers
        finally:
            code = await daemon.terminate(limit=25)
            deaf.close()
    assert code == 0, daemon.output()


async def test_a_secret_readable_by_others_exits_2_naming_the_file(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", broker_users(SITE))  # never started
    files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=[])
    secret = files.directory / "broker.pass"
    secret.chmod(0o644)
    daemon = await DaemonProcess.start(files, speed=None, start=None)
    assert await daemon.wait() == 2
    assert str(secret) in daemon.output()
    assert "0644" in daemon.output()


async def test_outbox_storage_failure_mid_run_exits_1_with_a_clear_message(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with run_site(speed=SPEED, start=START) as site:
        files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=sim_devices(site))
        daemon = await DaemonProcess.start(files, speed=SPEED, start=START)
        try:
            await daemon.wait_line("ready:")
            await wait_for(lambda: release_log(files), "a first release", 30)
            # The SD card is full: no file of the daemon may grow past 4 KiB any more. (An
            # open sqlite database survives its file being renamed or unlinked, and root
            # ignores a read-only mode, so neither would do.) Python ignores SIGXFSZ, so the
            # write fails with EFBIG and sqlite reports a full disk.
            resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (4096, 4096))
            code = await daemon.wait(30)
        finally:
            await daemon.kill()
    assert code == 1, daemon.output()
    failure = [line for line in daemon.lines if "outbox storage failed" in line]
    assert failure, daemon.output()
    assert str(files.state_dir / "outbox.sqlite") in failure[0]
    assert "disk I/O error" in failure[0]  # the cause itself, not a failed rollback


async def test_a_dead_device_does_not_stop_the_others(tmp_path: Path, broker: Mosquitto) -> None:
    metrics_port = free_port()
    async with run_site(speed=SPEED, start=START) as site:
        ghost = {"name": "ghost", "host": "127.0.0.1", "port": free_port(), "unit": 1,
                 "poll_interval": 0.5, "timeout": 0.5}
        files = make_site(tmp_path / "gw", broker, site_id=SITE,
                          devices=[*sim_devices(site), ghost])
        set_metrics_listen(files, metrics_port)
        daemon = await DaemonProcess.start(files, speed=SPEED, start=START)
        try:
            await daemon.wait_line("ready:")
            await wait_for(lambda: [e for e in release_log(files) if e["purpose"] == "service"],
                           "a service release", 30)
            # The first release comes 1.4 s after the start: under load the meter's first
            # poll may not have been counted yet, so read the counters until both moved.
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                errors = await metric(metrics_port, "hems_polls_total", device="ghost",
                                      outcome="error")
                polled = await metric(metrics_port, "hems_polls_total", device="meter",
                                      outcome="ok")
                if min(errors, polled) >= 1 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.2)
        finally:
            code = await daemon.terminate()
    assert code == 0, daemon.output()
    assert errors >= 1
    assert polled >= 1
    points = {p for e in release_log(files) for p in e["points"]}
    assert {"pv.power", "grid.power", "battery.power"} <= points
