"""Settings of the household page, built by the daemon from its configuration."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from agent.web.security import PairingHash


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    """What the page needs to know about where it runs and who may log in.

    ``allowed_hosts`` are the names and addresses the page answers to (the configured LAN
    address, the gateway's hostname, ``localhost``); any other ``Host`` header is refused so a
    DNS-rebinding page cannot reach it. ``port`` is the listening port (part of the origin).
    """

    pairing: PairingHash
    allowed_hosts: frozenset[str]
    port: int
    tls: bool = False
    session_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    session_idle: timedelta = timedelta(minutes=30)
    session_absolute: timedelta = timedelta(hours=12)
    max_failures: int = 10
    lockout: timedelta = timedelta(minutes=15)
    default_lang: str = "ja"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def origins(self) -> frozenset[str]:
        """The exact ``Origin`` values a same-site form post may carry."""
        default = 443 if self.tls else 80
        suffix = "" if self.port == default else f":{self.port}"
        return frozenset(f"{self.scheme}://{_bracket(h)}{suffix}" for h in self.allowed_hosts)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
