"""What ``hems-agent run`` checks before it starts: every file and directory the configuration
names is there and usable. ``run``, ``check-config``, ``provision`` and ``doctor`` share these
checks, so a configuration ``check-config`` passes is one ``run`` starts on.

:func:`load_checked` is the entry point. Each problem is one line naming the configuration file,
the field and the value, e.g. ``/etc/hems-agent/agent.toml: broker.ca_file:
/etc/hems-agent/broker-ca.pem: no such file``; every problem is listed, not only the first.

The checks, in order: each key, certificate and secret file exists, is a regular file, is mode
0600 or stricter when it is a secret, and loads (recipient keys are public keys of the configured
KEM, never a private key; password files are not empty); then the state directory is a
directory, not under ``/proc``, ``/sys`` or ``/dev``, and takes a write (a probe file created,
synced and removed: the only thing written here). Addresses are checked by the configuration's
own models (:func:`agent.config.model.check_page_address`).
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from agent.config.model import AgentConfig, exposed_message, load_config
from agent.errors import AgentError, ConfigError, KeyFileError
from agent.wire import keys
from drivers.errors import DriverError
from policy.catalogue import load_catalogue
from policy.errors import PolicyError

PSEUDO_FILE_SYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
"""Kernel file systems: state written there is lost or refused."""

_Load = Callable[[Path], object]
_FAILURES = (AgentError, PolicyError, DriverError, OSError, ValueError)


def load_checked(path: Path) -> AgentConfig:
    """The configuration in ``path`` if ``run`` can start on it; else ConfigError with one line
    per problem, each naming the file and the field."""
    config = load_config(path, check_secrets=False)
    problems = config_problems(config)
    if problems:
        raise ConfigError("\n".join(f"{path}: {problem}" for problem in problems))
    return config


def config_problems(config: AgentConfig) -> list[str]:
    """``FIELD: VALUE: problem`` for each file or directory ``run`` could not use."""
    secrets = set(config.secret_fields())
    problems = []
    for field, file, load in _named_files(config):
        problem = file_problem(file, load, secret=field in secrets)
        if problem is not None:
            problems.append(f"{field}: {problem}")
    problem = state_dir_problem(config.state_dir)
    if problem is not None:
        problems.append(f"state_dir: {config.state_dir}: {problem}")
    return problems


def _named_files(config: AgentConfig) -> Iterator[tuple[str, Path, _Load]]:
    """(field, file, loader) for every file the configuration names, as ``run`` loads it."""
    yield "device_key_file", config.device_key_file, keys.load_device_key
    for i, recipient in enumerate(config.recipients):
        yield (f"recipients[{i}].key_file", recipient.key_file,
               partial(recipient_key, kem=recipient.kem))
    if config.catalogue is not None:
        yield "catalogue", config.catalogue, _catalogue
    broker = config.broker
    if broker.ca_file is not None:
        yield "broker.ca_file", broker.ca_file, load_ca
    if broker.client_cert is not None and broker.client_key is not None:
        yield "broker.client_cert", broker.client_cert, _certificate
        yield "broker.client_key", broker.client_key, partial(_key_of, broker.client_cert)
    if broker.password_file is not None:
        yield "broker.password_file", broker.password_file, read_broker_password
    web = config.web
    if web.pairing_hash_file is not None:
        yield "web.pairing_hash_file", web.pairing_hash_file, _pairing_hash
    if web.tls_cert is not None and web.tls_key is not None:
        yield "web.tls_cert", web.tls_cert, _certificate
        yield "web.tls_key", web.tls_key, partial(_key_of, web.tls_cert)
    if config.broute is not None:
        yield "broute.id_file", config.broute.id_file, partial(_broute, what="B-route ID")
        yield ("broute.password_file", config.broute.password_file,
               partial(_broute, what="B-route password"))
    for i, operator in enumerate(config.operator_keys):
        yield f"operator_keys[{i}].key_file", operator.key_file, _operator_key


def file_problem(file: Path, load: _Load, *, secret: bool = False) -> str | None:
    """``FILE: problem`` if ``file`` is missing, not a file, exposed (``secret``) or does not
    load with ``load``; None when it is usable."""
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        return f"{file}: no such file"
    except OSError as exc:
        return f"{file}: cannot examine it ({exc.strerror})"
    if not stat.S_ISREG(mode):
        return f"{file}: not a regular file"
    if secret and mode & (stat.S_IRWXG | stat.S_IRWXO):
        return exposed_message(file, stat.S_IMODE(mode))
    try:
        load(file)
    except _FAILURES as exc:
        text = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
        return f"{file}: {text.removeprefix(f'{file}: ') or type(exc).__name__}"
    return None


def state_dir_problem(state_dir: Path) -> str | None:
    """What stops ``run`` from keeping its state in ``state_dir`` (None: nothing).

    A directory that does not exist yet is fine if ``run`` can create it (its nearest existing
    parent is a writable directory); one that exists must be a directory that takes a write.
    """
    try:
        resolved = state_dir.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        return f"cannot be resolved ({exc})"
    for pseudo in PSEUDO_FILE_SYSTEMS:
        if resolved.is_relative_to(pseudo):
            return f"is under {pseudo}, a kernel file system that cannot keep state"
    if resolved.exists():
        if not resolved.is_dir():
            return "exists and is not a directory"
        try:
            probe_writable(resolved)
        except OSError as exc:
            return f"cannot be written ({exc.strerror or exc})"
        return None
    parent = next(p for p in resolved.parents if p.exists())
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} cannot be written"
    return None


def probe_writable(directory: Path) -> None:
    """Write, sync and remove a probe file in ``directory`` (OSError if it cannot take a write:
    a read-only remount after SD card errors, a full disk, wrong ownership)."""
    probe = directory / f".write-check-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\0")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink()


def recipient_key(path: Path, *, kem: str) -> keys.RecipientPublicKey:
    """A recipient's public key from ``path``, which must be of the configured ``kem``."""
    key = keys.load_recipient_public(path)
    if key.kem != kem:
        raise KeyFileError(f"{path}: the key is {key.kem} but the recipient is configured with "
                           f"kem {kem}")
    return key


def load_ca(path: Path) -> None:
    """A pinned CA file: PEM certificates that the uplink's TLS context loads."""
    _pem_certificates(path)


def _pem_certificates(path: Path) -> None:
    """ValueError unless ``path`` holds PEM certificates, parsed by OpenSSL as the TLS contexts
    of the uplink and the page parse them. Not cryptography.x509: its 14 modules would stay
    loaded, 1.1 MB resident for the daemon's whole life, for a check made once at start-up."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=path.read_text(encoding="ascii"))
    except (ssl.SSLError, ValueError) as exc:  # ValueError: not ASCII, or empty
        raise ValueError("not a PEM certificate") from exc
    if not context.cert_store_stats()["x509"]:  # a file of CRLs alone, say
        raise ValueError("not a PEM certificate")


def read_broker_password(path: Path) -> str:
    """The broker password in ``path`` (as the uplink reads it); ValueError if it is empty."""
    # lazy: the uplink loads aiomqtt and asyncio (+4.2 MB, 75 modules); check-config does not
    from agent.uplink.session import read_password

    password = read_password(path)
    if not password:
        raise ValueError("is empty: write the broker password in it")
    return password


def _certificate(path: Path) -> None:
    _pem_certificates(path)


def _key_of(certificate: Path, path: Path) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(str(certificate), str(path))
    except ssl.SSLError as exc:
        raise ValueError(f"not the private key of {certificate} (or not a PEM key)") from exc


def _catalogue(path: Path) -> None:
    load_catalogue(path)


def _pairing_hash(path: Path) -> None:
    # lazy: the page's modules (+10.2 MB, 200 modules) load only when the page is configured
    from agent.web.security import load_pairing_hash

    load_pairing_hash(path)


def _broute(path: Path, *, what: str) -> None:
    # lazy: the B-route driver and asyncio (+1.9 MB, 51 modules), only when a meter is configured
    from drivers.broute.meter import read_secret

    read_secret(path, what)


def _operator_key(path: Path) -> None:
    keys.load_device_public(path.read_bytes(), str(path))


def device_count(config: AgentConfig) -> str:
    """The devices the agent will read, by protocol: ``4 devices (1 Modbus, 2 ECHONET Lite,
    B-route smart meter)``; ``0 devices`` when none."""
    modbus, echonet = len(config.devices), len(config.echonet_devices)
    broute = config.broute is not None
    total = modbus + echonet + broute
    parts = [f"{n} {what}" for n, what in ((modbus, "Modbus"), (echonet, "ECHONET Lite")) if n]
    if broute:
        parts.append("B-route smart meter")
    return f"{total} devices ({', '.join(parts)})" if total else "0 devices"
