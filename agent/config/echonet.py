"""Configuration sections for ECHONET Lite objects on the LAN and the B-route smart meter.

``[echonet]`` sets up the one shared ECHONET Lite client, ``[[echonet_devices]]`` names the
objects to read and ``[broute]`` the Wi-SUN module in front of the utility's smart meter.
These models are fields of :class:`agent.config.model.AgentConfig`; errors name the field like
every other section's.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # the same rule as Modbus device names
_EOJ = r"^(0x)?[0-9A-Fa-f]{4}([0-9A-Fa-f]{2})?$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _ipv4(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"must be an IPv4 address, e.g. 192.168.1.40; got {value!r}") from None
    return value


class EchonetSettings(_Model):
    """``[echonet]``: the one UDP endpoint every LAN object is read through."""

    interface: str = "0.0.0.0"
    """Local IPv4 address to bind and send multicast from; 0.0.0.0 = every interface."""
    port: Annotated[int, Field(ge=1, le=65535)] = 3610
    """ECHONET Lite's port; only tests and the demo's emulator use another."""
    discovery: bool = True
    """Find objects by multicast (needed for devices configured without an address)."""
    discovery_wait: Annotated[float, Field(gt=0, le=60)] = 3.0
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    """Per-attempt deadline; some gateways need 15-20 s."""
    retries: Annotated[int, Field(ge=0, le=5)] = 2

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str) -> str:
        return _ipv4(value)


class EchonetDeviceConfig(_Model):
    """``[[echonet_devices]]``: one ECHONET Lite object, read under its configured name.

    ``eoj`` is class and instance (``027D01``) or the class alone (``027D``: the one object
    of that class at ``address``, or on the LAN when ``address`` is left out and discovery is
    on). ``poll_interval`` sets the fast points' interval (power: 10 s in the class tables),
    ``slow_interval`` the others' (energy counters, state of charge: 30-60 s); unset, the
    tables' intervals hold.
    """

    name: Annotated[str, Field(pattern=_NAME)]
    eoj: Annotated[str, Field(pattern=_EOJ)]
    address: str | None = None
    poll_interval: Annotated[float, Field(gt=0, le=3600)] | None = None
    slow_interval: Annotated[float, Field(gt=0, le=86400)] | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else _ipv4(value)

    @field_validator("eoj")
    @classmethod
    def _known_class(cls, value: str) -> str:
        # lazy: the class tables (+1.1 MB of JSON) load only when an ECHONET device is configured
        from drivers.echonet.tables import load_tables

        code = value.removeprefix("0x").upper()
        known = load_tables()
        if int(code[:4], 16) not in known:
            names = ", ".join(f"{c:04X} ({t.name})" for c, t in sorted(known.items()))
            raise ValueError(f"class {code[:4]} has no EPC table; known: {names}")
        return code

    @property
    def class_code(self) -> int:
        """The class (group and class), e.g. 0x027D."""
        return int(self.eoj[:4], 16)

    @property
    def instance(self) -> int | None:
        """The instance code, or ``None`` when any instance of the class will do."""
        return int(self.eoj[4:], 16) if len(self.eoj) == 6 else None


class BrouteConfig(_Model):
    """``[broute]``: the smart meter behind a Wi-SUN module (SK commands, 115200 baud).

    ``id_file`` and ``password_file`` hold the utility-issued B-route ID and password; like
    every secret they must be mode 0600. Scans and joins take minutes on real hardware.
    ``module`` names the module's SK dialect (``bp35a1``: ROHM BP35A1, RL7023 Stick-D/IPS;
    ``bp35c2``: ROHM BP35C0/BP35C2, RL7023 Stick-D/DSS); ``auto`` asks the module (SKINFO).
    """

    name: Annotated[str, Field(pattern=_NAME)] = "smart_meter"
    device: Annotated[str, Field(pattern=r"^/dev/[A-Za-z0-9_./-]+$")]
    id_file: Path
    password_file: Path
    module: Literal["auto", "bp35a1", "bp35c2"] = "auto"
    scan_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    scan_timeout: Annotated[float, Field(gt=0, le=900)] = 180.0
    join_timeout: Annotated[float, Field(gt=0, le=900)] = 180.0
    request_timeout: Annotated[float, Field(gt=0, le=120)] = 20.0
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    power_interval: Annotated[float, Field(gt=0, le=3600)] = 10.0
    energy_interval: Annotated[float, Field(gt=0, le=86400)] = 60.0


def check_echonet(settings: EchonetSettings, devices: tuple[EchonetDeviceConfig, ...]) -> None:
    """Cross-field rules: objects without an address need discovery; no object twice."""
    seen: set[tuple[str | None, str]] = set()
    for n, device in enumerate(devices):
        if device.address is None and not settings.discovery:
            raise ValueError(f"echonet_devices[{n}] ({device.name!r}): no address, and "
                             "[echonet] discovery is off")
        key = (device.address, device.eoj)
        if key in seen:
            raise ValueError(f"echonet_devices[{n}] ({device.name!r}): the same object "
                             "(address and eoj) is configured twice")
        seen.add(key)
