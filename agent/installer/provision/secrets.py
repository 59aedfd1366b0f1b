"""The keys and secrets ``hems-agent provision`` makes: the device signing key (kept, created or
rotated), the household pairing code and the page's TLS certificate.

Private halves are written 0600 and never printed; the pairing code is shown once, only its hash
is kept. A rotated device key's public half stays in ``<state_dir>/keys/rotated.json`` with the
time until which the backend should still accept it.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.paths import ROTATED_KEYS_FILE

PAIRING_DIGITS = 10


def device_key(path: Path, state: Path, *, rotate: bool, grace: timedelta) -> dict[str, Any]:
    """Keep, create or rotate the device signing key; the private half is never shown."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from agent.wire import keys

    outcome: dict[str, Any] = {"device_key": "kept"}
    if not path.exists():
        outcome["device_key"] = "generated"
    elif rotate:
        old = keys.load_device_key(path).public_key()
        now = datetime.now(UTC).replace(microsecond=0)
        entry = {"key_id": keys.device_key_id(old), "public_key": keys.device_public_pem(old)
                 .decode(), "retired": now.isoformat(),
                 "valid_until": (now + grace).isoformat()}
        history = rotation_history(state)
        history["keys"].append(entry)
        new = ed25519.Ed25519PrivateKey.generate()
        # The retired public key is recorded first: consent records it signed keep verifying
        # (agent.wire.keys.device_history_verifier), so the ledger itself is never rewritten.
        write_public(state / ROTATED_KEYS_FILE, json.dumps(history, indent=2).encode() + b"\n")
        keys.write_private_file(path, keys.device_private_pem(new))
        outcome.update(device_key="rotated", rotated=entry)
    key = keys.ensure_device_key(path).public_key()
    pem = keys.device_public_pem(key)
    write_public(path.with_suffix(".pub"), pem)
    outcome.update(device_public_pem=pem.decode(), device_key_id=keys.device_key_id(key))
    return outcome


def rotation_history(state_dir: Path) -> dict[str, Any]:
    """The retired device keys as written at rotation (``{"keys": []}`` before the first)."""
    path = state_dir / ROTATED_KEYS_FILE
    history: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"keys": []}
    return history


def new_pairing_code() -> str:
    """Digits only: easy to type on a phone and to read out over the telephone."""
    return "".join(secrets.choice("0123456789") for _ in range(PAIRING_DIGITS))


def write_pairing_code(path: Path) -> str:
    """A new pairing code, its hash written to ``path`` (0600); the code is for showing once."""
    from agent.web.security import hash_pairing_code
    from agent.wire.keys import write_private_file

    code = new_pairing_code()
    write_private_file(path, hash_pairing_code(code).encode("ascii") + b"\n")
    return code


def page_certificate(web: dict[str, Any]) -> None:
    """A self-signed certificate for the page's LAN address (the household accepts it once)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from agent.wire.keys import write_private_file

    address = ipaddress.ip_address(web["listen"].rpartition(":")[0].strip("[]"))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hems-agent household page")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(address)]), critical=False)
            .sign(key, hashes.SHA256()))
    write_private_file(Path(web["tls_key"]), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    write_public(Path(web["tls_cert"]), cert.public_bytes(serialization.Encoding.PEM))


def write_public(path: Path, data: bytes) -> None:
    """Atomic write, mode 0644 (configuration, public keys, certificates)."""
    from agent.wire.keys import write_file_atomic

    write_file_atomic(path, data, mode=0o644)
