"""The demo's embedded MQTT broker: amqtt in this event loop, TLS on a free loopback port.

amqtt speaks MQTT 3.1.1 only (no v5), so the demo's agent and receiver connect with protocol
3.1.1; a real deployment uses a v5 broker (see docs/broker.md). Like the production broker it
requires TLS and a login, and applies the same rule as the fleet's ACL: a gateway (username =
site id) may publish only below ``hems/v1/<site>/``, the receiver may subscribe to
``hems/v1/#``. Passwords are compared as SHA-256 digests held in memory.

amqtt is an optional dependency (the ``demo`` extra): a gateway's runtime never carries a broker.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from agent.demo.setup import BrokerEndpoint, BrokerLogin, free_port, make_tls, new_login
from agent.errors import AgentError
from agent.wire.topics import PREFIX

log = logging.getLogger(__name__)


class DemoBrokerError(AgentError):
    """The embedded broker could not start."""


def digest(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


class PasswordAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """Accepts a client only with a known username and its password; nobody anonymous."""

    @dataclass
    class Config:
        users: dict[str, str] = field(default_factory=dict)
        """username -> SHA-256 hex digest of the password."""

    async def authenticate(self, *, session: Session) -> bool:
        users: dict[str, str] = self.context.config.users
        expected = users.get(session.username or "")
        given = digest(session.password or "")
        return expected is not None and hmac.compare_digest(expected, given)


class FleetTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt is untyped
    """The fleet's topic rule: a gateway writes below its own site, the receiver reads all."""

    @dataclass
    class Config:
        receiver: str = "receiver"

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        user = session.username if session is not None else None
        if user is None or topic is None:
            return False
        if action == Action.PUBLISH:
            return topic.startswith(f"{PREFIX}/{user}/")
        if action == Action.SUBSCRIBE:
            return user == self.context.config.receiver and topic.startswith(f"{PREFIX}/")
        return True  # delivery: only what a subscription above let through


def broker_config(port: int, cert: Path, key: Path,
                  logins: Mapping[str, BrokerLogin]) -> dict[str, object]:
    """amqtt's configuration: one TLS listener, password logins, the fleet's topic rule."""
    agent, receiver = logins["agent"], logins["receiver"]
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "ssl": True,
                                  "certfile": str(cert), "keyfile": str(key)}},
        "plugins": {
            f"{__name__}.PasswordAuthPlugin": {"users": {
                login.username: digest(login.password()) for login in (agent, receiver)}},
            f"{__name__}.FleetTopicPlugin": {"receiver": receiver.username},
        },
    }


@contextlib.asynccontextmanager
async def embedded_broker(directory: Path, *, site_id: str,
                          receiver_user: str) -> AsyncIterator[BrokerEndpoint]:
    """Run amqtt until the block ends; yields how the agent and the receiver reach it."""
    tls = make_tls(directory)
    logins = {"agent": new_login(directory, site_id),
              "receiver": new_login(directory, receiver_user)}
    port = free_port()
    # amqtt reports every connection at INFO and a dropped socket at WARNING: the demo's
    # screen is the live view, so only its errors are shown.
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    broker = Broker(broker_config(port, tls.cert, tls.key, logins))
    try:
        await broker.start()
    except BrokerError as exc:
        raise DemoBrokerError(f"the embedded MQTT broker did not start: {exc}") from exc
    try:
        yield BrokerEndpoint(url=f"mqtts://127.0.0.1:{port}", ca_file=tls.ca,
                             agent=logins["agent"], receiver=logins["receiver"],
                             protocol="3.1.1")
    finally:
        await broker.shutdown()
