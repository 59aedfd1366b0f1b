"""Asyncio ECHONET Lite client over UDP/IPv4: port 3610 both ways, multicast 224.0.23.0.

One socket sends every request and receives the replies. A reply is taken only when it has the
request's TID, comes from the address the request went to (any address for multicast), has a
response ESV of the request's ESV (Get 0x62: Get_Res 0x72 or Get_SNA 0x52, see
:data:`REPLIES`) and its SEOJ is the object asked (the instance may differ only when 0x00 was
asked); anything else is dropped and counted (``stats.mismatched``). So any number of
requests to any number of nodes are in flight at once and a slow node (15-20 s is not
unusual) never delays the others. Each attempt has a deadline; a lost datagram is sent again
(same TID, so a late reply to the first copy still counts) after a short backoff. That
resend is UDP's nature, not a device-level retry policy: when a node stays silent,
:class:`DeviceUnreachable` goes up and the supervisor backs off.

INF (0x73) and INFC (0x74) notifications go to subscribers; an INFC is acknowledged with
INFC_Res (0x7A). Requests addressed to us are ignored: the agent is a read-only controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from drivers.echonet.codec import (
    CONTROLLER,
    NOTIFICATIONS,
    RESPONSES,
    Eoj,
    Esv,
    Frame,
    Property,
    decode,
    encode,
)
from drivers.errors import DeviceProtocolError, DeviceUnreachable

log = logging.getLogger(__name__)

PORT = 3610
MULTICAST_GROUP = "224.0.23.0"
Notify = Callable[[str, Frame], None]

REPLIES: Mapping[Esv, frozenset[Esv]] = {
    Esv.SETI: frozenset({Esv.SETI_SNA}),
    Esv.SETC: frozenset({Esv.SET_RES, Esv.SETC_SNA}),
    Esv.GET: frozenset({Esv.GET_RES, Esv.GET_SNA}),
    Esv.INF_REQ: frozenset({Esv.INF, Esv.INF_SNA}),
    Esv.SETGET: frozenset({Esv.SETGET_RES, Esv.SETGET_SNA}),
}
"""Request ESV -> the ESVs that answer it (ECHONET Lite Specification Part II, 3.2.5)."""


def same_object(asked: Eoj, seoj: Eoj) -> bool:
    """True if ``seoj`` is the object ``asked`` (any instance of the class when 0x00 was asked)."""
    return seoj.class_code == asked.class_code and asked.instance in (0, seoj.instance)


def answers(request: Frame, reply: Frame) -> bool:
    """True if ``reply`` answers ``request``: same TID, a response ESV of the request's ESV and
    the SEOJ the request's DEOJ (the sender's address is the caller's to check)."""
    return (reply.tid == request.tid and reply.esv in REPLIES.get(request.esv, frozenset())
            and same_object(request.deoj, reply.seoj))


@dataclass(slots=True)
class ClientStats:
    """Counters since the client was opened, for metrics and the bench."""

    requests: int = 0
    resends: int = 0
    timeouts: int = 0
    garbled: int = 0
    notifications: int = 0
    mismatched: int = 0  # a pending TID, but the wrong sender, ESV or object: dropped


@dataclass(slots=True)
class _Pending:
    address: str | None  # None: a multicast request, every answering node's reply is collected
    request: Frame
    future: asyncio.Future[Frame]
    replies: list[tuple[str, Frame]] = field(default_factory=list)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: EchonetClient) -> None:
        self._client = client

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._client._received(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        log.debug("ECHONET Lite socket error: %s", exc)


class EchonetClient:
    """An ECHONET Lite controller endpoint; use ``async with EchonetClient(...) as client``.

    ``interface`` is the local IPv4 address to bind and to send multicast from
    (``IP_MULTICAST_IF``); ``0.0.0.0`` binds every interface and leaves the multicast route
    to the kernel. ``timeout`` is the per-attempt deadline, ``retries`` the resends of a lost
    datagram, ``backoff`` the pause before the first resend (doubling). ``group=None`` turns
    multicast off (unicast-only use, e.g. against fixed addresses).
    """

    def __init__(self, *, interface: str = "0.0.0.0", port: int = PORT,
                 group: str | None = MULTICAST_GROUP, timeout: float = 5.0, retries: int = 2,
                 backoff: float = 0.5, source: Eoj = CONTROLLER) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(f"timeout must be > 0, retries and backoff >= 0; got {timeout}, "
                             f"{retries}, {backoff}")
        self.interface, self.port, self.group = interface, port, group
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.source = source
        self.stats = ClientStats()
        self._pending: dict[int, _Pending] = {}
        self._subscribers: list[Notify] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self._next_tid = 1

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        try:
            for sock in self._sockets():
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), sock=sock)
                self._transports.append(transport)
        except OSError as exc:
            await self.__aexit__(None, None, None)
            raise DeviceUnreachable(f"cannot open ECHONET Lite UDP {self.interface}:"
                                    f"{self.port}: {exc}") from exc
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()
        self._pending.clear()

    def _sockets(self) -> list[socket.socket]:
        wildcard = self.interface in ("", "0.0.0.0")
        main = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        main.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        socks = [main]
        try:
            main.bind((self.interface, self.port))
            main.setblocking(False)
            if self.group is None:
                return socks
            interface = socket.inet_aton("0.0.0.0" if wildcard else self.interface)
            if not wildcard:
                main.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface)
            # Loop back our own multicast so nodes on this host (simulators) see it too.
            main.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            listener = main
            if not wildcard:  # a socket bound to one address never sees multicast
                listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.group, self.port))
                listener.setblocking(False)
            membership = struct.pack("4s4s", socket.inet_aton(self.group), interface)
            listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except OSError:
            for sock in socks:
                sock.close()
            raise
        return socks

    def subscribe(self, callback: Notify) -> Callable[[], None]:
        """Call ``callback(address, frame)`` for every INF/INFC; returns the unsubscriber."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def _tid(self) -> int:
        while self._next_tid in self._pending:
            self._next_tid = self._next_tid % 0xFFFF + 1
        tid, self._next_tid = self._next_tid, self._next_tid % 0xFFFF + 1
        return tid

    def _send(self, frame: Frame, address: str) -> None:
        if not self._transports:
            raise DeviceUnreachable("ECHONET Lite client is not open")
        self._transports[0].sendto(encode(frame), (address, self.port))

    async def request(self, address: str, deoj: Eoj, esv: Esv, properties: Sequence[Property],
                      *, deadline: float | None = None, retries: int | None = None) -> Frame:
        """Send a unicast request and return its reply from ``address`` (see :func:`answers`).

        ``deadline`` (per attempt) and ``retries`` override the client's defaults.
        """
        _check_request(esv)
        timeout = self.timeout if deadline is None else deadline
        retries = self.retries if retries is None else retries
        loop = asyncio.get_running_loop()
        frame = Frame(tid=self._tid(), seoj=self.source, deoj=deoj, esv=esv,
                      properties=tuple(properties))
        pending = _Pending(address=address, request=frame, future=loop.create_future())
        self._pending[frame.tid] = pending
        self.stats.requests += 1
        try:
            for attempt in range(retries + 1):
                if attempt:
                    self.stats.resends += 1
                self._send(frame, address)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        return await asyncio.shield(pending.future)
                if attempt < retries:
                    with contextlib.suppress(TimeoutError):  # a late reply still counts
                        async with asyncio.timeout(self.backoff * 2 ** attempt):
                            return await asyncio.shield(pending.future)
            self.stats.timeouts += 1
            raise DeviceUnreachable(f"ECHONET Lite {address} {deoj}: no reply to ESV "
                                    f"0x{esv:02X} in {retries + 1} attempt(s) of {timeout} s")
        finally:
            del self._pending[frame.tid]
            pending.future.cancel()

    async def get(self, address: str, deoj: Eoj, epcs: Iterable[int], *,
                  deadline: float | None = None) -> dict[int, bytes | None]:
        """Read properties; EPCs the node refused (Get_SNA with PDC 0) map to ``None``."""
        wanted = list(epcs)
        reply = await self.request(address, deoj, Esv.GET, [Property(epc=e) for e in wanted],
                                   deadline=deadline)
        return get_result(reply, deoj, wanted)

    async def multicast(self, deoj: Eoj, esv: Esv, properties: Sequence[Property], *,
                        wait: float, address: str | None = None) -> list[tuple[str, Frame]]:
        """Send one request to the multicast group (or ``address``, e.g. a broadcast or a
        test node) and collect every node's reply to it (see :func:`answers`) for ``wait``
        seconds."""
        _check_request(esv)
        target = address or self.group
        if target is None:
            raise ValueError("multicast is off (group=None) and no address was given")
        loop = asyncio.get_running_loop()
        frame = Frame(tid=self._tid(), seoj=self.source, deoj=deoj, esv=esv,
                      properties=tuple(properties))
        pending = _Pending(address=None, request=frame, future=loop.create_future())
        self._pending[frame.tid] = pending
        try:
            self._send(frame, target)
            await asyncio.sleep(wait)
            return list(pending.replies)
        finally:
            del self._pending[frame.tid]
            pending.future.cancel()

    def _received(self, data: bytes, address: str) -> None:
        try:
            frame = decode(data)
        except DeviceProtocolError as exc:
            self.stats.garbled += 1
            log.debug("dropped a garbled ECHONET Lite datagram: %s", exc)
            return
        pending = self._pending.get(frame.tid)
        if pending is not None and self._answered(pending, frame, address):
            return
        if frame.esv in NOTIFICATIONS:
            self._notified(frame, address)
        elif pending is not None and frame.esv in RESPONSES:
            self.stats.mismatched += 1
            log.debug("dropped a reply with the TID of a pending request: wrong sender, ESV "
                      "(0x%02X to 0x%02X) or object", frame.esv, pending.request.esv)

    @staticmethod
    def _answered(pending: _Pending, frame: Frame, address: str) -> bool:
        if not answers(pending.request, frame) or pending.address not in (None, address):
            return False
        if pending.address is None:
            pending.replies.append((address, frame))
        elif not pending.future.done():
            pending.future.set_result(frame)
        return True

    def _notified(self, frame: Frame, address: str) -> None:
        self.stats.notifications += 1
        if frame.esv is Esv.INFC:
            ack = Frame(tid=frame.tid, seoj=frame.deoj, deoj=frame.seoj, esv=Esv.INFC_RES,
                        properties=tuple(Property(epc=p.epc) for p in frame.properties))
            self._send(ack, address)
        for callback in list(self._subscribers):
            try:
                callback(address, frame)
            except Exception:  # one subscriber's bug must not starve the others
                log.exception("ECHONET Lite notification subscriber failed")


def _check_request(esv: Esv) -> None:
    if esv not in REPLIES:
        raise ValueError(f"ESV 0x{esv:02X} is not a request (one of "
                         f"{', '.join(f'0x{e:02X}' for e in REPLIES)})")


def get_result(reply: Frame, deoj: Eoj, wanted: Sequence[int]) -> dict[int, bytes | None]:
    """EPC -> EDT of a Get reply; ``None`` for an EPC refused with PDC 0 (Get_SNA)."""
    if reply.esv not in (Esv.GET_RES, Esv.GET_SNA):
        raise DeviceProtocolError(f"{deoj}: expected Get_Res or Get_SNA, got ESV "
                                  f"0x{reply.esv:02X}")
    if not same_object(deoj, reply.seoj):
        raise DeviceProtocolError(f"reply from {reply.seoj} to a request for {deoj}")
    got = reply.values()
    if set(got) != set(wanted):
        raise DeviceProtocolError(f"{deoj}: asked for {sorted(wanted)}, got {sorted(got)}")
    refused = reply.esv is Esv.GET_SNA
    return {epc: (None if refused and not edt else edt) for epc, edt in got.items()}
