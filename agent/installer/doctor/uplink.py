"""``hems-agent doctor``'s broker checks, also the commissioning report's uplink test.

Reach the broker, check its TLS certificate chains to the pinned CA, log in, publish on the
site's own topic (acknowledged) and on another site's (refused). Every step has a deadline.

The test sends one signed ``event`` envelope (purpose ``service``, tier ``events``) to the
site's own topic. Its sequence number is taken from a range the daemon never uses
(:data:`PROBE_SEQ_BASE` plus the time in microseconds), so receivers, which dedupe by
``(site, seq)``, never mistake a later data envelope for a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.host.check import Check, Status, failed, passed

if TYPE_CHECKING:
    import ssl

    from agent.config.model import AgentConfig
    from agent.uplink.session import BrokerConfig, Session

PROBE_SEQ_BASE = 1 << 62


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkResult:
    """The broker steps in order; the first failing one ends the test."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.status is not Status.FAIL for c in self.checks)


async def uplink_test(config: AgentConfig, *, deadline: float = 3.0) -> UplinkResult:
    """Reach the broker, check TLS and credentials, publish on the site's own topic and try
    another site's. Never raises for a network problem: it is reported as a failed step."""
    from urllib.parse import urlsplit

    result = UplinkResult()
    url = urlsplit(config.broker.url)
    host, tls = url.hostname or "", url.scheme == "mqtts"
    port = url.port or (8883 if tls else 1883)
    steps = (_tcp_step, _tls_step, _mqtt_steps)
    for step in steps:
        if not await step(config, host, port, tls, deadline, result.checks):
            break
    return result


async def _tcp_step(config: AgentConfig, host: str, port: int, tls: bool, deadline: float,
                    out: list[Check]) -> bool:
    try:
        async with asyncio.timeout(deadline):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
    except (OSError, TimeoutError) as exc:
        out.append(failed("broker reachable", f"{host}:{port}: {exc or 'no answer in time'}",
                          "check the gateway's internet link, the broker address in "
                          "broker.url and that the firewall lets the port through"))
        return False
    out.append(passed("broker reachable", f"{host}:{port} accepts connections"))
    return True


async def _tls_step(config: AgentConfig, host: str, port: int, tls: bool, deadline: float,
                    out: list[Check]) -> bool:
    import ssl

    try:
        context = ssl.create_default_context(cafile=str(config.broker.ca_file))
        async with asyncio.timeout(deadline):
            _, writer = await asyncio.open_connection(host, port, ssl=context,
                                                      server_hostname=host)
        writer.close()
    except ssl.SSLCertVerificationError as exc:
        out.append(failed("broker TLS", f"the broker's certificate is not trusted: "
                          f"{exc.verify_message}",
                          f"broker.ca_file ({config.broker.ca_file}) must be the CA that signed "
                          "the broker's certificate, and broker.url must use the name in it; "
                          "re-run provision with --broker-ca"))
        return False
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        out.append(failed("broker TLS", f"TLS handshake failed: {exc or 'timed out'}",
                          "check the port is the broker's TLS port (usually 8883)"))
        return False
    out.append(passed("broker TLS", "certificate chains to the pinned CA, name matches"))
    return True


async def _mqtt_steps(config: AgentConfig, host: str, port: int, tls: bool, deadline: float,
                      out: list[Check]) -> bool:
    from agent.errors import UplinkError
    from agent.uplink.session import ConnectRefused, connect

    broker, context = _broker(config, host, port, tls, deadline)
    async with contextlib.AsyncExitStack() as stack:
        try:
            session = await stack.enter_async_context(connect(broker, context))
        except ConnectRefused as exc:
            out.append(failed("broker credentials", str(exc),
                              "check broker.username and the password file (or the client "
                              "certificate) against what the backend registered for this "
                              "site"))
            return False
        except UplinkError as exc:
            out.append(failed("broker credentials", f"no CONNACK: {exc}",
                              "the broker accepted TLS but did not answer MQTT; check "
                              "broker.url"))
            return False
        out.append(passed("broker credentials",
                          f"logged in as {config.broker.username or 'cert'}"))
        return await _publish_steps(config, session, deadline, out)


def _broker(config: AgentConfig, host: str, port: int, tls: bool,
            deadline: float) -> tuple[BrokerConfig, ssl.SSLContext | None]:
    """A one-shot, clean session as ``<site>-doctor``, TLS unless the URL says otherwise."""
    from agent.uplink.session import BrokerConfig, read_password, tls_context

    password = None
    if config.broker.password_file is not None:
        password = read_password(config.broker.password_file)
    broker = BrokerConfig(
        host=host, port=port, ca_file=config.broker.ca_file or Path(),
        client_id=f"{config.site_id}-doctor", username=config.broker.username,
        password=password, client_cert=config.broker.client_cert,
        client_key=config.broker.client_key,
        protocol="5" if config.broker.protocol == "5" else "3.1.1", timeout=deadline,
        persistent=False)
    return broker, tls_context(broker) if tls else None


async def _publish_steps(config: AgentConfig, session: Session, deadline: float,
                         out: list[Check]) -> bool:
    from agent.uplink.acks import publish_code
    from agent.wire.topics import topic_for

    site = config.site_id.lower()
    own = topic_for(site, "service", "event")
    answer = await publish_code(session, own, probe_envelope(config), deadline)
    if answer is None or answer[0] >= 0x80:
        reason = ("no PUBACK in time" if answer is None
                  else f"PUBACK reason code {reason_text(*answer)}")
        out.append(failed("publish on own topic", f"{own}: {reason}",
                          "the broker's ACL must let this site's user write hems/v1/<site>/#"))
        return False
    out.append(passed("publish on own topic", f"{own}: envelope acknowledged"))
    if config.broker.protocol != "5":
        out.append(Check(name="publish elsewhere refused", status=Status.WARN,
                         detail="MQTT 3.1.1 cannot report a refused publish; not verified"))
        return True
    other = topic_for(f"{site[:40]}-acl-probe", "service", "event")
    answer = await publish_code(session, other, b"", deadline)
    if answer is not None and answer[0] >= 0x80:
        out.append(passed("publish elsewhere refused",
                          f"{other}: refused ({reason_text(*answer)})"))
        return True
    out.append(failed("publish elsewhere refused",
                      f"{other}: the broker accepted a publish into another site's topics",
                      "fix the broker's ACL: each site's user may write hems/v1/<its site>/# "
                      "only (mosquitto: pattern write hems/v1/%u/#)"))
    return False


def reason_text(code: int, name: str = "") -> str:
    """An MQTT v5 reason code with its name, e.g. ``0x87 Not authorized``."""
    if not name:
        from agent.uplink.session import reason_name

        name = reason_name(code)
    return f"0x{code:02x} {name}"


def probe_envelope(config: AgentConfig) -> bytes:
    """A small signed ``event`` envelope to the company's recipient key."""
    from agent.wire import envelope, keys

    device = keys.load_device_key(config.device_key_file)
    target = next((r for r in config.recipients if r.id == "company"), config.recipients[0])
    recipient = keys.load_recipient_public(target.key_file)
    now_us = time.time_ns() // 1000
    header = envelope.Header(
        site=config.site_id.lower(), purpose="service", tier="events", kind="event",
        recipient_key=recipient.key_id, kem=recipient.kem,
        device_key=keys.device_key_id(device.public_key()), catalogue="commissioning",
        consent_id="commissioning", consent_hash="0" * 64, seq=PROBE_SEQ_BASE + now_us,
        window_start=None, window_end=None, created=now_us // 1000)
    body = {"type": "uplink_test",
            "events": [{"point": "agent.commissioning", "value": "uplink test"}]}
    return envelope.seal(header, body, recipient=recipient, device_key=device)
