"""The demo's generated files: TLS for its broker, keys, broker logins, page pairing, agent.toml.

Everything is written into one directory (a fresh temporary one unless ``--state-dir`` keeps
it). Keys that already exist there are reused, so a kept directory's consent ledger (signed with
the device key) stays verifiable from one run to the next; the pairing code and the broker's TLS
certificate are new on every run. Secrets are files of mode 0600, as on a real gateway.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.wire.keys import (
    KEM_X25519,
    RecipientPrivateKey,
    device_public_pem,
    ensure_device_key,
    generate_recipient_key,
    load_recipient_private,
    recipient_private_pem,
    recipient_public_pem,
    write_private_file,
)

SITE_ID = "demo-home"
RECEIVER_USER = "receiver"
# The catalogue's recipients that hold keys here: the company (service, improvement, ...),
# the support centre and the installer (maintenance watch).
RECIPIENTS = ("company", "support_centre", "installer")


@dataclass(frozen=True, kw_only=True)
class BrokerLogin:
    """A username and the 0600 file holding its password."""

    username: str
    password_file: Path

    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8").strip()


@dataclass(frozen=True, kw_only=True)
class BrokerEndpoint:
    """Where the demo's agent and receiver connect: a TLS URL, its pinned CA, two logins."""

    url: str
    ca_file: Path
    agent: BrokerLogin
    receiver: BrokerLogin
    protocol: str = "3.1.1"


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, kw_only=True)
class DemoFiles:
    """What :func:`write_site` produced; ``pairing_code`` is shown once, never stored."""

    directory: Path
    config: Path
    pairing_code: str
    device_registry: Path
    recipient_keys: Mapping[str, RecipientPrivateKey]

    @property
    def cloud_dir(self) -> Path:
        return self.directory / "cloud"


def make_tls(directory: Path, *, days: int = 2) -> TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("hems-agent demo CA")
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False)
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), now, days)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage, critical=True).sign(ca_key, hashes.SHA256()))
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server = (_builder(_name("localhost"), ca_name, server_key.public_key(), now, days)
              .add_extension(san, critical=False).sign(ca_key, hashes.SHA256()))
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem",
                     key=directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    write_private_file(files.key, server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return files


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
             now: dt.datetime, days: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def free_port() -> int:
    """A TCP port free on loopback right now (its listener binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_login(directory: Path, username: str) -> BrokerLogin:
    """A random password for ``username``, written to ``<directory>/<username>.pass`` (0600)."""
    path = directory / f"{username}.pass"
    write_private_file(path, secrets.token_urlsafe(18).encode("ascii"))
    return BrokerLogin(username=username, password_file=path)


def write_site(directory: Path, *, broker: BrokerEndpoint, devices: list[dict[str, object]],
               page_port: int) -> DemoFiles:
    """Keys (reused if present), the device registry, a pairing code and agent.toml."""
    from agent.installer.provision.secrets import write_pairing_code

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    device_key = ensure_device_key(directory / "device.key")
    keys = {name: _recipient_key(directory, name) for name in RECIPIENTS}
    registry = directory / "devices.json"
    registry.write_text(json.dumps(
        {SITE_ID: device_public_pem(device_key.public_key()).decode()}), encoding="utf-8")
    code = write_pairing_code(directory / "pairing.hash")
    config = directory / "agent.toml"
    config.write_text(agent_toml(directory, broker, devices, page_port), encoding="utf-8")
    return DemoFiles(directory=directory, config=config, pairing_code=code,
                     device_registry=registry, recipient_keys=keys)


def _recipient_key(directory: Path, name: str) -> RecipientPrivateKey:
    private = directory / f"{name}.key"
    if private.exists():
        return load_recipient_private(private)
    key = generate_recipient_key(KEM_X25519)
    write_private_file(private, recipient_private_pem(key))
    (directory / f"{name}.pub").write_bytes(recipient_public_pem(key.public))
    return key


def agent_toml(directory: Path, broker: BrokerEndpoint, devices: list[dict[str, object]],
               page_port: int) -> str:
    """The agent's configuration for the demo: the same file format a gateway uses."""
    def q(value: object) -> str:
        return json.dumps(str(value) if isinstance(value, Path) else value)

    lines = [
        "# Written by `hems-agent demo`: simulated devices, a local broker, generated keys.",
        f"site_id = {q(SITE_ID)}", 'timezone = "Asia/Tokyo"',
        f"state_dir = {q(directory / 'state')}", f"device_key_file = {q(directory / 'device.key')}",
        'metrics_listen = ""', "", "[clock]", 'sync_check = "none"', "",
        "[broker]", f"url = {q(broker.url)}", f"ca_file = {q(broker.ca_file)}",
        f"username = {q(broker.agent.username)}",
        f"password_file = {q(broker.agent.password_file)}", f"protocol = {q(broker.protocol)}",
        "", "[web]", f'listen = "127.0.0.1:{page_port}"',
        f"pairing_hash_file = {q(directory / 'pairing.hash')}", "",
    ]
    for name in RECIPIENTS:
        key_file = directory / f"{name}.pub"
        lines += ["[[recipients]]", f"id = {q(name)}", f"key_file = {q(key_file)}", ""]
    for device in devices:
        lines.append("[[devices]]")
        lines += [f"{key} = {q(value)}" for key, value in device.items()]
        lines.append("")
    return "\n".join(lines)
