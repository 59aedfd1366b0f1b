"""Run the household page inside the daemon's own event loop.

uvicorn's :meth:`uvicorn.Server.serve` installs its own SIGINT/SIGTERM handlers and polls a
flag ten times a second. Here the daemon owns shutdown: signals are left alone, the server waits
on the daemon's ``stop`` event (no idle wake-ups), access logs and the lifespan protocol are off
(the access log would record addresses and paths of the household's visits). Connections are
accepted by :class:`agent.web.connections.Listener`, bounded in number and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from agent.web.connections import (
    Connection,
    Guard,
    Listener,
    PageLimits,
    PageProtocol,
    connection_budget,
)
from agent.web.errors import WebError

log = logging.getLogger(__name__)


def _check_lan(host: str) -> None:
    """Only a LAN, link-local or loopback address: never a wildcard, never a WAN address."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError as exc:
        raise WebError(f"the household page binds to an IP address, not {host!r}") from exc
    if address.is_unspecified or not (address.is_private or address.is_loopback
                                      or address.is_link_local):
        raise WebError(f"the household page binds to a LAN address, never {host}")


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that neither captures signals nor polls: it waits for ``stop``. It
    accepts connections itself, within ``limits`` (:mod:`agent.web.connections`)."""

    def __init__(self, config: uvicorn.Config, stop: asyncio.Event,
                 started: asyncio.Event | None, limits: PageLimits) -> None:
        super().__init__(config)
        self._stop = stop
        self._started = started
        self.guard = Guard(limits)
        self.listener: Listener | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon's TaskGroup owns SIGTERM/SIGINT; uvicorn must not swap the handlers.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        host = config.host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, config.port), family=family,
                                        backlog=self.guard.limits.backlog)
        except OSError as exc:
            raise WebError(f"cannot listen on {config.host}:{config.port}") from exc
        sock.setblocking(False)

        def protocol(connection: Connection) -> PageProtocol:
            return PageProtocol(config=config, server_state=self.server_state,
                                app_state=self.lifespan.state, connection=connection)

        self.servers = []
        self.listener = Listener(sock, self.guard, protocol, config.ssl)
        self.listener.start()
        self.started = True
        if self._started is not None:
            self._started.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default headers once
        await self._stop.wait()
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.close_listener()
        await super().shutdown(sockets)
        if self.listener is not None:
            await self.listener.wait_closed()

    def close_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()


async def serve(app: ASGIApp, host: str, port: int, *, ssl_certfile: Path | str | None = None,
                ssl_keyfile: Path | str | None = None, started: asyncio.Event | None = None,
                stop: asyncio.Event, limits: PageLimits | None = None,
                guard: list[Guard] | None = None) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then close connections and return.

    ``host`` is the configured LAN (or loopback) address, never a wildcard the WAN could reach.
    With ``ssl_certfile`` and ``ssl_keyfile`` the page is served over TLS. ``started`` is set
    once the socket listens. Connections are bounded by ``limits`` (default
    :class:`PageLimits`), their number also by :func:`connection_budget` of this process's
    open-files limit; ``guard``, if given, receives the :class:`Guard` that counts them. A
    port that cannot be bound raises :class:`WebError`. Cancelled, it closes the listening
    socket and re-raises.
    """
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise WebError("TLS needs both a certificate and a key file")
    _check_lan(host)
    limits = limits or PageLimits()
    budget = connection_budget(limits)
    if budget < limits.max_connections:
        log.info("household page: %d connections at most (the open-files limit leaves no "
                 "room for %d)", budget, limits.max_connections)
        limits = dataclasses.replace(limits, max_connections=budget)
    config = uvicorn.Config(
        app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
        access_log=False, lifespan="off", server_header=False, date_header=False,
        log_config=None, proxy_headers=False, timeout_graceful_shutdown=5, http="h11",
        ws="none", timeout_keep_alive=limits.keep_alive, backlog=limits.backlog,
        h11_max_incomplete_event_size=limits.max_head,
    )
    server = _EmbeddedServer(config, stop, started, limits)
    if guard is not None:
        guard.append(server.guard)
    try:
        await server.serve()
    except asyncio.CancelledError:
        server.should_exit = True
        server.close_listener()
        raise
