"""A real mosquitto on a free loopback port with TLS, a password file and an ACL.

The CA and server certificate are generated here with ``cryptography``; passwords are hashed
with ``mosquitto_passwd``. The broker can be stopped (SIGTERM, it saves its persistence file),
killed (SIGKILL), paused (SIGSTOP: a stalled broker) and restarted on the same port mid-test.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port, require_binary

RECEIVER_USER = "receiver"
OPERATOR_USER = "operator"
# Gateways may write only below their own site (username = site id) and read their own
# commands; the receiver reads all; the operator writes every site's commands.
ACL = f"""user {RECEIVER_USER}
topic read hems/v1/#

user {OPERATOR_USER}
topic write hems/v1/+/control/#

pattern write hems/v1/%u/#
pattern read hems/v1/%u/control/#
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """Write ca.pem, server.pem and server.key (for 127.0.0.1 / localhost) into ``directory``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    srv_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("hems test CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
              .public_key(srv_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=1))
              .add_extension(san, critical=False).sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_key_pem(srv_key))
    paths[2].chmod(0o600)
    return paths


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


class Mosquitto:
    """One broker process; ``start()``/``stop()``/``kill()`` may be called repeatedly."""

    def __init__(self, directory: Path, users: Mapping[str, str]) -> None:
        self.binary = require_binary("mosquitto", "mosquitto")
        passwd = require_binary("mosquitto_passwd", "mosquitto")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ca, cert, key = make_tls(directory)
        password_file = directory / "passwd"
        password_file.touch(mode=0o600)
        for user, password in users.items():
            subprocess.run([passwd, "-b", str(password_file), user, password], check=True,
                           capture_output=True)
        (directory / "acl").write_text(ACL, encoding="utf-8")
        self.log = directory / "mosquitto.log"
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            # As root mosquitto would switch to the 'mosquitto' user, which cannot read a
            # pytest tmp_path; stay the user who runs the tests.
            f"user {_user()}\nper_listener_settings false\nallow_anonymous false\n"
            f"password_file {password_file}\nacl_file {directory / 'acl'}\n"
            f"persistence true\npersistence_location {directory}/\nautosave_interval 1\n"
            # a receiver that is away while gateways drain an outage backlog must not lose
            # it to the default queue of 1,000 messages per client (see docs/broker.md)
            f"max_queued_messages 1000000\n"
            f"log_dest file {self.log}\nlog_type all\n"
            f"listener {self.port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
            f"require_certificate false\n",
            encoding="utf-8",
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and return once it accepts TCP connections."""
        self._proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def __enter__(self) -> Mosquitto:
        """``with Mosquitto(...) as broker:`` starts it, and stops it on the way out."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Graceful stop (SIGTERM): mosquitto writes its persistence file and exits."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Hard stop (SIGKILL), like a crash or power cut of the broker host."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): its connections stay open but nothing is read or
        answered; what clients write waits in the sockets until :meth:`resume` (SIGCONT)."""
        assert self._proc is not None and self._proc.poll() is None, "mosquitto is not running"
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a broker frozen by :meth:`pause`: it reads what waited and goes on."""
        assert self._proc is not None and self._proc.poll() is None, "mosquitto is not running"
        os.kill(self._proc.pid, signal.SIGCONT)

    def _end(self, sig: int) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        os.kill(self._proc.pid, signal.SIGCONT)  # a paused broker would never act on sig
        os.kill(self._proc.pid, sig)
        self._proc.wait(timeout=10)
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def write_acl(self, text: str) -> None:
        """Replace the ACL file; the broker reads it at its next start (or restart)."""
        (self.dir / "acl").write_text(text, encoding="utf-8")

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
