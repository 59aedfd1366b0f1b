"""Sessions of the household page, kept across a restart of the daemon.

The cookie is a random 192-bit token. The store keys sessions by the SHA-256 of that token and
keeps nothing else about it; the CSRF token of a session is an HMAC of a fixed label under the
token, so it too needs no storage. A logged-in session is written to
``<state_dir>/web-sessions.json`` (mode 0600, atomically) with its idle and absolute ends, so an
update or a power cut does not log the household out. Whoever copies that file learns hashes
and times: no cookie and no CSRF token can be rebuilt from it, and every entry dies within the
absolute lifetime (12 hours) like the session itself.

File format (version 1)::

    {"v": 1, "pairing": "<fingerprint of the pairing hash>",
     "sessions": [{"id": "<sha256 hex of the cookie>", "expires": "<ISO 8601>",
                   "ends": "<ISO 8601>"}, ...]}

A file written under another pairing code (``hems-agent provision --new-pairing-code``) is
discarded at start-up: a new code logs every device out. Expired entries are pruned on every
write. There are no anonymous sessions: the login form's CSRF token is signed, not stored
(:class:`agent.web.security.LoginTokens`), so visits to the login page cause no writes and
hold nothing that other visits could push out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.web import statefile

log = logging.getLogger(__name__)

_VERSION = 1
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")
# The idle end moves on every request; it is written only once it has moved this far, so an
# active page costs at most one write a minute. A restart can shorten a session by this much.
_SAVE_SLACK = timedelta(seconds=60)


@dataclass(frozen=True, kw_only=True)
class Session:
    """One browser session as a request sees it. ``csrf`` is its synchronizer token."""

    sid: str
    """SHA-256 of the cookie (hex): how the store names the session."""
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    authenticated: bool
    expires: datetime
    ends: datetime  # absolute end, however active the session is


@dataclass(kw_only=True)
class _Entry:
    expires: datetime
    ends: datetime
    saved: datetime  # the idle end the file holds


class SessionStore:
    """Logged-in sessions behind random cookies, persisted to ``path`` (None: memory).

    ``pairing`` is a fingerprint of the pairing hash (:meth:`PairingHash.fingerprint`).
    ``capacity`` bounds the sessions (the oldest is logged out first).
    """

    def __init__(self, *, path: Path | None, pairing: str, clock: Callable[[], datetime],
                 idle: timedelta, absolute: timedelta, capacity: int = 16) -> None:
        self._path = path
        self._pairing = pairing
        self._clock = clock
        self._idle = idle
        self._absolute = absolute
        self._capacity = capacity
        self._authed: dict[str, _Entry] = {}  # oldest first
        self._load()

    def cookie_value(self, session: Session) -> str:
        """The cookie value for ``session``."""
        return session.token

    def new(self) -> Session:
        """Start a logged-in session; it is written to the file before it is returned."""
        now = self._clock()
        token = secrets.token_urlsafe(24)
        entry = _Entry(expires=now + self._idle, ends=now + self._absolute,
                       saved=now + self._idle)
        sid = _sid(token)
        self._authed[sid] = entry
        self._save()
        return _session(sid, token, entry)

    def get(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (refreshing its idle timer), or None."""
        if not cookie or _TOKEN.fullmatch(cookie) is None:
            return None
        sid = _sid(cookie)
        entry = self._authed.get(sid)
        now = self._clock()
        if entry is None:
            return None
        if not self._alive(entry, now):
            del self._authed[sid]
            self._save()
            return None
        entry.expires = min(now + self._idle, entry.ends)
        if entry.expires - entry.saved >= _SAVE_SLACK:
            try:
                self._save()
            except OSError as exc:  # the session still works; only a restart would end it
                log.warning("cannot save page sessions to %s: %s", self._path, exc.strerror)
        return _session(sid, cookie, entry)

    def drop(self, session: Session) -> None:
        """End a session (logout, or replaced at login)."""
        if self._authed.pop(session.sid, None) is not None:
            self._save()

    def drop_all(self) -> int:
        """Log out every device ("log out everywhere"); returns how many sessions ended."""
        count = len(self._authed)
        self._authed.clear()
        self._save()
        return count

    def __len__(self) -> int:
        """Logged-in sessions held (expired ones included until the next write)."""
        return len(self._authed)

    def _alive(self, entry: _Entry, now: datetime) -> bool:
        # A session that ends more than its lifetime from now was started in the clock's
        # future: the clock went back (a gateway without a battery clock); it is not trusted.
        return now < entry.expires and now < entry.ends and entry.ends - now <= self._absolute

    # -- the file ---------------------------------------------------------------------------

    def _save(self) -> None:
        """Prune expired sessions, evict the oldest over capacity, write the file."""
        now = self._clock()
        live = {sid: e for sid, e in self._authed.items() if self._alive(e, now)}
        while len(live) > self._capacity:
            del live[next(iter(live))]
        self._authed = live
        if self._path is None:
            return
        rows = [{"id": sid, "expires": e.expires.isoformat(), "ends": e.ends.isoformat()}
                for sid, e in live.items()]
        statefile.save(self._path, {"v": _VERSION, "pairing": self._pairing, "sessions": rows})
        for entry in live.values():
            entry.saved = entry.expires

    def _load(self) -> None:
        if self._path is None:
            return
        loaded = statefile.load(self._path, _VERSION, self._parse)
        if loaded is None:
            return
        pairing, entries = loaded
        if pairing != self._pairing:
            log.info("the pairing code changed: every page session has ended")
            entries = {}
        self._authed = dict(sorted(entries.items(), key=lambda item: item[1].ends))
        self._save()  # prunes what expired while the daemon was down

    @staticmethod
    def _parse(data: dict[str, Any]) -> tuple[str, dict[str, _Entry]]:
        entries: dict[str, _Entry] = {}
        for row in data["sessions"]:
            sid = row["id"]
            if not isinstance(sid, str) or re.fullmatch(r"[0-9a-f]{64}", sid) is None:
                raise statefile.DamagedFile("a session id is not a SHA-256 in hex")
            expires = statefile.when(row["expires"])
            entries[sid] = _Entry(expires=expires, ends=statefile.when(row["ends"]),
                                  saved=expires)
        pairing = data["pairing"]
        if not isinstance(pairing, str):
            raise statefile.DamagedFile("pairing is not a string")
        return pairing, entries


def _sid(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _session(sid: str, token: str, entry: _Entry) -> Session:
    csrf = hmac.new(token.encode("ascii"), b"hems-page-csrf", hashlib.sha256).digest()
    return Session(sid=sid, token=token,
                   csrf=base64.urlsafe_b64encode(csrf).decode("ascii").rstrip("="),
                   authenticated=True, expires=entry.expires, ends=entry.ends)
