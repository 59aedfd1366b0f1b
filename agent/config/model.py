"""The agent's configuration: one TOML file, parsed once at start-up into frozen models.

Any error names the file, the field path and what is wrong, in one message; an unknown key is an
error, never ignored. Secrets (the device signing key, the broker password) live in separate files
that must not be readable by group or others.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.config.echonet import BrouteConfig, EchonetDeviceConfig, EchonetSettings, check_echonet
from agent.errors import ConfigError

DEFAULT_PATH = Path("/etc/hems-agent/agent.toml")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SITE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,63}$"  # also an MQTT topic segment
MAX_CONFIG_BYTES = 1 << 20
"""A configuration is a few kilobytes; a bigger file is refused before it is parsed."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class TcpDevice(_Model):
    """A Modbus TCP device (or a Modbus TCP gateway in front of RS-485 devices)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    transport: Literal["tcp"] = "tcp"
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit: Annotated[int, Field(ge=0, le=255)] = 1
    profile: str = "sunspec"
    poll_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    timeout: Annotated[float, Field(gt=0, le=60)] = 2.0


class RtuDevice(_Model):
    """A Modbus RTU device on a configured serial bus."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    transport: Literal["rtu"]
    bus: Annotated[str, Field(pattern=NAME_PATTERN)]
    unit: Annotated[int, Field(ge=1, le=247)]
    profile: str = "sunspec"
    poll_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    timeout: Annotated[float, Field(gt=0, le=60)] = 1.0


class SerialBus(_Model):
    """One RS-485 line: requests on it are serialised."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    port: Annotated[str, Field(pattern=r"^/dev/[A-Za-z0-9_./-]+$")]
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    gap_ms: Annotated[int, Field(ge=0, le=1000)] = 25


class Recipient(_Model):
    """A recipient's HPKE public key: only this recipient can read its purposes' data."""

    id: Annotated[str, Field(pattern=NAME_PATTERN)]
    key_file: Path
    display_name: Annotated[str, Field(max_length=120)] | None = None
    """The real company behind a generic recipient (e.g. the installer), shown on the page."""
    kem: Literal["x25519", "mlkem768x25519"] = "x25519"


class Broker(_Model):
    url: str
    ca_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: Annotated[int, Field(ge=10, le=3600)] = 60

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "mqtts" or not parts.hostname:
            raise ValueError("must look like mqtts://host:8883 (the uplink always uses TLS)")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use username and password_file")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("the port must be a number 1..65535, e.g. mqtts://host:8883")
        return value

    @model_validator(mode="after")
    def _auth(self) -> Broker:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        if self.ca_file is None:
            raise ValueError("mqtts needs ca_file: the broker's CA is pinned, never the system's")
        return self


class Outbox(_Model):
    max_bytes: Annotated[int, Field(ge=1 << 20)] = 256 << 20
    drain_rate: Annotated[float, Field(gt=0)] = 20.0


class Web(_Model):
    listen: str = "127.0.0.1:8080"
    hostnames: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")], ...] = ()
    """Names the household may type besides the address, e.g. hems-gateway.local."""
    pairing_hash_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be ADDRESS:PORT, e.g. 192.168.1.20:8080")
        check_page_address(host)
        return value

    @model_validator(mode="after")
    def _tls(self) -> Web:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


def check_page_address(host: str) -> None:
    """The household page's bind address: one LAN, link-local or loopback IP address.

    ``0.0.0.0`` and ``::`` are refused although Python counts them as private: they listen on
    every interface, the WAN's included. The page's server applies the same rule when it binds.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError as exc:
        raise ValueError(f"{host!r} is not an IP address (e.g. 192.168.1.20:8080)") from exc
    if address.is_unspecified:
        raise ValueError(f"{host} listens on every interface, the WAN's too: give the "
                         "gateway's LAN address, e.g. 192.168.1.20:8080")
    if not (address.is_private or address.is_loopback or address.is_link_local):
        raise ValueError("the household page binds to a LAN or loopback address, never the WAN")


class Clock(_Model):
    sync_check: Literal["adjtimex", "timedatectl", "none"] = "adjtimex"


class OperatorKey(_Model):
    """An operator's Ed25519 public key (PEM), pinned at provisioning; commands name its id."""

    id: Annotated[str, Field(pattern=NAME_PATTERN)]
    key_file: Path


class AgentConfig(_Model):
    """The whole configuration, as validated."""

    site_id: Annotated[str, Field(pattern=SITE_ID_PATTERN)]
    timezone: str = "Asia/Tokyo"
    state_dir: Path = Path("/var/lib/hems-agent")
    catalogue: Path | None = None
    device_key_file: Path
    broker: Broker
    recipients: Annotated[tuple[Recipient, ...], Field(min_length=1)]
    buses: tuple[SerialBus, ...] = ()
    devices: tuple[Annotated[TcpDevice | RtuDevice, Field(discriminator="transport")], ...] = ()
    echonet: EchonetSettings = EchonetSettings()
    echonet_devices: tuple[EchonetDeviceConfig, ...] = ()
    broute: BrouteConfig | None = None
    outbox: Outbox = Outbox()
    web: Web = Web()
    clock: Clock = Clock()
    metrics_listen: str | None = "127.0.0.1:9105"
    operator_keys: tuple[OperatorKey, ...] = ()
    """Keys whose signed commands the gateway accepts; none configured: no downlink."""

    @field_validator("devices", mode="before")
    @classmethod
    def _default_transport(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"transport": "tcp", **d} if isinstance(d, dict) else d for d in value]
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str | None) -> str | None:
        if not value:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be ADDRESS:PORT, e.g. 127.0.0.1:9105, or empty to turn off")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError as exc:
            raise ValueError(f"{host!r} is not an IP address") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _references(self) -> AgentConfig:
        broute = [self.broute.name] if self.broute else []
        _unique("devices", [d.name for d in (*self.devices, *self.echonet_devices)] + broute)
        check_echonet(self.echonet, self.echonet_devices)
        _unique("buses", [b.name for b in self.buses])
        _unique("recipients", [r.id for r in self.recipients])
        _unique("operator_keys", [k.id for k in self.operator_keys])
        buses = {b.name for b in self.buses}
        for device in self.devices:
            if isinstance(device, RtuDevice) and device.bus not in buses:
                raise ValueError(f"device {device.name!r} uses bus {device.bus!r}, not defined")
        return self

    def secret_files(self) -> list[Path]:
        """Files that must be readable by the agent's user only."""
        return list(self.secret_fields().values())

    def secret_fields(self) -> dict[str, Path]:
        """Field name -> file, for the files that must be readable by the agent's user only."""
        fields = {"device_key_file": self.device_key_file,
                  "broker.password_file": self.broker.password_file,
                  "broker.client_key": self.broker.client_key,
                  "web.pairing_hash_file": self.web.pairing_hash_file,
                  "web.tls_key": self.web.tls_key}
        if self.broute is not None:
            fields |= {"broute.id_file": self.broute.id_file,
                       "broute.password_file": self.broute.password_file}
        return {k: v for k, v in fields.items() if v is not None}


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: {name!r} appears twice")
        seen.add(name)


def load_config(path: Path, *, check_secrets: bool = True) -> AgentConfig:
    """Read, validate and return the configuration; raise ConfigError with one clear message.

    This checks the file alone (and, with ``check_secrets``, the secrets' modes); the files and
    directories it names are checked by :func:`agent.config_checks.load_checked`, which is what
    ``run`` and ``check-config`` call.
    """
    raw = read_toml(path)
    try:
        config = AgentConfig.model_validate(_resolve_paths(raw, path.parent))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: values nested too deeply") from exc
    if check_secrets:
        check_secret_permissions(config, path)
    return config


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document in ``path``; ConfigError, in one line naming the file, if it is missing,
    unreadable, larger than :data:`MAX_CONFIG_BYTES`, not UTF-8, not TOML or nested so deeply
    that the parser gives up (``tomllib`` raises RecursionError there, not a decode error)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 10} KiB: not a "
                          "configuration file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: not valid TOML: tables or arrays nested too deeply") from exc


def _resolve_paths(raw: dict[str, object], base: Path) -> dict[str, object]:
    """Relative file paths in the config are relative to the config file's directory."""

    def fix(node: object, key: str = "") -> object:
        if isinstance(node, dict):
            return {k: fix(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v, key) for v in node]
        if isinstance(node, str) and _is_path_key(key) and not node.startswith("/"):
            return str(base / node)
        return node

    result = fix(raw)
    assert isinstance(result, dict)
    return result


def _is_path_key(key: str) -> bool:
    return key.endswith(("_file", "_dir", "_cert", "_key")) or key == "catalogue"


def format_validation_error(path: Path, exc: ValidationError) -> str:
    """One message: ``agent.toml: broker.url: must look like ...``, one line per problem."""
    lines = []
    for error in exc.errors():
        parts = [_loc(part) for part in error["loc"]]
        where = ".".join(p for p in parts if p).replace(".[", "[") or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif error["type"] == "missing":
            message = "required but missing"
        lines.append(f"{path}: {where}: {message}")
    return "\n".join(lines)


def _loc(part: int | str) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    return re.sub(r"^(tcp|rtu)$", "", part) or ""


def check_secret_permissions(config: AgentConfig, path: Path) -> None:
    """Refuse secrets that group or others can read (or that do not exist)."""
    # lazy: agent.wire.keys loads cryptography (+11.7 MB, 74 modules); parsing a config does not
    from agent.wire.keys import exposed_mode

    for field, secret in config.secret_fields().items():
        try:
            mode = exposed_mode(secret)
        except OSError as exc:
            raise ConfigError(f"{path}: {field}: secret file {secret}: {exc.strerror}") from exc
        if mode is not None:
            raise ConfigError(f"{path}: {field}: {exposed_message(secret, mode)}")


def exposed_message(secret: Path, mode: int) -> str:
    """What is wrong with a secret file group or others can access, and the fix."""
    return f"secret file {secret} is readable by others (mode {mode:04o}); run: chmod 600 {secret}"
