"""``hems-agent doctor``'s and the report's ECHONET Lite and B-route probes.

Each configured ``[[echonet_devices]]`` object is located (fixed address and EOJ, a unicast Get
at its address, or multicast discovery, as the daemon does), described and read once; the
``[broute]`` smart meter is joined and read once (instantaneous power and the cumulative
counters in one request). Results are :class:`agent.installer.scan.range.DeviceProbe`, the shape the
Modbus probes have, so the doctor's device checks and the report treat all three protocols
alike; ``entry["protocol"]`` says which one, ``entry["link"]`` holds the B-route session's
channel, link quality and the module's SK dialect (found by the driver, or ``[broute]
module`` when set).

An ECHONET Lite request gets one attempt of ``[echonet] timeout`` (no resend), so a silent
object costs one timeout. A B-route join takes as long as it takes on the module (the
``[broute]`` scan and join timeouts hold): minutes on real hardware.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from agent.installer.scan.range import DeviceProbe, implausible

if TYPE_CHECKING:
    from agent.config.echonet import BrouteConfig, EchonetDeviceConfig, EchonetSettings
    from agent.config.model import AgentConfig
    from agent.sources.echonet import Finder
    from drivers.echonet.client import EchonetClient
    from drivers.models import DeviceIdentity, Reading

ECHONET = "echonet"
BROUTE = "broute"


def identity_entry(identity: DeviceIdentity) -> dict[str, Any]:
    return {"manufacturer": identity.manufacturer, "model": identity.model,
            "serial": identity.serial, "version": identity.version}


def readings_entry(readings: list[Reading]) -> dict[str, Any]:
    """Point -> {value, unit}; a point read twice (polled and pushed) keeps its first good
    value."""
    from drivers.models import Quality

    out: dict[str, Any] = {}
    for r in readings:
        if r.point in out and out[r.point]["value"] is not None:
            continue
        value = r.value if r.quality is Quality.GOOD else None
        out[r.point] = {"value": value, "unit": r.unit}
    return out


async def probe_echonet(config: AgentConfig) -> list[DeviceProbe]:
    """Every ``[[echonet_devices]]`` object, read once through one client."""
    from drivers.echonet.client import MULTICAST_GROUP, EchonetClient
    from drivers.errors import DriverError

    devices = config.echonet_devices
    if not devices:
        return []
    s = config.echonet
    try:
        async with EchonetClient(interface=s.interface, port=s.port,
                                 group=MULTICAST_GROUP if s.discovery else None,
                                 timeout=s.timeout, retries=0) as client:
            from agent.sources.echonet import Finder

            finder = Finder(client, s)
            return list(await asyncio.gather(*(_probe_object(client, finder, s, d)
                                               for d in devices)))
    except (DriverError, OSError) as exc:
        return [DeviceProbe(name=d.name, where=_where(d), entry=None,
                            error=f"cannot open the ECHONET Lite socket on {s.interface} "
                                  f"port {s.port}: {exc}") for d in devices]


def _where(device: EchonetDeviceConfig, address: str | None = None, eoj: str | None = None,
           ) -> str:
    return (f"ECHONET Lite {address or device.address or 'on the LAN'} "
            f"{eoj or device.eoj}")


async def _probe_object(client: EchonetClient, finder: Finder, settings: EchonetSettings,
                        device: EchonetDeviceConfig) -> DeviceProbe:
    from drivers.echonet.device import EchonetDevice
    from drivers.errors import DeviceUnreachable, DriverError

    where = _where(device)
    # Locate (one discovery window or one Get), describe (Get map, identity: up to three
    # requests), read (a few chunks): a bound so a half-answering node cannot hang the doctor.
    bound = settings.discovery_wait + settings.timeout * 12
    try:
        async with asyncio.timeout(bound):
            address, eoj = await finder.locate(device)
            where = _where(device, address, f"{eoj.class_code:04X}{eoj.instance:02X}")
            opened = await EchonetDevice.open(client, name=device.name, address=address,
                                              eoj=eoj)
            try:
                readings = await opened.poll(0.0)
            finally:
                opened.close()
    except DeviceUnreachable:
        return DeviceProbe(name=device.name, where=where, entry=None,
                           error=f"no answer within {settings.timeout:g} s")
    except DriverError as exc:
        return DeviceProbe(name=device.name, where=where, entry=None,
                           error=str(exc).removeprefix(f"{where}: "))
    except TimeoutError:
        return DeviceProbe(name=device.name, where=where, entry=None,
                           error=f"no complete answer within {bound:.0f} s")
    entry: dict[str, Any] = {"protocol": ECHONET, "class_code": f"{eoj.class_code:04X}",
                             "identity": identity_entry(opened.identity),
                             "readings": readings_entry(readings)}
    return DeviceProbe(name=device.name, where=where, entry=entry,
                       problems=tuple(implausible(entry["readings"])))


def broute_settings(config: BrouteConfig) -> Any:
    """The driver's settings, the secrets read now from their 0600 files."""
    from drivers.broute.meter import BrouteSettings, read_secret

    return BrouteSettings(
        device=config.device, route_b_id=read_secret(config.id_file, "B-route ID"),
        password=read_secret(config.password_file, "B-route password"),
        module=config.module, scan_attempts=config.scan_attempts, scan_timeout=config.scan_timeout,
        join_timeout=config.join_timeout, request_timeout=config.request_timeout,
        retries=config.retries)


def lqi_dbm(lqi: int) -> int:
    """The received signal strength a module's LQI stands for (ROHM BP35A1 manual:
    RSSI = 0.275 × LQI − 104.27 dBm)."""
    return round(0.275 * lqi - 104.27)


async def probe_broute(config: AgentConfig) -> list[DeviceProbe]:
    """The B-route smart meter, joined and read once; [] when none is configured."""
    from drivers.broute.meter import BrouteMeter
    from drivers.errors import DriverError

    b = config.broute
    if b is None:
        return []
    where = f"B-route module {b.device}"
    started = time.monotonic()
    try:
        settings = broute_settings(b)
        async with BrouteMeter(settings, name=b.name) as meter:
            readings = await meter.poll(0.0)
            pan, joins, identity, dialect = meter.pan, meter.joins, meter.identity, meter.dialect
    except DriverError as exc:
        return [DeviceProbe(name=b.name, where=where, entry=None, error=str(exc))]
    link: dict[str, Any] = {"seconds": round(time.monotonic() - started, 1), "joins": joins,
                            "channel": None, "lqi": None, "rssi_dbm": None,
                            "dialect": dialect.name, "modules": dialect.modules,
                            "module_version": None}
    if pan is not None:
        link.update(channel=pan.channel, lqi=pan.lqi,
                    rssi_dbm=lqi_dbm(pan.lqi) if pan.lqi else None)
    entry: dict[str, Any] = {"protocol": BROUTE, "class_code": "0288",
                             "identity": identity_entry(identity),
                             "readings": readings_entry(readings), "link": link}
    return [DeviceProbe(name=b.name, where=where, entry=entry,
                        problems=tuple(implausible(entry["readings"])))]


async def probe_all(config: AgentConfig) -> list[DeviceProbe]:
    """Modbus, ECHONET Lite and B-route devices, in that order, probed concurrently."""
    from agent.installer.scan.range import probe_devices

    modbus, echonet, broute = await asyncio.gather(
        probe_devices(config), probe_echonet(config), probe_broute(config))
    return [*modbus, *echonet, *broute]


def link_text(entry: dict[str, Any]) -> str:
    """The B-route session in a few words (empty for other protocols)."""
    link = entry.get("link")
    if not link:
        return ""
    parts = [f"joined in {link['seconds']} s"]
    if link.get("channel") is not None:
        parts.append(f"channel {link['channel']}")
    if link.get("lqi"):
        parts.append(f"link quality LQI {link['lqi']} (about {link['rssi_dbm']} dBm)")
    if link.get("dialect"):
        parts.append(f"SK dialect {link['dialect']} ({link['modules']})")
    if link.get("module_version"):
        parts.append(f"module version {link['module_version']}")
    return ", ".join(parts)
