"""The login throttle on its own: one attempt per address, a bounded table, a clock set back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.web.throttle import THROTTLE_FILE, LoginThrottle, WaitReason

START = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
KEY = bytes(32)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def test_one_attempt_per_address_at_a_time() -> None:
    throttle = LoginThrottle(clock=Clock(), key=KEY)
    assert throttle.begin("192.168.1.66") is None
    second = throttle.begin("192.168.1.66")  # the first is still being checked
    assert second is not None and (second.seconds, second.reason) == (1, WaitReason.BACKOFF)
    assert throttle.begin("192.168.1.10") is None  # another address is not held up
    throttle.release("192.168.1.66")
    assert throttle.begin("192.168.1.66") is None


def test_the_table_is_bounded_and_keeps_the_longest_waits() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, key=KEY, clients=8, max_failures=3)
    for _ in range(3):  # locked for 15 minutes
        clock.now += timedelta(seconds=5)
        throttle.begin("10.0.0.1")
        throttle.failed("10.0.0.1")
    for n in range(100):  # a hundred addresses with one wrong code each
        throttle.begin(f"10.0.1.{n}")
        throttle.failed(f"10.0.1.{n}")
        assert len(throttle) <= 8
    locked = throttle.begin("10.0.0.1")
    assert locked is not None and locked.reason is WaitReason.LOCKED


def test_a_clock_set_back_does_not_lengthen_a_lock_out(tmp_path: Path) -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, key=KEY, path=tmp_path / THROTTLE_FILE,
                             max_failures=1)
    throttle.begin("10.0.0.1")
    assert throttle.failed("10.0.0.1").seconds == 900
    clock.now -= timedelta(days=1)
    again = LoginThrottle(clock=clock, key=KEY, path=tmp_path / THROTTLE_FILE, max_failures=1)
    wait = again.begin("10.0.0.1")
    assert wait is not None and wait.seconds == 900  # not a day and fifteen minutes


def test_a_damaged_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / THROTTLE_FILE
    path.write_text('{"v": 1, "clients": [{"id": "x"}]}', encoding="ascii")
    throttle = LoginThrottle(clock=Clock(), key=KEY, path=path)
    assert len(throttle) == 0 and (tmp_path / (THROTTLE_FILE + ".damaged")).exists()
