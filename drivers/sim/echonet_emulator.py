"""An in-process ECHONET Lite node on a loopback address (127.0.0.x:3610), for tests and demos.

A node carries a node profile (0x0EF001) and device objects (:func:`pv`, :func:`battery`,
:func:`smart_meter`, or any EPC -> EDT mapping) and answers Get with Get_Res or Get_SNA,
multicast Gets included (it joins 224.0.23.0 on ``interface`` with ``IP_MULTICAST_LOOP``).
Faults are plain attributes a test sets at any time: ``refuse`` (EPCs answered with PDC 0),
``delay`` (seconds before every reply), ``drop`` (requests to ignore, counting down; -1 = all),
``garble`` (replies to replace with junk). :meth:`EchonetNode.announce` multicasts the 0xD5
instance list and :meth:`EchonetNode.notify` sends INF/INFC, recording INFC_Res in ``acks``.
Read-only like the agent: Set requests are refused with SetC_SNA.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from types import TracebackType
from typing import Self

from drivers.echonet.codec import (
    NODE_PROFILE,
    Eoj,
    Esv,
    Frame,
    Property,
    decode,
    encode,
    encode_instance_list,
    encode_property_map,
)
from drivers.errors import DeviceProtocolError

PORT = 3610
GROUP = "224.0.23.0"
JST = timezone(timedelta(hours=9))
NO_DATA = 0xFFFFFFFE


@dataclass(slots=True)
class EmulatedObject:
    """One ECHONET object: its EOJ and EDT by EPC (the Get map is derived from the keys)."""

    eoj: Eoj
    values: dict[int, bytes]
    extra_get: set[int] = field(default_factory=set)  # in the Get map but never answered

    def get_map(self) -> set[int]:
        """EPCs listed in 0x9F."""
        return set(self.values) | self.extra_get | {0x9D, 0x9E, 0x9F}

    def read(self, epc: int) -> bytes | None:
        """The EDT of ``epc`` as sent on the wire, or ``None`` if not readable."""
        if epc == 0x9F:
            return encode_property_map(self.get_map())
        if epc in (0x9D, 0x9E):
            return encode_property_map(set())
        return self.values.get(epc)


def _identity(maker: int, product: str, serial: str) -> dict[int, bytes]:
    return {0x80: b"\x30", 0x82: bytes([0, 0, ord("R"), 0]), 0x88: b"\x42",
            0x8A: maker.to_bytes(3, "big"), 0x8C: product.encode().ljust(12, b"\0"),
            0x8D: serial.encode().ljust(12, b"\0"),
            0x83: b"\xfe" + maker.to_bytes(3, "big") + serial.encode().ljust(13, b"\0")}


def pv(instance: int = 0x01, *, power_w: int = 3120, generated_wh: int = 8_765_432,
       sold_wh: int = 4_321_000) -> EmulatedObject:
    """A household PV object (0x0279); fewer than 16 properties, so a list-form Get map."""
    values = _identity(0xFFFFFE, "SIM-PV-EL", "PVEL0001")
    values.update({0xE0: power_w.to_bytes(2, "big"), 0xE1: generated_wh.to_bytes(4, "big"),
                   0xE3: sold_wh.to_bytes(4, "big")})
    return EmulatedObject(eoj=Eoj(class_code=0x0279, instance=instance), values=values)


def battery(instance: int = 0x01, *, charging_w: int = -800, soc: int = 64,
            remaining_wh: int = 6400, charged_wh: int = 1_200_000,
            discharged_wh: int = 1_100_000) -> EmulatedObject:
    """A storage battery (0x027D); ``charging_w`` uses the wire sign (negative = discharging).
    Its 18 readable properties make a bitmap-form Get map."""
    values = _identity(0xFFFFFE, "SIM-BT-EL", "BTEL0001")
    values.update({0xD3: charging_w.to_bytes(4, "big", signed=True), 0xE4: bytes([soc]),
                   0xE2: remaining_wh.to_bytes(4, "big"), 0xDA: b"\x46",
                   0xCF: b"\x43" if charging_w < 0 else b"\x42",
                   0xA8: charged_wh.to_bytes(4, "big"), 0xA9: discharged_wh.to_bytes(4, "big"),
                   0x81: b"\x00"})
    return EmulatedObject(eoj=Eoj(class_code=0x027D, instance=instance), values=values)


def fixed_time(when: datetime, count: int) -> bytes:
    """An 0xEA/0xEB EDT: JST date and time, then the cumulative count."""
    local = when.astimezone(JST)
    return (local.year.to_bytes(2, "big")
            + bytes([local.month, local.day, local.hour, local.minute, local.second])
            + count.to_bytes(4, "big"))


def history(days_back: int, counts: Iterable[int | None]) -> bytes:
    """An 0xE2/0xE4 EDT: day, then 48 counts (``None`` becomes the no-data code)."""
    items = [NO_DATA if c is None else c for c in counts]
    if len(items) != 48:
        raise ValueError(f"history needs 48 half-hour counts, got {len(items)}")
    return days_back.to_bytes(2, "big") + b"".join(c.to_bytes(4, "big") for c in items)


def smart_meter(instance: int = 0x01, *, power_w: int = 632, import_count: int = 65139,
                export_count: int = 1234, unit: int = 0x01, coefficient: int | None = None,
                at: datetime | None = None) -> EmulatedObject:
    """A low-voltage smart meter (0x0288); counts are in ``unit`` (0x01 = 0.1 kWh)."""
    at = at or datetime(2026, 5, 20, 5, 0, tzinfo=UTC)
    values = _identity(0xFFFFFE, "SIM-MT-EL", "MTEL0001")
    values.update({0xE7: power_w.to_bytes(4, "big", signed=True), 0xE1: bytes([unit]),
                   0xE0: import_count.to_bytes(4, "big"), 0xE3: export_count.to_bytes(4, "big"),
                   0xD7: b"\x06", 0xE5: b"\x00",
                   0xEA: fixed_time(at, import_count), 0xEB: fixed_time(at, export_count),
                   0xE2: history(0, [import_count - 48 + i for i in range(40)] + [None] * 8),
                   0xE4: history(0, [export_count] * 48)})
    if coefficient is not None:
        values[0xD3] = coefficient.to_bytes(4, "big")
    return EmulatedObject(eoj=Eoj(class_code=0x0288, instance=instance), values=values)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, node: EchonetNode) -> None:
        self._node = node

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._node._received(data, str(addr[0]))


class EchonetNode:
    """One emulated node; ``async with EchonetNode("127.0.0.2", [pv(0x1F)]) as node:``."""

    def __init__(self, address: str, objects: Iterable[EmulatedObject], *, port: int = PORT,
                 group: str | None = GROUP, interface: str = "127.0.0.1") -> None:
        self.address, self.port, self.group, self.interface = address, port, group, interface
        self.objects = list(objects)
        self.profile = EmulatedObject(eoj=NODE_PROFILE, values={})
        self._refresh_profile()
        self.refuse: set[int] = set()
        self.delay = 0.0
        self.drop = 0
        self.garble = 0
        self.requests = 0
        self.acks: list[Frame] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._tid = 0x8000

    def _refresh_profile(self) -> None:
        instances = encode_instance_list(o.eoj for o in self.objects)
        self.profile.values.update({0xD5: instances, 0xD6: instances, 0x80: b"\x30",
                                    0x8A: b"\xff\xff\xfe", 0x82: bytes([1, 13, 1, 0])})

    def object(self, eoj: Eoj) -> EmulatedObject:
        """The object with this EOJ."""
        return next(o for o in [self.profile, *self.objects] if o.eoj == eoj)

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        for sock in self._sockets():
            transport, _ = await loop.create_datagram_endpoint(lambda: _Endpoint(self), sock=sock)
            self._transports.append(transport)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self._transports:
            transport.close()

    def _sockets(self) -> list[socket.socket]:
        unicast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        unicast.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        unicast.bind((self.address, self.port))
        unicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                           socket.inet_aton(self.interface))
        unicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        socks = [unicast]
        if self.group is not None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.group, self.port))
            listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack(
                "4s4s", socket.inet_aton(self.group), socket.inet_aton(self.interface)))
            socks.append(listener)
        for sock in socks:
            sock.setblocking(False)
        return socks

    def _send(self, payload: bytes, address: str) -> None:
        self._transports[0].sendto(payload, (address, self.port))

    def _received(self, data: bytes, address: str) -> None:
        if address == self.address:
            return  # our own multicast, looped back
        try:
            frame = decode(data)
        except DeviceProtocolError:
            return
        if frame.esv is Esv.INFC_RES:
            self.acks.append(frame)
            return
        if frame.esv not in (Esv.GET, Esv.SETC, Esv.SETI):
            return
        self.requests += 1
        if self.drop:
            self.drop -= 1 if self.drop > 0 else 0
            return
        replies = [self._reply(frame, obj) for obj in self._targets(frame.deoj)]
        task = asyncio.get_running_loop().create_task(self._later(replies, address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, replies: list[Frame], address: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        for reply in replies:
            if self.garble:
                self.garble -= 1
                self._send(b"\x10\x81\x00", address)
            else:
                self._send(encode(reply), address)

    def _targets(self, deoj: Eoj) -> list[EmulatedObject]:
        return [o for o in [self.profile, *self.objects]
                if o.eoj.class_code == deoj.class_code and deoj.instance in (0, o.eoj.instance)]

    def _reply(self, request: Frame, obj: EmulatedObject) -> Frame:
        if request.esv is not Esv.GET:  # read-only
            return Frame(tid=request.tid, seoj=obj.eoj, deoj=request.seoj,
                         esv=Esv.SETC_SNA if request.esv is Esv.SETC else Esv.SETI_SNA,
                         properties=request.properties)
        props = []
        for prop in request.properties:
            edt = None if prop.epc in self.refuse else obj.read(prop.epc)
            props.append(Property(epc=prop.epc, edt=edt or b""))
        refused = any(not p.edt for p in props)
        return Frame(tid=request.tid, seoj=obj.eoj, deoj=request.seoj,
                     esv=Esv.GET_SNA if refused else Esv.GET_RES, properties=tuple(props))

    def _frame(self, seoj: Eoj, esv: Esv, values: Mapping[int, bytes]) -> Frame:
        self._tid = self._tid % 0xFFFF + 1
        return Frame(tid=self._tid, seoj=seoj, deoj=Eoj(class_code=0x05FF, instance=0x01),
                     esv=esv, properties=tuple(Property(epc=e, edt=v) for e, v in values.items()))

    def announce(self) -> None:
        """Multicast the node profile's INF of 0xD5 (instance list), as a node does at boot."""
        frame = self._frame(NODE_PROFILE, Esv.INF, {0xD5: self.profile.values[0xD5]})
        frame = Frame(tid=frame.tid, seoj=frame.seoj, deoj=NODE_PROFILE, esv=frame.esv,
                      properties=frame.properties)
        self._send(encode(frame), self.group or "127.0.0.1")

    def notify(self, eoj: Eoj, epcs: Iterable[int], to: str, *, confirm: bool = True) -> int:
        """Send INFC (``confirm``) or INF of ``epcs`` of object ``eoj`` to ``to``; the TID."""
        obj = self.object(eoj)
        frame = self._frame(eoj, Esv.INFC if confirm else Esv.INF,
                            {e: obj.values[e] for e in epcs})
        self._send(encode(frame), to)
        return frame.tid
