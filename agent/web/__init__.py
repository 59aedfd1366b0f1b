"""The household page: see ``docs/household-page.md``.

The daemon needs four names: :class:`HouseholdService`, :class:`WebSettings`, :func:`create_app`
and :func:`serve`.
"""

from agent.web.app import create_app
from agent.web.household import HouseholdService
from agent.web.server import serve
from agent.web.settings import WebSettings

__all__ = ["HouseholdService", "WebSettings", "create_app", "serve"]
