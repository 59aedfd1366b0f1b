"""Login, sessions, CSRF tokens and the login throttle of the household page.

Pairing-code hash file
    One line of ASCII, written at provisioning by :func:`hash_pairing_code`::

        scrypt$<log2 N>$<r>$<p>$<salt, base64url>$<32-byte key, base64url>

    e.g. ``scrypt$14$8$1$...$...``. The file is read once at start-up (mode 0600 expected).

Sessions
    See :mod:`agent.web.sessions`. A session starts anonymous (so the login form has a CSRF
    token) and is replaced by a fresh one at login (no session fixation).

Throttle
    Per client address, under a global ceiling: see :class:`LoginThrottle`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path

from agent.web.errors import WebError
from agent.web.sessions import Session

log = logging.getLogger(__name__)

_SCHEME = "scrypt"
# N=2**14, r=8: 16 MiB and ~50 ms here; the throttle, not the hash cost, stops guessing.
_LOG2_N, _R, _P, _DKLEN = 14, 8, 1, 32
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_pairing_code(code: str, *, salt: bytes | None = None, log2_n: int = _LOG2_N) -> str:
    """The hash-file line for ``code`` (used by provisioning; the code itself is never stored)."""
    if not code.strip():
        raise WebError("the pairing code must not be empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    key = hashlib.scrypt(code.encode("utf-8"), salt=salt, n=1 << log2_n, r=_R, p=_P,
                         dklen=_DKLEN, maxmem=_MAXMEM)
    return f"{_SCHEME}${log2_n}${_R}${_P}${_b64(salt)}${_b64(key)}"


@dataclass(frozen=True, kw_only=True)
class PairingHash:
    """A parsed hash-file line."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, line: str) -> PairingHash:
        """Parse a hash-file line; a malformed line raises :class:`WebError` saying what."""
        parts = line.strip().split("$")
        if len(parts) != 6 or parts[0] != _SCHEME:
            raise WebError("pairing hash: expected scrypt$<log2 N>$<r>$<p>$<salt>$<key>")
        try:
            log2_n, r, p = (int(x) for x in parts[1:4])
            salt, key = _unb64(parts[4]), _unb64(parts[5])
        except ValueError as exc:
            raise WebError("pairing hash: parameters or base64 fields are malformed") from exc
        if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 4):
            raise WebError("pairing hash: scrypt parameters out of range")
        if len(salt) < 8 or len(key) < 16:
            raise WebError("pairing hash: salt or key too short")
        return cls(log2_n=log2_n, r=r, p=p, salt=salt, key=key)

    def verify(self, code: str) -> bool:
        """Whether ``code`` matches (constant-time compare; ~0.1 s of CPU: run in a thread)."""
        got = hashlib.scrypt(code.encode("utf-8"), salt=self.salt, n=1 << self.log2_n,
                             r=self.r, p=self.p, dklen=len(self.key), maxmem=_MAXMEM)
        return hmac.compare_digest(got, self.key)

    def fingerprint(self) -> str:
        """A digest that changes with the pairing code (a new salt at every provisioning).

        Stored with the page's sessions so a new code ends them. Without the salt, which only
        the hash file holds, it gives no way to test guesses of the code offline."""
        material = b"hems-pairing-fingerprint\0" + self.salt + self.key
        return hashlib.sha256(material).hexdigest()


def load_pairing_hash(path: Path) -> PairingHash:
    """Read and parse the pairing-hash file written at provisioning."""
    try:
        line = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise WebError(f"{path}: cannot read the pairing hash file") from exc
    try:
        return PairingHash.parse(line)
    except WebError as exc:
        raise WebError(f"{path}: {exc}") from exc


def csrf_ok(session: Session | None, token: object) -> bool:
    """Whether ``token`` is the synchronizer token of ``session`` (constant-time)."""
    if session is None or not isinstance(token, str) or not token.isascii():
        return False
    return hmac.compare_digest(token.encode("ascii"), session.csrf.encode("ascii"))


class WaitReason(Enum):
    """Why a login attempt is refused before the code is checked."""

    BACKOFF = "backoff"
    """This device typed wrong codes: a short wait."""
    LOCKED = "locked"
    """This device typed too many wrong codes: a long wait."""
    EVERYONE = "everyone"
    """Too many wrong codes on the gateway from several devices: nobody may try for a while."""


@dataclass(frozen=True, kw_only=True)
class Wait:
    """A refusal: ``seconds`` until a code may be tried again, and why."""

    seconds: int
    reason: WaitReason


@dataclass(kw_only=True)
class _Client:
    failures: int = 0
    not_before: datetime | None = None
    locked: bool = False


class LoginThrottle:
    """Per-client exponential back-off and lock-out, under a global ceiling of wrong codes.

    Per client (the peer address): after the k-th wrong code the next attempt waits
    ``2**(k-1)`` seconds (at most ``max_delay``); after ``max_failures`` the client is locked
    for ``lockout``. A right code clears that client only. So one device guessing on the LAN
    does not lock the household's phone out. Addresses are cheap on a LAN (IPv6 privacy
    addresses, a second Wi-Fi client), so every wrong code also counts towards a global
    ceiling: ``global_failures`` within ``lockout`` lock the login for everyone for
    ``lockout``. With 10-digit pairing codes this bounds guessing to ~60 codes an hour
    whatever the number of addresses; sessions already logged in keep working.

    The counts live in memory, deliberately: writing a wrong guess to storage would let any
    device on the LAN wear the gateway's SD card, and a restart of the daemon is not something
    a guesser on the LAN can cause. At most ``clients`` addresses are tracked (least recently
    seen forgotten first); forgetting one only resets its own back-off, never the ceiling.
    """

    def __init__(self, *, clock: Callable[[], datetime], max_failures: int = 10,
                 lockout: timedelta = timedelta(minutes=15),
                 max_delay: timedelta = timedelta(seconds=60), global_failures: int = 30,
                 clients: int = 256) -> None:
        self._clock = clock
        self._max_failures = max_failures
        self._lockout = lockout
        self._max_delay = max_delay
        self._global_failures = global_failures
        self._capacity = clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._recent: deque[datetime] = deque()  # wrong codes within ``lockout``, any client
        self._everyone_until: datetime | None = None

    def check(self, client: str) -> Wait | None:
        """Why ``client`` may not try a code now, or None. Ends expired waits."""
        now = self._clock()
        if self._everyone_until is not None:
            if now < self._everyone_until:
                return Wait(seconds=_ceil(self._everyone_until - now),
                            reason=WaitReason.EVERYONE)
            self._everyone_until = None
        record = self._clients.get(client)
        if record is None or record.not_before is None:
            return None
        if now < record.not_before:
            reason = WaitReason.LOCKED if record.locked else WaitReason.BACKOFF
            return Wait(seconds=_ceil(record.not_before - now), reason=reason)
        if record.locked:
            record.locked, record.failures = False, 0
        record.not_before = None
        return None

    def failed(self, client: str) -> None:
        """Count a wrong code from ``client``: its next back-off or lock-out, and the ceiling."""
        now = self._clock()
        record = self._clients.pop(client, None) or _Client()
        self._clients[client] = record  # most recently seen last
        while len(self._clients) > self._capacity:
            self._clients.popitem(last=False)
        record.failures += 1
        if record.failures >= self._max_failures:
            record.locked, record.not_before = True, now + self._lockout
        else:
            record.not_before = now + min(timedelta(seconds=2 ** (record.failures - 1)),
                                          self._max_delay)
        self._recent.append(now)
        while self._recent and now - self._recent[0] >= self._lockout:
            self._recent.popleft()
        if len(self._recent) >= self._global_failures:
            self._everyone_until = now + self._lockout
            self._recent.clear()
            log.warning("login paused for every device: %d wrong pairing codes within %s",
                        self._global_failures, self._lockout)

    def succeeded(self, client: str) -> None:
        """A right code clears ``client``'s count (not the global one)."""
        self._clients.pop(client, None)


def _ceil(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))
