"""Login, sessions, CSRF tokens and the login throttle of the household page.

Pairing-code hash file
    One line of ASCII, written at provisioning by :func:`hash_pairing_code`::

        scrypt$<log2 N>$<r>$<p>$<salt, base64url>$<32-byte key, base64url>

    e.g. ``scrypt$14$8$1$...$...``. The file is read once at start-up (mode 0600 expected).

Sessions
    Kept in memory (a restart logs the household out). The cookie carries a random session id
    and its HMAC-SHA256 under a per-process key, so a forged or altered cookie is rejected
    before any lookup. A session starts anonymous (so the login form has a CSRF token) and is
    replaced by a fresh one at login (no session fixation).

Throttle
    Global, not per address: on a LAN addresses are cheap. After the k-th wrong code the next
    attempt is refused for ``2**(k-1)`` seconds (capped); after ``max_failures`` wrong codes the
    login is locked for ``lockout``. A right code resets the count.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from agent.web.errors import WebError

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


@dataclass(frozen=True, kw_only=True)
class Session:
    """One browser session: ``csrf`` is the synchronizer token bound to it."""

    sid: str
    csrf: str
    authenticated: bool
    expires: datetime
    ends: datetime  # absolute end, however active the session is


class SessionStore:
    """In-memory sessions behind signed cookies; bounded so anonymous visits cannot fill it."""

    def __init__(self, *, key: bytes, clock: Callable[[], datetime], idle: timedelta,
                 absolute: timedelta, capacity: int = 64) -> None:
        self._key = key
        self._clock = clock
        self._idle = idle
        self._absolute = absolute
        self._capacity = capacity
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def cookie_value(self, session: Session) -> str:
        """The signed cookie value for ``session``."""
        return f"{session.sid}.{self._sign(session.sid)}"

    def _sign(self, sid: str) -> str:
        return _b64(hmac.new(self._key, sid.encode("ascii"), hashlib.sha256).digest())

    def new(self, *, authenticated: bool) -> Session:
        """Start a session (evicting the least recently used one when full)."""
        now = self._clock()
        session = Session(sid=secrets.token_urlsafe(24), csrf=secrets.token_urlsafe(32),
                          authenticated=authenticated, expires=now + self._idle,
                          ends=now + self._absolute)
        self._sessions[session.sid] = session
        while len(self._sessions) > self._capacity:
            self._sessions.popitem(last=False)
        return session

    def get(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (refreshing its idle timer), or None."""
        if not cookie or cookie.count(".") != 1:
            return None
        sid, mac = cookie.split(".")
        if not sid.isascii() or not hmac.compare_digest(mac.encode(), self._sign(sid).encode()):
            return None
        session = self._sessions.get(sid)
        now = self._clock()
        if session is None or now >= session.expires or now >= session.ends:
            self._sessions.pop(sid, None)
            return None
        session = replace(session, expires=min(now + self._idle, session.ends))
        self._sessions[sid] = session
        self._sessions.move_to_end(sid)
        return session

    def drop(self, session: Session) -> None:
        """End a session (logout, or replaced at login)."""
        self._sessions.pop(session.sid, None)


def csrf_ok(session: Session | None, token: object) -> bool:
    """Whether ``token`` is the synchronizer token of ``session`` (constant-time)."""
    if session is None or not isinstance(token, str) or not token.isascii():
        return False
    return hmac.compare_digest(token.encode("ascii"), session.csrf.encode("ascii"))


class LoginThrottle:
    """Exponential back-off between wrong codes and a lock-out after too many."""

    def __init__(self, *, clock: Callable[[], datetime], max_failures: int = 10,
                 lockout: timedelta = timedelta(minutes=15),
                 max_delay: timedelta = timedelta(seconds=60)) -> None:
        self._clock = clock
        self._max_failures = max_failures
        self._lockout = lockout
        self._max_delay = max_delay
        self._failures = 0
        self._not_before: datetime | None = None
        self.locked = False

    def wait_seconds(self) -> int:
        """Seconds until a code may be tried again (0: now). Ends an expired lock-out."""
        if self._not_before is None:
            return 0
        left = (self._not_before - self._clock()).total_seconds()
        if left > 0:
            return math.ceil(left)
        if self.locked:
            self.locked, self._failures = False, 0
        self._not_before = None
        return 0

    def failed(self) -> None:
        """Count a wrong code and set the next back-off (or the lock-out)."""
        self._failures += 1
        now = self._clock()
        if self._failures >= self._max_failures:
            self.locked = True
            self._not_before = now + self._lockout
        else:
            delay = min(timedelta(seconds=2 ** (self._failures - 1)), self._max_delay)
            self._not_before = now + delay

    def succeeded(self) -> None:
        """A right code clears the count."""
        self._failures, self._not_before, self.locked = 0, None, False
