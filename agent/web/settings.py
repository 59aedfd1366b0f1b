"""Settings of the household page, built by the daemon from its configuration."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.config.model import Web
from agent.web.errors import WebError
from agent.web.security import PairingHash, load_pairing_hash


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    """What the page needs to know about where it runs and who may log in.

    ``allowed_hosts`` are the names and addresses the page answers to (the configured LAN
    address, the gateway's hostname, ``localhost``); any other ``Host`` header is refused so a
    DNS-rebinding page cannot reach it. ``bind_host`` and ``port`` are where it listens (the
    port is part of the origin).
    """

    pairing: PairingHash
    allowed_hosts: frozenset[str]
    port: int
    bind_host: str = "127.0.0.1"
    tls: bool = False
    session_idle: timedelta = timedelta(minutes=30)
    session_absolute: timedelta = timedelta(hours=12)
    max_sessions: int = 16
    """Logged-in sessions kept (the oldest is logged out when a new one would exceed it)."""
    max_failures: int = 10
    """Wrong codes from one client address before it is locked out for ``lockout``."""
    lockout: timedelta = timedelta(minutes=15)
    default_lang: str = "ja"
    clock: Callable[[], datetime] | None = None
    """Clock of sessions and the login back-off. ``None``: the household service's clock. The
    daemon passes real time here, so sessions last their real length even when consent and
    windows run on simulated time (demos)."""

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @classmethod
    def from_config(cls, web: Web, *, hostnames: Iterable[str] = ()) -> WebSettings:
        """Settings from the ``[web]`` section: listen address, pairing hash file, TLS.

        ``hostnames`` are extra names the household may type (e.g. ``hems-gateway.local``).
        """
        if web.pairing_hash_file is None:
            raise WebError("web.pairing_hash_file is not set: provisioning writes it")
        host, _, port = web.listen.rpartition(":")
        host = host.strip("[]")
        names = {host.lower(), *(h.lower() for h in hostnames)}
        if ipaddress.ip_address(host).is_loopback:
            names.add("localhost")
        return cls(pairing=load_pairing_hash(web.pairing_hash_file),
                   allowed_hosts=frozenset(names), port=int(port), bind_host=host,
                   tls=web.tls_cert is not None)

    def origins(self) -> frozenset[str]:
        """The exact ``Origin`` values a same-site form post may carry."""
        default = 443 if self.tls else 80
        suffix = "" if self.port == default else f":{self.port}"
        return frozenset(f"{self.scheme}://{_bracket(h)}{suffix}" for h in self.allowed_hosts)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
