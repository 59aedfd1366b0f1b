"""The household page's exceptions (subclasses of the agent's root error)."""

from __future__ import annotations

from agent.errors import AgentError


class WebError(AgentError):
    """The household page cannot start (bad pairing hash file, port in use, TLS files): stop."""
