"""The household page's POST handlers (and the small JSON API): every change goes through here.

Each action is checked in the same order: logged in, well-formed, the session's CSRF token
(same origin was checked by the guard before routing). A refused change (unknown purpose, tier
finer than allowed, contract-required purpose off) answers 400 and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.web import pages
from agent.web.context import PageContext, redirect, wait_text
from agent.web.household import Outcome
from agent.web.i18n import Translator, translator
from agent.web.security import csrf_ok
from agent.web.throttle import Wait, WaitReason
from policy.errors import ConsentError

log = logging.getLogger(__name__)

_CODE_MAX = 64
_JSON_MAX = 4096


async def login(page: PageContext, request: Request) -> Response:
    """Check the pairing code (throttled per client address, one scrypt at a time); a right
    code starts a new session."""
    data = await page.form(request)
    t = translator(page.lang(request))
    why = page.login_tokens.refusal(request.cookies.get(page.login_cookie), data.get("csrf"))
    if why is not None:
        log.info("login form refused: its token is %s; a fresh form was sent", why)
        return pages.login_page(page, request, 403, t("error.csrf"))
    client = page.client(request)
    wait = page.throttle.begin(client)  # before queueing: a waiting device never queues
    if wait is not None:
        return _throttled(page, request, t, wait)
    try:
        async with page.login_lock:
            code = data.get("code", "")[:_CODE_MAX]
            right = await asyncio.to_thread(page.settings.pairing.verify, code)
    finally:
        page.throttle.release(client)
    if not right:
        wait = page.throttle.failed(client)
        error = wait_text(t, wait) if wait.reason is WaitReason.LOCKED else t("login.wrong")
        return pages.login_page(page, request, 401, error)
    page.throttle.succeeded(client)
    session = page.session(request)
    if session is not None:
        page.sessions.drop(session)
    fresh = page.sessions.new()
    done = redirect("/")
    page.set_cookie(done, page.cookie, page.sessions.cookie_value(fresh),
                    int(page.settings.session_absolute.total_seconds()))
    done.delete_cookie(page.login_cookie, path="/", secure=page.settings.tls, httponly=True,
                       samesite="strict")
    return done


def _throttled(page: PageContext, request: Request, t: Translator, wait: Wait) -> Response:
    response = pages.login_page(page, request, 429, wait_text(t, wait))
    response.headers["retry-after"] = str(wait.seconds)
    return response


async def logout(page: PageContext, request: Request) -> Response:
    checked = await page.post(request)
    if isinstance(checked, Response):
        return checked
    page.sessions.drop(checked[0])
    response = redirect("/login")
    response.delete_cookie(page.cookie, path="/")
    return response


async def logout_everywhere(page: PageContext, request: Request) -> Response:
    """End every logged-in session, this one included (a phone lost or passed on)."""
    checked = await page.post(request)
    if isinstance(checked, Response):
        return checked
    ended = page.sessions.drop_all()
    log.info("household page: logged out everywhere (%d sessions)", ended)
    response = redirect("/login")
    response.delete_cookie(page.cookie, path="/")
    return response


def _hours(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 4:
        raise ConsentError("hours must be a whole number")
    return int(value)


async def grant(page: PageContext, request: Request) -> Response:
    """Set one grant from the form (purpose, recipient, tier, optional hours)."""
    checked = await page.post(request)
    if isinstance(checked, Response):
        return checked
    session, data = checked
    try:
        outcome = page.service.set_grant(data.get("purpose", ""), data.get("recipient", ""),
                                         _tier(data.get("tier")), hours=_hours(data.get("hours")))
    except ConsentError:
        return page.message(request, session, "error.refused", 400)
    page.flash(session, "done.changed", n=outcome.purged)
    return redirect(f"/#p-{outcome.changes[0].record.purpose}")


def _tier(value: str | None) -> str | None:
    if value is None or value == "":
        raise ConsentError("no tier chosen")
    return None if value == "off" else value


async def pending_request(page: PageContext, request: Request) -> Response:
    """Accept or decline a pending support-centre request."""
    checked = await page.post(request)
    if isinstance(checked, Response):
        return checked
    session, data = checked
    request_id, action = data.get("request_id", ""), data.get("action")
    try:
        if action == "accept":
            page.service.accept_request(request_id)
        elif action == "decline":
            page.service.decline_request(request_id)
        else:
            raise ConsentError("action must be accept or decline")
    except ConsentError:
        return page.message(request, session, "error.refused", 400)
    page.flash(session, "done.accepted" if action == "accept" else "done.declined")
    return redirect("/")


async def stop_third_party(page: PageContext, request: Request) -> Response:
    """Stop every provision to third parties in one action."""
    checked = await page.post(request)
    if isinstance(checked, Response):
        return checked
    outcome: Outcome = page.service.stop_third_party()
    page.flash(checked[0], "done.stopped", n=outcome.purged)
    return redirect("/rights")


async def delete(page: PageContext, request: Request) -> Response:
    """Delete local data (after the confirmation box) and send the deletion request."""
    checked = await page.post(request)
    if isinstance(checked, Response):
        return checked
    session, data = checked
    if data.get("confirm") != "yes":
        return page.message(request, session, "error.confirm", 400)
    page.service.delete_local_data()
    page.flash(session, "done.deleted")
    return redirect("/rights")


async def api_state(page: PageContext, request: Request) -> Response:
    """The grants in force, as JSON."""
    if page.authed(request) is None:
        return JSONResponse({"error": "not logged in"}, status_code=401)
    grants = [{"purpose": g.purpose, "recipient": g.recipient, "tier": g.tier.value,
               "expires": None if g.expires is None else g.expires.isoformat()}
              for g in page.service.grants().values()]
    return JSONResponse({"catalogue_version": page.service.catalogue.version,
                         "grants": grants})


async def api_grant(page: PageContext, request: Request) -> Response:
    """Set one grant from a JSON body ``{purpose, recipient, tier, hours?}``."""
    session = page.authed(request)
    if session is None:
        return JSONResponse({"error": "not logged in"}, status_code=401)
    if not csrf_ok(session, request.headers.get("x-csrf-token")):
        return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
    body = await request.body()
    try:
        purpose, recipient, tier, hours = _grant_json(body)
        outcome = page.service.set_grant(purpose, recipient, tier, hours=hours)
    except ConsentError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"ok": True, "purged": outcome.purged})


def _grant_json(body: bytes) -> tuple[str, str, str | None, int | None]:
    """Validate the JSON body of ``/api/grant``; anything else raises ConsentError."""
    if len(body) > _JSON_MAX:
        raise ConsentError("body too large")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ConsentError("body is not JSON") from exc
    if not isinstance(data, dict) or not set(data) <= {"purpose", "recipient", "tier", "hours"}:
        raise ConsentError("expected an object with purpose, recipient, tier and hours")
    purpose, recipient, tier = data.get("purpose"), data.get("recipient"), data.get("tier")
    hours = data.get("hours")
    if not (isinstance(purpose, str) and isinstance(recipient, str)
            and (tier is None or isinstance(tier, str))):
        raise ConsentError("purpose and recipient are strings; tier a string or null")
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int)):
        raise ConsentError("hours must be a whole number")
    return purpose, recipient, None if tier in (None, "off") else tier, hours
