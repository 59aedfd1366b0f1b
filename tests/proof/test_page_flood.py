"""A connection flood against the household page of a running daemon, from loopback.

The daemon (a real ``hems-agent run`` subprocess, simulators, mosquitto, the receiver) runs
with its open-files limit at 1,024 soft and hard, as under systemd without ``LimitNOFILE``:
before the page bounded its connections, about 1,100 idle ones ended the daemon ("outbox could
not record what became of envelopes: [Errno 24] Too many open files").

For 60 s, 5,000 connections are held against the page: half send nothing, half trickle a
request head a byte every 5 s; every connection the page closes is opened again (at most 1,000
a round and 80,000 in all). Meanwhile the daemon must keep polling and publishing: every 30-min
service window from before the flood to after it is committed and reaches the receiver, with
no gap; it never holds more than the page's bound of descriptors beyond its own; the household
logs in during the flood, and within 2 s once it ends. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import resource
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from drivers.sim.server import run_site
from tests.conftest import free_port
from tests.e2e.daemon_helpers import DaemonProcess, Page, page_toml, sim_devices, wait_for
from tests.proof.fault_rig import check_exactly_once, committed_windows, quick_cloud
from tests.support.mosquitto import Mosquitto
from tests.support.site import broker_users, make_site

pytestmark = [pytest.mark.proof, pytest.mark.mosquitto]

SITE = "site-flood-1"
SPEED = 240.0  # a 30-minute window closes every 7.5 s
START = datetime.fromisoformat("2026-06-01T23:56:00+09:00")
CONNECTIONS = 5000
FLOOD = 60.0  # seconds
MAX_OPENS = 80_000
OPENS_PER_ROUND = 1000
TRICKLE_EVERY = 5.0  # seconds between two bytes of a trickling connection
DAEMON_FILES = 1024


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", broker_users(SITE)) as mosquitto:
        yield mosquitto


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DAEMON_FILES, DAEMON_FILES))


async def _descriptors(daemon: DaemonProcess) -> int:
    """Open descriptors of the daemon; an AssertionError with its last words if it ended."""
    try:
        return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
    except FileNotFoundError:
        code = await daemon.wait(30)
        tail = "\n".join(daemon.lines[-15:])
        raise AssertionError(f"the daemon exited ({code}) during the flood:\n{tail}") from None


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Flood:
    """``CONNECTIONS`` slots, each an open connection (re-opened when the page closes it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.slots: list[socket.socket | None] = [None] * CONNECTIONS
        self.sent = [0] * CONNECTIONS
        self.next_byte = [0.0] * CONNECTIONS
        self.opens = 0
        self.refused = 0
        self.head = (f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pad: ".encode()
                     + b"a" * 4096)

    async def _open(self, n: int) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        self.opens += 1
        try:
            async with asyncio.timeout(5):
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        except (OSError, TimeoutError):
            sock.close()
            self.refused += 1
            return
        self.slots[n], self.sent[n] = sock, 0
        self.next_byte[n] = time.monotonic() + TRICKLE_EVERY

    async def round(self) -> None:
        """Re-open what the page closed (bounded), trickle a byte where one is due."""
        budget = OPENS_PER_ROUND
        now = time.monotonic()
        reopen = []
        for n, sock in enumerate(self.slots):
            if sock is not None and _closed(sock):
                sock.close()
                self.slots[n] = sock = None
            if sock is None:
                if budget > 0 and self.opens < MAX_OPENS:
                    budget -= 1
                    reopen.append(n)
                continue
            if n % 2 and now >= self.next_byte[n] and self.sent[n] < len(self.head):
                with contextlib.suppress(OSError):
                    sock.send(self.head[self.sent[n]:self.sent[n] + 1])
                    self.sent[n] += 1
                self.next_byte[n] = now + TRICKLE_EVERY
        await self._open_all(reopen)

    async def _open_all(self, slots: list[int]) -> None:
        for first in range(0, len(slots), 250):  # 250 connects in flight at most
            await asyncio.gather(*(self._open(n) for n in slots[first:first + 250]))

    async def fill(self) -> None:
        await self._open_all(list(range(CONNECTIONS)))

    def open_now(self) -> int:
        return sum(1 for s in self.slots if s is not None)

    def close(self) -> None:
        for sock in self.slots:
            if sock is not None:
                sock.close()
        self.slots = [None] * CONNECTIONS


def _service_windows(files: object) -> list[tuple[int, int]]:
    return sorted((w[2], w[3]) for w in committed_windows(files)  # type: ignore[arg-type]
                  if w[0] == "service")


@pytest.mark.timeout(420)
async def test_five_thousand_connections_for_a_minute_stop_nothing(
        tmp_path: Path, broker: Mosquitto) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CONNECTIONS + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, CONNECTIONS + 1000), hard))
    web_port = free_port()
    async with run_site(speed=SPEED, start=START) as site:
        files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=sim_devices(site),
                          extra=page_toml(tmp_path / "gw", web_port))
        async with quick_cloud(files, broker, tmp_path / "seen.db") as c:
            daemon = await DaemonProcess.start(files, speed=SPEED, start=START,
                                               preexec=_low_limit)
            flood = Flood(web_port)
            try:
                await daemon.wait_line("uplink connected", 60)
                await wait_for(lambda: len(_service_windows(files)) >= 2,
                               "two service windows before the flood", 60)
                before = _service_windows(files)[-1]
                idle_fds = await _descriptors(daemon)
                loop = asyncio.get_running_loop()
                began = loop.time()
                await flood.fill()
                filled = loop.time() - began
                began = loop.time()
                most_fds, rounds, during = idle_fds, 0, None
                while loop.time() - began < FLOOD and rounds < 2000:
                    rounds += 1
                    await flood.round()
                    most_fds = max(most_fds, await _descriptors(daemon))
                    if during is None and loop.time() - began > FLOOD / 2:
                        async with Page(web_port) as household:  # a login mid-flood
                            t0 = loop.time()
                            await household.login()
                            during = loop.time() - t0
                    await asyncio.sleep(0.2)
                held = flood.open_now()
                flood.close()
                async with Page(web_port) as household:
                    t0 = loop.time()
                    await household.login()
                    after = loop.time() - t0
                last = _service_windows(files)[-1]
                # one more window committed after the flood, then it must reach the receiver
                await wait_for(lambda: _service_windows(files)[-1][0] > last[0],
                               "a service window after the flood", 60)
                assert daemon.proc.returncode is None, daemon.output()
            finally:
                flood.close()
                code = await daemon.terminate()
            assert code == 0, daemon.output()
            committed, received = check_exactly_once(c, files)
    windows = _service_windows(files)
    span = [w for w in windows if before[0] <= w[0] <= last[0]]
    assert len(span) >= FLOOD / (1800 / SPEED)  # the flood spanned this many windows
    gaps = [(a, b) for a, b in itertools.pairwise(span) if a[1] != b[0]]
    assert not gaps, f"service windows missing between {gaps[:3]}"
    assert "Too many open files" not in daemon.output()
    assert most_fds < DAEMON_FILES - 256, (most_fds, idle_fds)
    assert after < 2.0, after
    print(f"\nflood: {CONNECTIONS} connections opened in {filled:.1f} s, then kept up for "
          f"{FLOOD:.0f} s in {rounds} rounds, "
          f"{flood.opens} opened ({flood.refused} refused or timed out), {held} still open "
          f"at the end; daemon descriptors {idle_fds} idle, at most {most_fds} "
          f"(limit {DAEMON_FILES}); household login {during:.2f} s during the flood, "
          f"{after:.2f} s after; {len(span)} service windows without a gap; "
          f"{committed} releases committed, {received} received")
