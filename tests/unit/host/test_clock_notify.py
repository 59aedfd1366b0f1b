"""The trusted clock and the systemd notifier."""

from __future__ import annotations

import contextlib
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.host.clock import TrustedClock
from agent.host.sdnotify import Notifier, watchdog_interval


class FakeTime:
    def __init__(self) -> None:
        self.wall = datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC).timestamp()
        self.mono = 100.0
        self.synced = False

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def _clock(fake: FakeTime) -> TrustedClock:
    return TrustedClock(lambda: fake.synced, wall=lambda: fake.wall, monotonic=lambda: fake.mono)


def test_readings_are_held_until_sync_then_stamped_on_the_monotonic_clock() -> None:
    fake = FakeTime()
    clock = _clock(fake)
    taken = clock.monotonic()
    assert clock.check() is False
    assert clock.stamp(taken) is None
    fake.advance(30)
    fake.synced = True
    assert clock.check() is True
    assert clock.stamp(taken) == datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)


def test_backwards_step_never_moves_stamps_into_an_earlier_day() -> None:
    fake = FakeTime()
    fake.synced = True
    clock = _clock(fake)
    clock.check()
    fake.advance(120)  # now 00:01 on 2 March
    fake.wall -= 3600  # the wall clock steps back an hour, into 1 March
    clock.check()
    stamp = clock.stamp(clock.monotonic())
    assert stamp is not None
    assert stamp.date().isoformat() == "2026-03-02"


def test_forward_step_is_followed() -> None:
    fake = FakeTime()
    fake.synced = True
    clock = _clock(fake)
    clock.check()
    fake.wall += 7200
    clock.check()
    assert clock.stamp(clock.monotonic()) == datetime.fromtimestamp(fake.wall, UTC)


def test_notifier_sends_datagrams(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier(str(path))
        notifier.ready("3 devices")
        notifier.watchdog()
        notifier.stopping()
        received = [server.recv(1024).decode() for _ in range(3)]
    assert received == ["READY=1\nSTATUS=3 devices", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


def test_a_status_is_sent_when_it_changes_and_again_after_a_failed_send(
        tmp_path: Path) -> None:
    path = tmp_path / "notify"
    notifier = Notifier(str(path))
    notifier.status("1 devices, outbox 0 queued")  # no socket bound yet: not received
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.setblocking(False)
        for status in ("1 devices, outbox 0 queued", "1 devices, outbox 0 queued",
                       "1 devices, outbox 2 queued", "1 devices, outbox 2 queued"):
            notifier.status(status)
        received = []
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(server.recv(1024).decode())
    assert received == ["STATUS=1 devices, outbox 0 queued", "STATUS=1 devices, outbox 2 queued"]


def test_notifier_without_systemd_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("x")  # nothing to send to, nothing raised


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None


def test_status_line_names_refused_topics_and_a_clock_not_yet_trusted() -> None:
    from agent.daemon.daemon import status_line

    assert status_line(devices=3, queued=0, connected=True, refused=0, synchronised=True) == (
        "3 devices, outbox 0 queued, uplink connected")
    assert status_line(devices=3, queued=12, connected=True, refused=1, synchronised=False) == (
        "3 devices, outbox 12 queued, uplink connected, 1 topic refused by the broker, "
        "waiting for clock sync")
    assert "2 topics refused" in status_line(devices=1, queued=0, connected=False, refused=2,
                                             synchronised=True)
