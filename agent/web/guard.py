"""ASGI middleware in front of every route: Host/Origin allow-list and security headers.

* ``Host`` must be one of the configured LAN names with the listening port; anything else is
  refused with 400 before routing, so a page on another site that rebinds its DNS name to the
  gateway's address cannot read or drive the household page.
* A state-changing request (anything but GET/HEAD) must carry an ``Origin`` equal to one of the
  page's own origins: 403 otherwise; and a Content-Length of at most 16 KiB (411, 413). CSRF
  tokens are checked by the routes on top of this.
* Every response carries a strict CSP (no inline script or style), no framing, no referrer to
  other sites,
  nosniff, a Permissions-Policy that turns device features off, and ``Cache-Control:
  no-store`` except for static files.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    # Not "no-referrer": under it Chromium sends "Origin: null" on the page's own form posts,
    # which would defeat the Origin check. "same-origin" still sends nothing to any other site.
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "permissions-policy": ("camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
                           "serial=(), bluetooth=(), interest-cohort=()"),
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
_SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_BODY = 16 * 1024


class GuardMiddleware:
    """Refuse foreign hosts and cross-origin writes; add security headers to every answer."""

    def __init__(self, app: ASGIApp, *, origins: frozenset[str], static_prefix: str) -> None:
        self.app = app
        self.origins = frozenset(o.lower() for o in origins)
        self.hosts = frozenset(o.split("://", 1)[1] for o in self.origins)
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope["method"], headers)
        cache = "no-cache" if scope["path"].startswith(self.static_prefix) else "no-store"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out[name] = value
                out["cache-control"] = cache
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, method: str, headers: Headers) -> PlainTextResponse | None:
        host = headers.get("host", "").lower()
        if host not in self.hosts or len(headers.getlist("host")) != 1:
            return PlainTextResponse("unknown host", status_code=400)
        if method not in _SAFE_METHODS:
            origin = headers.get("origin", "").lower()
            if origin not in self.origins:
                return PlainTextResponse("cross-origin request refused", status_code=403)
            # Bodies are small forms; a bound keeps an unauthenticated /login post from filling
            # the gateway's memory. Browsers always send Content-Length with a form or fetch.
            length = headers.get("content-length", "")
            if not length.isdigit():
                return PlainTextResponse("Content-Length required", status_code=411)
            if int(length) > MAX_BODY:
                return PlainTextResponse("request body too large", status_code=413)
        return None
