"""Login, sessions, CSRF tokens and the login throttle of the household page.

Pairing-code hash file
    One line of ASCII, written at provisioning by :func:`hash_pairing_code`::

        scrypt$<log2 N>$<r>$<p>$<salt, base64url>$<32-byte key, base64url>

    e.g. ``scrypt$14$8$1$...$...``. The file is read once at start-up (mode 0600 expected).

Sessions
    See :mod:`agent.web.sessions`. Only a right code starts one, always with a fresh cookie
    (a session the browser had is dropped: no session fixation).

Login-form tokens
    The login form's CSRF token is signed, not stored (:class:`LoginTokens`): no pool that
    anonymous visits could fill. The key is ``<state_dir>/web-page.key`` (:func:`page_key`).

Throttle
    Per client address, nothing global: see :mod:`agent.web.throttle`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from agent.web.errors import WebError
from agent.web.sessions import Session
from agent.wire.keys import write_file_atomic

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


PAGE_KEY_FILE = "web-page.key"
"""32 random bytes (mode 0600): signs the login form's tokens and keys the throttle's table."""
_KEY_BYTES = 32


def page_key(state_dir: Path | None) -> bytes:
    """The page's secret key from ``state_dir`` (made at first start); without a state
    directory a fresh key in memory. A file of the wrong length is replaced (a warning says
    so): the key only signs short-lived form tokens, so a new one costs nothing but a reload
    of an open login form."""
    if state_dir is None:
        return secrets.token_bytes(_KEY_BYTES)
    path = state_dir / PAGE_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    except OSError as exc:
        raise WebError(f"{path}: cannot read the page key ({exc.strerror})") from exc
    if len(key) == _KEY_BYTES:
        return key
    if key:
        log.warning("%s is not a %d-byte key: a new one replaces it", path, _KEY_BYTES)
    key = secrets.token_bytes(_KEY_BYTES)
    try:
        write_file_atomic(path, key, mode=0o600)
    except OSError as exc:
        raise WebError(f"{path}: cannot write the page key ({exc.strerror})") from exc
    return key


def derive(key: bytes, label: bytes) -> bytes:
    """A sub-key of the page key for one use (so one key never serves two purposes)."""
    return hmac.new(key, b"hems-page\0" + label, hashlib.sha256).digest()


class LoginTokens:
    """Signed double-submit CSRF tokens of the login form: nothing is stored per visitor.

    A token is ``<expiry, unix seconds>.<16-byte nonce, base64url>.<HMAC-SHA256, base64url>``
    under a sub-key of the page key. ``GET /login`` sets it as a cookie and puts the same value
    in the form; ``POST /login`` accepts it when cookie and field are equal, the signature is
    right and the expiry is ahead (but not further than ``lifetime``: a clock set back).
    A page on another site can neither read the cookie nor set it (SameSite=Strict, and the
    guard refuses its Origin before that).
    """

    def __init__(self, key: bytes, *, clock: Callable[[], datetime],
                 lifetime: timedelta = timedelta(hours=2)) -> None:
        self._key = derive(key, b"login-form")
        self._clock = clock
        self.lifetime = lifetime

    def issue(self) -> str:
        """A fresh token for one login form."""
        expires = math.floor((self._clock() + self.lifetime).timestamp())
        body = f"{expires}.{_b64(secrets.token_bytes(16))}"
        return f"{body}.{self._mac(body)}"

    def refusal(self, cookie: object, field: object) -> str | None:
        """Why the pair is refused (``missing``, ``mismatch``, ``forged``, ``expired``), or None
        when it is accepted. Constant-time compares; nothing about the visitor is kept."""
        if not (isinstance(cookie, str) and isinstance(field, str) and cookie and field
                and cookie.isascii() and field.isascii()):
            return "missing"
        if not hmac.compare_digest(cookie.encode("ascii"), field.encode("ascii")):
            return "mismatch"
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac.encode("ascii"), self._mac(body).encode("ascii")):
            return "forged"
        expires = int(body.partition(".")[0])  # signed by us: always digits
        now = self._clock().timestamp()
        if not now < expires <= now + self.lifetime.total_seconds() + 1:
            return "expired"
        return None

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())
