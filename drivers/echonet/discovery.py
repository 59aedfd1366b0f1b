"""Find ECHONET Lite nodes and their objects, read property maps and identity.

Nodes answer a multicast Get of the node profile's self-node instance list (0x0EF0, EPC 0xD6)
and announce themselves with an INF of 0xD5. The Get goes to the general node's profile
(instance 0x01) and to all instances (0x00): some nodes answer only the first; a
transmission-only node (profile instance 0x02) receives nothing and is heard only by its INF.
Both both list the device objects with their real
instance codes (gateways use e.g. 0x1F: never assume 01). Each object's Get property map
(0x9F) decides what is ever asked for; identity comes from 0x8A (manufacturer code),
0x8C (product code), 0x8D (serial number), 0x83 (identification number) and 0x82 (release).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drivers.echonet.client import EchonetClient
from drivers.echonet.codec import (
    NODE_PROFILE,
    NODE_PROFILE_ANY,
    Eoj,
    Esv,
    Frame,
    Property,
    decode_instance_list,
    decode_property_map,
)
from drivers.echonet.tables import ClassTable, MeterContext, load_tables, raw_number, unit_kwh
from drivers.errors import DeviceProtocolError, DeviceUnreachable, DriverError
from drivers.models import DeviceIdentity

log = logging.getLogger(__name__)

IDENTITY_EPCS = (0x8A, 0x8C, 0x8D, 0x83, 0x82)
ASKED_PROFILES = (NODE_PROFILE, NODE_PROFILE_ANY)
"""Where discovery's Get goes: the general node's profile 0x0EF001, and 0x0EF000 (instance 0x00
designates every instance of the class, ECHONET Lite specification part II, on EOJ)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """A node and the device objects it lists (the node profile itself excluded)."""

    address: str
    objects: tuple[Eoj, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectInfo:
    """What one object says about itself."""

    address: str
    eoj: Eoj
    get_map: frozenset[int]
    identity: DeviceIdentity
    table: ClassTable | None  # None: a class the agent does not decode


def nodes_from_replies(replies: Sequence[tuple[str, Frame]]) -> list[Node]:
    """Nodes from 0xD6 replies and 0xD5 announcements; the last word per address wins."""
    found: dict[str, tuple[Eoj, ...]] = {}
    for address, frame in replies:
        if frame.seoj.class_code != NODE_PROFILE.class_code:
            continue
        for prop in frame.properties:
            if prop.epc in (0xD5, 0xD6) and prop.edt:
                try:
                    found[address] = tuple(
                        e for e in decode_instance_list(prop.edt)
                        if e.class_code != NODE_PROFILE.class_code)
                except DeviceProtocolError as exc:
                    log.warning("node %s sent a bad instance list: %s", address, exc)
    return [Node(address=a, objects=o) for a, o in sorted(found.items())]


async def find_nodes(client: EchonetClient, *, wait: float = 3.0,
                     addresses: Sequence[str] = ()) -> list[Node]:
    """Ask for every node's instance list: by multicast (to each of :data:`ASKED_PROFILES`),
    or at ``addresses`` (unicast, to the general node's profile 0x0EF001).

    INF announcements (0xD5) heard meanwhile count too.
    """
    heard: list[tuple[str, Frame]] = []
    unsubscribe = client.subscribe(lambda address, frame: heard.append((address, frame)))
    get = [Property(epc=0xD6)]
    try:
        if not addresses:
            for batch in await asyncio.gather(
                    *(client.multicast(p, Esv.GET, get, wait=wait) for p in ASKED_PROFILES)):
                heard += batch
        else:
            replies = await asyncio.gather(
                *(client.request(a, NODE_PROFILE, Esv.GET, get, deadline=wait, retries=0)
                  for a in addresses), return_exceptions=True)
            for address, reply in zip(addresses, replies, strict=True):
                if isinstance(reply, DriverError):
                    log.info("no ECHONET Lite node answered at %s: %s", address, reply)
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    heard.append((address, reply))
    finally:
        unsubscribe()
    return nodes_from_replies(heard)


def _text(edt: bytes | None) -> str | None:
    if not edt:
        return None
    text = edt.replace(b"\0", b" ").decode("ascii", errors="replace").strip()
    return text or None


def identity_from(values: Mapping[int, bytes | None]) -> DeviceIdentity:
    """DeviceIdentity from identity EPCs; the identification number stands in for a missing
    serial. ``manufacturer`` is the ECHONET manufacturer code (``0x00000B``)."""
    maker = values.get(0x8A)
    ident = values.get(0x83)
    release = values.get(0x82)
    serial = _text(values.get(0x8D)) or (ident.hex().upper() if ident else None)
    version = None
    if release and len(release) == 4 and 0x41 <= release[2] <= 0x5A:
        version = f"Release {chr(release[2])}"
    return DeviceIdentity(manufacturer=f"0x{maker.hex().upper()}" if maker else None,
                          model=_text(values.get(0x8C)), serial=serial, version=version,
                          protocol="echonet")


async def read_all(client: EchonetClient, address: str, eoj: Eoj, epcs: Sequence[int], *,
                   chunk: int = 8) -> dict[int, bytes | None]:
    """Get ``epcs`` in requests of at most ``chunk`` properties (small devices limit it)."""
    out: dict[int, bytes | None] = {}
    for start in range(0, len(epcs), chunk):
        out.update(await client.get(address, eoj, epcs[start:start + chunk]))
    return out


async def describe(client: EchonetClient, address: str, eoj: Eoj) -> ObjectInfo:
    """Read the Get map and identity of one object."""
    got = await client.get(address, eoj, [0x9F])
    if got[0x9F] is None:
        raise DeviceProtocolError(f"{address} {eoj} refused its Get property map (0x9F)")
    get_map = decode_property_map(got[0x9F])
    values = await read_all(client, address, eoj, [e for e in IDENTITY_EPCS if e in get_map])
    return ObjectInfo(address=address, eoj=eoj, get_map=get_map,
                      identity=identity_from(values), table=load_tables().get(eoj.class_code))


async def meter_context(client: EchonetClient, info: ObjectInfo) -> MeterContext | None:
    """Coefficient (0xD3, 1 if absent) and unit (0xE1) of a smart meter, else ``None``."""
    if info.table is None or not any(p.role for p in info.table.properties):
        return None
    roles = {p.role: p for p in info.table.properties if p.role}
    wanted = [p.code for p in roles.values() if p.code in info.get_map]
    values = await client.get(info.address, info.eoj, wanted) if wanted else {}
    coefficient, unit = 1, None
    try:
        edt = values.get(roles["coefficient"].code)
        if edt:
            coefficient = raw_number(roles["coefficient"], edt) or 1
        edt = values.get(roles["unit"].code)
        if edt:
            unit = unit_kwh(roles["unit"], edt)
    except ValueError as exc:
        log.warning("%s %s: bad meter coefficient or unit: %s", info.address, info.eoj, exc)
    return MeterContext(coefficient=coefficient, unit_kwh=unit)


async def describe_all(client: EchonetClient, nodes: Sequence[Node]) -> list[ObjectInfo]:
    """Describe every object of every node concurrently; silent or broken objects are
    logged and left out."""
    targets = [(n.address, e) for n in nodes for e in n.objects]
    results = await asyncio.gather(*(describe(client, a, e) for a, e in targets),
                                   return_exceptions=True)
    infos: list[ObjectInfo] = []
    for (address, eoj), result in zip(targets, results, strict=True):
        if isinstance(result, (DeviceUnreachable, DeviceProtocolError)):
            log.warning("%s %s: %s", address, eoj, result)
        elif isinstance(result, BaseException):
            raise result
        else:
            infos.append(result)
    return infos
