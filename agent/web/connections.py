"""Bounded connections of the household page: how many, and how long each may keep us waiting.

uvicorn alone holds a connection that sends nothing, or a request head one byte at a time, for
as long as the peer likes, and accepts as many as arrive: about 1,100 idle connections used up
the daemon's 1,024 descriptors, and the outbox could no longer open its files. Here the page
accepts connections itself (:class:`Listener`) and hands each one to uvicorn's h11 protocol
with three deadlines (:class:`PageProtocol`):

* **head**: from the moment a connection opens (after its TLS handshake) or its last answer
  was sent, the request head must be complete within ``head_timeout``, however slowly it
  trickles in; a TLS handshake gets the same time;
* **body**: once the head is in, the body within ``body_timeout``;
* **answer**: once the request is complete, our answer must have been handed to a reader
  within ``answer_timeout`` (a peer that never reads cannot hold the connection).

uvicorn's ``timeout_keep_alive`` still closes a kept-alive connection that stays silent.

At most ``max_connections`` connections are open. When one more arrives, the oldest connection
that is waiting on its peer (in its TLS handshake, head or body) is closed to make room, so a
flood of idle connections only ever pushes out older idle ones, and a browser's fresh
connection, which sends its request at once, is served. Connections whose request we are
answering are never pushed out; if all are such, accepting pauses (the kernel's backlog of
``backlog`` connections waits) until one ends. So the page never holds more than
``max_connections`` descriptors, plus the listening socket, plus those whose close is under
way (one per accepted connection at most, closed in the next turn of the event loop).

The caller keeps ``max_connections`` well under the process's open-files limit
(:func:`connection_budget`), so the outbox, the release log and the ledger always find a
descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import resource
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from agent.host.memory import DeferredTrim

log = logging.getLogger(__name__)

RESERVED_DESCRIPTORS = 256
"""Descriptors never given to page connections: the daemon's files, sockets and threads."""
_ACCEPT_RETRY = 1.0  # seconds, after the system refused a descriptor (as asyncio does)


@dataclass(frozen=True, kw_only=True)
class PageLimits:
    """Bounds of the page's connections (see the module's text)."""

    max_connections: int = 128
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    answer_timeout: float = 60.0
    keep_alive: int = 5
    """Seconds a kept-alive connection may stay silent (uvicorn's ``timeout_keep_alive``)."""
    backlog: int = 64
    max_head: int = 16 * 1024
    """Bytes of a request head (h11's ``max_incomplete_event_size``): more is a 400."""

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.backlog < 1 or self.max_head < 1024:
            raise ValueError("page limits: max_connections and backlog at least 1, "
                             "max_head at least 1024 bytes")
        if min(self.head_timeout, self.body_timeout, self.answer_timeout, self.keep_alive) <= 0:
            raise ValueError("page limits: every timeout must be positive")


def connection_budget(limits: PageLimits, open_files: int | None = None) -> int:
    """How many page connections fit under ``open_files`` (default: this process's soft
    limit) with :data:`RESERVED_DESCRIPTORS` left for the daemon, at most
    ``limits.max_connections`` and at least 8. Half of what is left: a connection's close
    can lag one event-loop turn behind the accept that replaces it."""
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if open_files == resource.RLIM_INFINITY:
            return limits.max_connections
    return max(8, min(limits.max_connections, (open_files - RESERVED_DESCRIPTORS) // 2))


class Phase(enum.Enum):
    """What an open connection is waiting for."""

    HANDSHAKE = "handshake"
    HEAD = "head"
    BODY = "body"
    ANSWER = "answer"  # waiting on us, not on the peer: never pushed out


class Connection:
    """One accepted socket, from accept to close."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.phase = Phase.HANDSHAKE
        self.setup: asyncio.Task[Any] | None = None
        self.protocol: PageProtocol | None = None
        self.closing = False
        self._timer: asyncio.TimerHandle | None = None

    def enter(self, phase: Phase, timeout: float) -> None:
        """Start ``phase`` with its deadline (a phase entered again keeps its deadline)."""
        if phase is self.phase and self._timer is not None:
            return
        self.phase = phase
        self.cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(timeout, self._expired)
        self.guard.moved(self)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self.guard.expired[self.phase] += 1
        self.close()

    def close(self) -> None:
        """Close now: no flush of what a peer that does not read left in the buffer."""
        if self.closing:
            return
        self.closing = True
        self.cancel_timer()
        self.guard.closing(self)
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abort()
        elif self.setup is not None:
            self.setup.cancel()  # in the TLS handshake: the transport is closed with it


class Guard:
    """The open connections: how many, which are waiting on their peer (oldest first)."""

    def __init__(self, limits: PageLimits) -> None:
        self.limits = limits
        self.open: set[Connection] = set()
        self.waiting: OrderedDict[Connection, None] = OrderedDict()
        self.pushed_out = 0
        self.expired: dict[Phase, int] = dict.fromkeys(Phase, 0)
        self._closing = 0
        self._changed = asyncio.Event()
        self.trim_later = DeferredTrim(1.0)
        """After the page has answered, the heap pages its work freed go back to the system
        (a login and a consent change left 1.4 MB in glibc's heap)."""

    def live(self) -> int:
        """Open connections not being closed."""
        return len(self.open) - self._closing

    async def room(self) -> None:
        """Wait until one more connection may be accepted (now, or by pushing one out)."""
        while self.live() >= self.limits.max_connections and not self.waiting:
            self._changed.clear()
            await self._changed.wait()

    def admit(self) -> Connection:
        """Register a just-accepted connection, pushing out the oldest waiting one if full."""
        while self.live() >= self.limits.max_connections and self.waiting:
            oldest = next(iter(self.waiting))
            self.pushed_out += 1
            oldest.close()
        connection = Connection(self)
        self.open.add(connection)
        self.waiting[connection] = None
        return connection

    def moved(self, connection: Connection) -> None:
        if connection.closing or connection not in self.open:
            return
        self.waiting.pop(connection, None)
        if connection.phase is not Phase.ANSWER:
            self.waiting[connection] = None  # newest last
        self._changed.set()

    def closing(self, connection: Connection) -> None:
        self.waiting.pop(connection, None)
        if connection in self.open:
            self._closing += 1

    def gone(self, connection: Connection) -> None:
        """The connection's socket is closed."""
        connection.cancel_timer()
        if connection not in self.open:
            return
        self.open.discard(connection)
        self.waiting.pop(connection, None)
        if connection.closing:
            self._closing -= 1
        self._changed.set()


class PageProtocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines of its :class:`Connection`."""

    def __init__(self, *args: Any, connection: Connection, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection = connection
        connection.protocol = self

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.connection.enter(Phase.HEAD, self.connection.guard.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.guard.gone(self.connection)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.connection.guard.trim_later.request()
        self._follow()

    def _follow(self) -> None:
        """Move the connection to the phase h11 and the request cycle are in."""
        if self.transport.is_closing():
            return
        limits = self.connection.guard.limits
        if self.cycle is None or self.cycle.response_complete:
            self.connection.enter(Phase.HEAD, limits.head_timeout)
        elif self.conn.their_state is h11.SEND_BODY:
            self.connection.enter(Phase.BODY, limits.body_timeout)
        else:
            self.connection.enter(Phase.ANSWER, limits.answer_timeout)


class Listener:
    """Accepts the page's connections one by one, within the :class:`Guard`'s bound."""

    def __init__(self, sock: socket.socket, guard: Guard,
                 protocol: Callable[[Connection], PageProtocol],
                 tls: ssl.SSLContext | None) -> None:
        self.sock = sock
        self.guard = guard
        self._protocol = protocol
        self._tls = tls
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._accept(), name="page-accept")

    def close(self) -> None:
        """Stop accepting, close the listening socket and the connections still in their TLS
        handshake (the others are uvicorn's to shut down)."""
        if self._task is not None:
            self._task.cancel()
        self.sock.close()
        for connection in list(self.guard.open):
            if connection.phase is Phase.HANDSHAKE:
                connection.close()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.guard.room()
            try:
                sock, _ = await loop.sock_accept(self.sock)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:  # out of descriptors or buffers: the outbox comes first
                log.warning("household page: cannot accept a connection (%s); retrying in "
                            "%.0f s", exc.strerror, _ACCEPT_RETRY)
                await asyncio.sleep(_ACCEPT_RETRY)
                continue
            connection = self.guard.admit()
            connection.setup = loop.create_task(self._set_up(connection, sock))
            # sock_accept does not yield while connections are queued: let the closes of
            # the connections pushed out run before the next accept.
            await asyncio.sleep(0)

    async def _set_up(self, connection: Connection, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        timeouts: dict[str, float] = {}
        if self._tls is not None:
            timeouts = {"ssl_handshake_timeout": self.guard.limits.head_timeout,
                        "ssl_shutdown_timeout": 2.0}
        try:
            await loop.connect_accepted_socket(lambda: self._protocol(connection), sock,
                                               ssl=self._tls, **timeouts)
        except OSError:  # a failed TLS handshake: the transport closed the socket
            self._failed(connection, sock)
        except asyncio.CancelledError:  # pushed out during its handshake, or shutdown
            self._failed(connection, sock)
            raise

    def _failed(self, connection: Connection, sock: socket.socket) -> None:
        if connection.protocol is None:  # never handed to a transport: still ours to close
            sock.close()
        if connection.protocol is None or connection.protocol.transport is None:
            self.guard.gone(connection)
