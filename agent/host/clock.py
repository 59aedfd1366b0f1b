"""Wall-clock trust on a board without a real-time clock.

A Pi boots with whatever time its fake-hwclock saved. Until the kernel says the clock is
synchronised, readings are held on the monotonic clock and stamped once sync is known; a backwards
step of the wall clock never moves a reading into the wrong window.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

log = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # struct timex, up to `status`; the kernel only reads modes=0, so a big buffer is enough.
    _fields_ = [("modes", ctypes.c_uint), ("pad", ctypes.c_char * 252)]


def adjtimex_synchronised() -> bool:
    """True when the kernel's NTP state says the clock is synchronised (no TIME_ERROR)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    buffer = _Timex()
    state = libc.adjtimex(ctypes.byref(buffer))
    return bool(state >= 0 and state != _TIME_ERROR)


def timedatectl_synchronised() -> bool:
    """True when systemd-timesyncd (or chrony via timedated) reports NTPSynchronized=yes."""
    try:
        result = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.stdout.strip() == "yes"


def make_sync_check(kind: Literal["adjtimex", "timedatectl", "none"]) -> Callable[[], bool]:
    if kind == "adjtimex":
        return adjtimex_synchronised
    if kind == "timedatectl":
        return timedatectl_synchronised
    return lambda: True


class TrustedClock:
    """Maps monotonic instants to UTC once the wall clock is trusted.

    The offset (wall - monotonic) is taken when sync is first seen and only ever moves forward:
    stamps are monotonic, so a backwards step of the wall clock (logged when larger than
    ``max_step``) never puts a reading into an earlier window or day.
    """

    def __init__(self, is_synchronised: Callable[[], bool], *,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 max_step: float = 2.0) -> None:
        self._is_synchronised = is_synchronised
        self._wall = wall
        self._monotonic = monotonic
        self._max_step = max_step
        self._offset: float | None = None

    @property
    def synchronised(self) -> bool:
        return self._offset is not None

    def monotonic(self) -> float:
        return self._monotonic()

    def check(self) -> bool:
        """Poll the sync state; returns True once the clock is trusted."""
        offset = self._wall() - self._monotonic()
        if self._offset is None:
            if self._is_synchronised():
                self._offset = offset
                log.info("wall clock synchronised; held readings can be stamped")
            return self._offset is not None
        if offset < self._offset - self._max_step:
            log.warning("wall clock stepped back by %.1f s; stamping stays on the monotonic clock",
                        self._offset - offset)
        elif offset > self._offset + self._max_step:
            log.info("wall clock stepped forward by %.1f s", offset - self._offset)
            self._offset = offset
        elif offset > self._offset:
            self._offset = offset  # a forward slew; backward slews are not followed
        return True

    def stamp(self, monotonic_instant: float) -> datetime | None:
        """UTC time of a monotonic instant, or None while the clock is not trusted."""
        if self._offset is None:
            return None
        return datetime.fromtimestamp(monotonic_instant + self._offset, UTC)


class SimulatedClock(TrustedClock):
    """Simulated time for demos and tests: starts at ``start`` and runs ``speed`` times faster.

    Polling stays on the real monotonic clock (devices are polled at their real intervals);
    only the stamps, and so the windows they fall into, run fast.
    """

    def __init__(self, start: datetime, speed: float, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(lambda: True, monotonic=monotonic)
        self._start = start.timestamp()
        self._speed = speed
        self._origin = monotonic()
        self._offset = 0.0

    def check(self) -> bool:
        return True

    def stamp(self, monotonic_instant: float) -> datetime | None:
        return datetime.fromtimestamp(
            self._start + (monotonic_instant - self._origin) * self._speed, UTC)
