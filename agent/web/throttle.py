"""The login throttle of the household page: per client address, nothing global.

Per address (the TCP peer; no proxy header is read): after the k-th wrong code the next attempt
waits ``2**(k-1)`` seconds (at most ``max_delay``); after ``max_failures`` wrong codes that
address is locked out for ``lockout``; a right code clears that address only. One address has
at most one attempt under way (a second gets a one-second wait instead of queueing), so a
device cannot race its own back-off nor fill the queue in front of the household.

There is no ceiling shared by all addresses: one would let any device on the LAN lock every
household device out by typing wrong codes from a few addresses. What many addresses can still
do is stated, with figures, in docs/household-page.md.

The table holds at most ``clients`` addresses (1,024 by default: more than an IPv4 /22). It is
keyed by an HMAC of the address under the page key, so neither memory dumps of it nor its file
list addresses. When it is full, entries whose wait is over and whose last wrong code is older
than ``lockout`` go first, then the one whose wait ends soonest.

The table survives a restart: ``<state_dir>/web-login-throttle.json`` (mode 0600, atomic),
written when an address is locked out and otherwise at most every ``_SAVE_EVERY`` (so a device
typing wrong codes cannot wear the SD card: a few writes a minute of at most ~100 KB). A crash
can forget the wrong codes of the last ten seconds, never a lock-out. File format (version 1)::

    {"v": 1, "clients": [{"id": "<32 hex>", "failures": 3, "locked": false,
                          "last": "<ISO 8601>", "not_before": "<ISO 8601>" | null}, ...]}
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from agent.web import statefile
from agent.web.security import derive

log = logging.getLogger(__name__)

THROTTLE_FILE = "web-login-throttle.json"
_VERSION = 1
_SAVE_EVERY = timedelta(seconds=10)
_ID = re.compile(r"[0-9a-f]{32}")


class WaitReason(Enum):
    """Why a login attempt is refused before the code is checked."""

    BACKOFF = "backoff"
    """This device typed wrong codes (or has an attempt under way): a short wait."""
    LOCKED = "locked"
    """This device typed too many wrong codes: a long wait."""


@dataclass(frozen=True, kw_only=True)
class Wait:
    """A refusal: ``seconds`` until a code may be tried again, and why."""

    seconds: int
    reason: WaitReason


@dataclass(kw_only=True)
class _Client:
    failures: int
    last: datetime
    not_before: datetime | None = None
    locked: bool = False


class LoginThrottle:
    """Per-address back-off and lock-out of wrong pairing codes (see the module's text)."""

    def __init__(self, *, clock: Callable[[], datetime], key: bytes, path: Path | None = None,
                 max_failures: int = 10, lockout: timedelta = timedelta(minutes=15),
                 max_delay: timedelta = timedelta(seconds=60), clients: int = 1024) -> None:
        self._clock = clock
        self._key = derive(key, b"login-throttle")
        self._path = path
        self._max_failures = max_failures
        self._lockout = lockout
        self._max_delay = max_delay
        self._capacity = clients
        self._clients: dict[str, _Client] = {}
        self._busy: set[str] = set()
        self._saved: datetime | None = None
        self._dirty = False
        self._load()

    def __len__(self) -> int:
        """Addresses tracked."""
        return len(self._clients)

    def begin(self, address: str) -> Wait | None:
        """Why ``address`` may not try a code now, or None: then its attempt is under way
        until :meth:`failed`, :meth:`succeeded` or :meth:`release`."""
        now = self._clock()
        if self._dirty:
            self._save_if_due(now)
        cid = self._id(address)
        if cid in self._busy:
            return Wait(seconds=1, reason=WaitReason.BACKOFF)
        wait = self._wait(cid, now)
        if wait is None:
            self._busy.add(cid)
        return wait

    def release(self, address: str) -> None:
        """End an attempt without an outcome (it was not checked)."""
        self._busy.discard(self._id(address))

    def failed(self, address: str) -> Wait:
        """Count a wrong code from ``address``; the wait it now has."""
        now = self._clock()
        cid = self._id(address)
        self._busy.discard(cid)
        record = self._clients.get(cid)
        if record is None:
            self._make_room(now)
            record = self._clients[cid] = _Client(failures=0, last=now)
        record.failures += 1
        record.last = now
        if record.failures >= self._max_failures:
            record.locked, record.not_before = True, now + self._lockout
        else:
            record.not_before = now + min(timedelta(seconds=2 ** (record.failures - 1)),
                                          self._max_delay)
        self._dirty = True
        if record.locked:
            self._save(now)
        else:
            self._save_if_due(now)
        wait = self._wait(cid, now)
        assert wait is not None  # not_before was just set ahead of now
        return wait

    def succeeded(self, address: str) -> None:
        """A right code clears ``address`` (and nothing else)."""
        cid = self._id(address)
        self._busy.discard(cid)
        if self._clients.pop(cid, None) is not None:
            self._dirty = True
            self._save_if_due(self._clock())

    # -- the table ----------------------------------------------------------------------------

    def _id(self, address: str) -> str:
        return hmac.new(self._key, address.encode("utf-8", "replace"),
                        hashlib.sha256).hexdigest()[:32]

    def _wait(self, cid: str, now: datetime) -> Wait | None:
        record = self._clients.get(cid)
        if record is None or record.not_before is None:
            return None
        if record.not_before - now > self._lockout:  # the clock went back: not longer than this
            record.not_before = now + self._lockout
        if now < record.not_before:
            reason = WaitReason.LOCKED if record.locked else WaitReason.BACKOFF
            seconds = max(1, math.ceil((record.not_before - now).total_seconds()))
            return Wait(seconds=seconds, reason=reason)
        if record.locked:  # a lock-out served: the count starts again
            record.locked, record.failures = False, 0
        record.not_before = None
        return None

    def _stale(self, record: _Client, now: datetime) -> bool:
        over = record.not_before is None or record.not_before <= now
        return over and now - record.last >= self._lockout

    def _make_room(self, now: datetime) -> None:
        if len(self._clients) < self._capacity:
            return
        for cid in [c for c, r in self._clients.items() if self._stale(r, now)]:
            del self._clients[cid]
        while len(self._clients) >= self._capacity:
            soonest = min(self._clients, key=lambda c: self._clients[c].not_before or now)
            del self._clients[soonest]

    # -- the file -----------------------------------------------------------------------------

    def _save_if_due(self, now: datetime) -> None:
        if self._saved is None or not self._saved <= now < self._saved + _SAVE_EVERY:
            self._save(now)

    def _save(self, now: datetime) -> None:
        self._dirty = False
        self._saved = now
        if self._path is None:
            return
        for cid in [c for c, r in self._clients.items() if self._stale(r, now)]:
            del self._clients[cid]
        rows = [{"id": cid, "failures": r.failures, "locked": r.locked, "last": r.last.isoformat(),
                 "not_before": None if r.not_before is None else r.not_before.isoformat()}
                for cid, r in self._clients.items()]
        try:
            statefile.save(self._path, {"v": _VERSION, "clients": rows})
        except OSError as exc:  # the throttle still works in memory
            log.warning("cannot save the login throttle to %s: %s", self._path, exc.strerror)

    def _load(self) -> None:
        if self._path is None:
            return
        loaded = statefile.load(self._path, _VERSION, _parse)
        if loaded is None:
            return
        now = self._clock()
        for cid, record in list(loaded.items())[-self._capacity:]:
            self._clients[cid] = record
            self._wait(cid, now)  # clamps a wait a clock set back would lengthen


def _parse(data: dict[str, Any]) -> dict[str, _Client]:
    clients: dict[str, _Client] = {}
    for row in data["clients"]:
        cid, failures, locked = row["id"], row["failures"], row["locked"]
        if not isinstance(cid, str) or _ID.fullmatch(cid) is None:
            raise statefile.DamagedFile("a client id is not 32 hex digits")
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise statefile.DamagedFile("failures is not a positive whole number")
        if not isinstance(locked, bool):
            raise statefile.DamagedFile("locked is not true or false")
        not_before = row["not_before"]
        clients[cid] = _Client(failures=failures, locked=locked, last=statefile.when(row["last"]),
                               not_before=None if not_before is None
                               else statefile.when(not_before))
    return clients
