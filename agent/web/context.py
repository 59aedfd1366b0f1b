"""What every handler of the household page shares: sessions, language, rendering, form checks.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from agent.paths import WEB_SESSIONS_FILE
from agent.web import views
from agent.web.household import HouseholdService
from agent.web.i18n import COOKIE, LANGUAGES, Translator, choose, translator
from agent.web.security import LoginTokens, csrf_ok, page_key
from agent.web.sessions import Session, SessionStore
from agent.web.settings import WebSettings
from agent.web.throttle import THROTTLE_FILE, LoginThrottle, Wait, WaitReason

HERE = Path(str(resources.files("agent.web")))
_FORM_LIMITS: dict[str, Any] = {"max_files": 0, "max_fields": 16, "max_part_size": 4096}


class PageContext:
    """Shared state of the handlers: service, settings, sessions, throttle, templates."""

    def __init__(self, service: HouseholdService, settings: WebSettings) -> None:
        self.service = service
        self.settings = settings
        clock = settings.clock or service.now
        state_dir = service.state_dir
        self.sessions = SessionStore(
            path=None if state_dir is None else state_dir / WEB_SESSIONS_FILE,
            pairing=settings.pairing.fingerprint(), clock=clock, idle=settings.session_idle,
            absolute=settings.session_absolute, capacity=settings.max_sessions)
        key = page_key(state_dir)
        self.login_tokens = LoginTokens(key, clock=clock)
        self.throttle = LoginThrottle(
            clock=clock, key=key, path=None if state_dir is None else state_dir / THROTTLE_FILE,
            max_failures=settings.max_failures, lockout=settings.lockout)
        self.login_lock = asyncio.Lock()  # one scrypt at a time: bounded CPU and memory
        self.cookie = "__Host-hems_session" if settings.tls else "hems_session"
        self.login_cookie = "__Host-hems_login" if settings.tls else "hems_login"
        self.flashes: dict[str, tuple[str, dict[str, object]]] = {}
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                      autoescape=True, undefined=jinja2.StrictUndefined)

    # -- sessions and language ----------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(self.cookie))

    def authed(self, request: Request) -> Session | None:
        session = self.session(request)
        return session if session is not None and session.authenticated else None

    @staticmethod
    def client(request: Request) -> str:
        """The peer's address, as the login throttle counts it (no proxy headers are read)."""
        return request.client.host if request.client is not None else ""

    def lang(self, request: Request) -> str:
        return choose(request.query_params.get("lang"), request.cookies.get(COOKIE),
                      self.settings.default_lang)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                            samesite="strict", secure=self.settings.tls)

    def flash(self, session: Session, key: str, **values: object) -> None:
        self.flashes[session.sid] = (key, values)

    # -- rendering ----------------------------------------------------------------------

    def render(self, request: Request, name: str, session: Session | None,
               status: int = 200, **context: Any) -> HTMLResponse:
        lang = self.lang(request)
        t = translator(lang)
        key, values = self.flashes.pop(session.sid, ("", {})) if session else ("", {})
        html = self.env.get_template(name).render(
            t=t, lang=lang, csrf=session.csrf if session else "", path=request.url.path,
            logged_in=bool(session and session.authenticated), flash=t(key, **values) if key
            else "", contact=views.text(self.service.catalogue.spec.contact, lang), **context)
        response = HTMLResponse(html, status_code=status)
        if request.query_params.get("lang") in LANGUAGES:
            self.set_cookie(response, COOKIE, lang, 365 * 86400)
        return response

    def message(self, request: Request, session: Session | None, key: str,
                status: int) -> HTMLResponse:
        return self.render(request, "message.html", session, status, text_key=key)

    def login_redirect(self, request: Request) -> Response:
        if request.method == "GET":
            return redirect("/login")
        return self.message(request, None, "error.csrf", 401)

    async def form(self, request: Request) -> dict[str, str]:
        """The posted form as strings (a file field or too many fields: 400 via Starlette)."""
        form = await request.form(**_FORM_LIMITS)
        return {k: v for k, v in form.multi_items() if isinstance(v, str)}

    async def post(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """Common checks of an action: logged in, a form, the session's CSRF token."""
        session = self.authed(request)
        if session is None:
            return self.login_redirect(request)
        data = await self.form(request)
        if not csrf_ok(session, data.get("csrf")):
            return self.message(request, session, "error.csrf", 403)
        return session, data


def json_download(data: Any, filename: str) -> Response:
    """A JSON attachment (UTF-8, Japanese kept readable)."""
    body = json.dumps(data, ensure_ascii=False, indent=2, default=_json_default)
    return Response(body, media_type="application/json; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot export {type(value).__name__}")


def wait_text(t: Translator, wait: Wait) -> str:
    """The throttle's message in plain words."""
    minutes = max(1, math.ceil(wait.seconds / 60))
    if wait.reason is WaitReason.LOCKED:
        return t("login.locked", minutes=minutes)
    return t("login.wait", seconds=wait.seconds)


def bind(handler: Callable[[PageContext, Request], Awaitable[Response]],
         page: PageContext) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint that calls ``handler`` with the shared page context."""
    async def endpoint(request: Request) -> Response:
        return await handler(page, request)
    endpoint.__name__ = handler.__name__
    return endpoint


def redirect(path: str) -> Response:
    """See other: after a POST, or when there is nothing to show here."""
    return RedirectResponse(path, status_code=303)
