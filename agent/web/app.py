"""The household page: a Starlette app the daemon serves on the LAN (see :mod:`agent.web.server`).

Pages (GET, logged in): ``/`` uses and consent, ``/released`` what left my home, ``/history``
consent history, ``/rights`` download and delete; ``/export.json`` and
``/provision-records.json`` are downloads. Actions (POST, logged in, CSRF token, same origin):
``/grant``, ``/request``, ``/stop-third-party``, ``/delete``, ``/logout``,
``/logout-everywhere``; ``/login`` takes the pairing code. ``/api/state`` (GET) and
``/api/grant`` (POST, JSON, ``X-CSRF-Token`` header) serve scripts. Every form works
without JavaScript.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agent.web import actions, pages
from agent.web.context import HERE, PageContext, bind
from agent.web.guard import GuardMiddleware
from agent.web.household import HouseholdService
from agent.web.settings import WebSettings


def create_app(household: HouseholdService, settings: WebSettings) -> Starlette:
    """The household page for ``household``, guarded as ``settings`` say."""
    page = PageContext(household, settings)
    routes = [
        Route("/", bind(pages.purposes, page)),
        Route("/released", bind(pages.released, page)),
        Route("/history", bind(pages.history, page)),
        Route("/rights", bind(pages.rights, page)),
        Route("/export.json", bind(pages.export, page)),
        Route("/provision-records.json", bind(pages.provision_records, page)),
        Route("/released.csv", bind(pages.released_csv, page)),
        Route("/energy", bind(pages.energy, page)),
        Route("/login", bind(pages.login_form, page)),
        Route("/login", bind(actions.login, page), methods=["POST"]),
        Route("/logout", bind(actions.logout, page), methods=["POST"]),
        Route("/logout-everywhere", bind(actions.logout_everywhere, page), methods=["POST"]),
        Route("/grant", bind(actions.grant, page), methods=["POST"]),
        Route("/request", bind(actions.pending_request, page), methods=["POST"]),
        Route("/stop-third-party", bind(actions.stop_third_party, page),
              methods=["POST"]),
        Route("/delete", bind(actions.delete, page), methods=["POST"]),
        Route("/api/state", bind(actions.api_state, page)),
        Route("/api/grant", bind(actions.api_grant, page), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(GuardMiddleware, origins=settings.origins(),
                             static_prefix="/static/")]
    return Starlette(routes=routes, middleware=middleware)
