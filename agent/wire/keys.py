"""Key files: the gateway's Ed25519 signing key and the recipients' HPKE keys.

Formats (see docs/wire-format.md):

* Ed25519 device key: PKCS#8 PEM (private), SubjectPublicKeyInfo PEM (public).
* X25519 recipient key: PKCS#8 / SubjectPublicKeyInfo PEM.
* ML-KEM-768+X25519 recipient key: no standard PEM exists for the pair, so an armoured raw
  form: ``-----BEGIN HEMS MLKEM768X25519 PRIVATE KEY-----`` around base64 of the ML-KEM seed
  (64 bytes) followed by the X25519 private key (32 bytes); the public form holds the ML-KEM
  encapsulation key (1184 bytes) followed by the X25519 public key (32 bytes).

A key id is the lowercase hex of the first 16 bytes of SHA-256 over the raw public key bytes.
Private key files must not be readable by group or others (mode 0600 or stricter).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from agent.errors import KeyFileError
from agent.paths import ROTATED_KEYS_FILE
from policy.storage import atomic_write

KEM_X25519 = "x25519"
KEM_HYBRID = "mlkem768x25519"
KEMS = (KEM_X25519, KEM_HYBRID)
_ARMOUR = "HEMS MLKEM768X25519"
_MLKEM_SEED, _MLKEM_PUB, _X25519_LEN = 64, 1184, 32


def key_id(raw_public: bytes) -> str:
    """Fingerprint of a raw public key: hex of the first 16 bytes of its SHA-256."""
    return hashlib.sha256(raw_public).digest()[:16].hex()


def device_key_id(key: ed25519.Ed25519PublicKey) -> str:
    """Key id of a device's Ed25519 public key."""
    return key_id(key.public_bytes_raw())


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientPublicKey:
    """A recipient's HPKE public key with its KEM name and raw bytes (for the key id)."""

    kem: str
    raw: bytes
    key: x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey

    @property
    def key_id(self) -> str:
        return key_id(self.raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientPrivateKey:
    """A recipient's HPKE private key and its public half."""

    kem: str
    raw: bytes
    key: x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
    public: RecipientPublicKey

    @property
    def key_id(self) -> str:
        return self.public.key_id


def recipient_private_from_raw(kem: str, raw: bytes) -> RecipientPrivateKey:
    """Build a recipient private key from its raw bytes (see module docstring)."""
    if kem == KEM_X25519:
        if len(raw) != _X25519_LEN:
            raise KeyFileError(f"an X25519 private key is 32 bytes, got {len(raw)}")
        xk = x25519.X25519PrivateKey.from_private_bytes(raw)
        xpub = xk.public_key()
        pub = RecipientPublicKey(kem=kem, raw=xpub.public_bytes_raw(), key=xpub)
        return RecipientPrivateKey(kem=kem, raw=raw, key=xk, public=pub)
    if kem == KEM_HYBRID:
        if len(raw) != _MLKEM_SEED + _X25519_LEN:
            raise KeyFileError(f"an ML-KEM-768+X25519 private key is 96 bytes, got {len(raw)}")
        mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM_SEED])
        xk = x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM_SEED:])
        pub_raw = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
        pub = recipient_public_from_raw(kem, pub_raw)
        return RecipientPrivateKey(
            kem=kem, raw=raw, key=hpke.MLKEM768X25519PrivateKey(mk, xk), public=pub
        )
    raise KeyFileError(f"unknown KEM {kem!r}: expected one of {KEMS}")


def recipient_public_from_raw(kem: str, raw: bytes) -> RecipientPublicKey:
    """Build a recipient public key from its raw bytes (see module docstring)."""
    if kem == KEM_X25519:
        if len(raw) != _X25519_LEN:
            raise KeyFileError(f"an X25519 public key is 32 bytes, got {len(raw)}")
        xpub = x25519.X25519PublicKey.from_public_bytes(raw)
        return RecipientPublicKey(kem=kem, raw=raw, key=xpub)
    if kem == KEM_HYBRID:
        if len(raw) != _MLKEM_PUB + _X25519_LEN:
            raise KeyFileError(f"an ML-KEM-768+X25519 public key is 1216 bytes, got {len(raw)}")
        mpub = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUB])
        xpub = x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM_PUB:])
        return RecipientPublicKey(kem=kem, raw=raw, key=hpke.MLKEM768X25519PublicKey(mpub, xpub))
    raise KeyFileError(f"unknown KEM {kem!r}: expected one of {KEMS}")


def generate_recipient_key(kem: str = KEM_X25519) -> RecipientPrivateKey:
    """A fresh recipient key pair for ``kem``."""
    if kem == KEM_X25519:
        return recipient_private_from_raw(kem, os.urandom(_X25519_LEN))
    return recipient_private_from_raw(kem, os.urandom(_MLKEM_SEED + _X25519_LEN))


def _armour(kind: str, raw: bytes) -> bytes:
    body = base64.encodebytes(raw).decode("ascii")
    return f"-----BEGIN {_ARMOUR} {kind}-----\n{body}-----END {_ARMOUR} {kind}-----\n".encode()


def _unarmour(data: bytes, kind: str, path: Path) -> bytes | None:
    text = data.decode("ascii", errors="replace").strip()
    begin, end = f"-----BEGIN {_ARMOUR} {kind}-----", f"-----END {_ARMOUR} {kind}-----"
    if not text.startswith(begin):
        return None
    if not text.endswith(end):
        raise KeyFileError(f"{path}: missing '{end}'")
    try:
        return base64.b64decode(text[len(begin) : -len(end)], validate=False)
    except ValueError as exc:
        raise KeyFileError(f"{path}: bad base64 in the key body") from exc


def recipient_private_pem(key: RecipientPrivateKey) -> bytes:
    """File bytes of a recipient private key (PKCS#8 PEM, or the armoured hybrid form)."""
    if key.kem == KEM_HYBRID:
        return _armour("PRIVATE KEY", key.raw)
    assert isinstance(key.key, x25519.X25519PrivateKey)
    return key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def recipient_public_pem(key: RecipientPublicKey) -> bytes:
    """File bytes of a recipient public key (SPKI PEM, or the armoured hybrid form)."""
    if key.kem == KEM_HYBRID:
        return _armour("PUBLIC KEY", key.raw)
    assert isinstance(key.key, x25519.X25519PublicKey)
    return key.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_recipient_private(path: Path) -> RecipientPrivateKey:
    """Load a recipient private key file (either format); it must be mode 0600 or stricter."""
    data = _read_private(path)
    raw = _unarmour(data, "PRIVATE KEY", path)
    if raw is not None:
        return recipient_private_from_raw(KEM_HYBRID, raw)
    key = _load_pem_private(data, path)
    if not isinstance(key, x25519.X25519PrivateKey):
        raise KeyFileError(f"{path}: not an X25519 or ML-KEM-768+X25519 private key")
    return recipient_private_from_raw(KEM_X25519, key.private_bytes_raw())


def load_recipient_public(path: Path) -> RecipientPublicKey:
    """Load a recipient public key file (either format); a private key is refused, so the
    recipient's private key is never left on a gateway by mistake."""
    data = _read(path)
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(f"{path}: a private key, not a public key: give the recipient's "
                           "public key (its private key must never be on the gateway)")
    raw = _unarmour(data, "PUBLIC KEY", path)
    if raw is not None:
        return recipient_public_from_raw(KEM_HYBRID, raw)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, x25519.X25519PublicKey):
        raise KeyFileError(f"{path}: not an X25519 or ML-KEM-768+X25519 public key")
    return recipient_public_from_raw(KEM_X25519, key.public_bytes_raw())


def device_private_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM of a device signing key."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def device_public_pem(key: ed25519.Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of a device's public key (what the backend registers)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_device_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Load the gateway's Ed25519 signing key; the file must be mode 0600 or stricter."""
    key = _load_pem_private(_read_private(path), path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return key


def load_device_public(data: bytes, source: str) -> ed25519.Ed25519PublicKey:
    """Parse a device public key given as SPKI PEM or 32 raw bytes."""
    try:
        key = (ed25519.Ed25519PublicKey.from_public_bytes(data) if len(data) == 32
               else serialization.load_pem_public_key(data))
    except ValueError as exc:
        raise KeyFileError(f"{source}: not an Ed25519 public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{source}: not an Ed25519 public key")
    return key


def ensure_device_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Load the device key at ``path``, generating it (mode 0600) if absent: idempotent."""
    if path.exists():
        return load_device_key(path)
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_file(path, device_private_pem(key))
    return key


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 0600 (temp file, fsync, rename)."""
    write_file_atomic(path, data, mode=0o600)


def write_file_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` so a power cut leaves the old or the new file, never a torn
    one: a temp file with ``mode``, fsync, rename, then fsync of the directory."""
    atomic_write(path, data, mode=mode)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.strerror})") from exc


def exposed_mode(path: Path) -> int | None:
    """The permission bits of a secret file if group or others can access it, else None.

    Raises OSError when the file cannot be examined (missing, unreadable directory).
    """
    mode = path.stat().st_mode
    return stat.S_IMODE(mode) if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def _read_private(path: Path) -> bytes:
    try:
        mode = exposed_mode(path)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.strerror})") from exc
    if mode is not None:
        raise KeyFileError(
            f"{path}: private key is accessible by group or others (mode "
            f"{mode:04o}); run `chmod 600 {path}`"
        )
    return _read(path)


def _load_pem_private(data: bytes, path: Path) -> object:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key") from exc


def retired_device_keys(state_dir: Path) -> list[ed25519.Ed25519PublicKey]:
    """Public halves of the device's retired signing keys (written at key rotation)."""
    path = state_dir / ROTATED_KEYS_FILE
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["keys"]
        return [load_device_public(e["public_key"].encode("ascii"), str(path)) for e in entries]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"{path}: not a list of retired device keys: {exc}") from exc


def device_history_verifier(current: ed25519.Ed25519PublicKey,
                            retired: list[ed25519.Ed25519PublicKey]
                            ) -> Callable[[bytes, bytes], bool]:
    """``verify(message, signature)`` accepting the current device key or a retired one.

    Consent records stay signed by the key that was current when they were written; after a
    rotation they still verify, so the ledger is never rewritten.
    """
    keys = [current, *retired]

    def verify(message: bytes, signature: bytes) -> bool:
        for key in keys:
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            return True
        return False

    return verify
