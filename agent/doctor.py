"""``hems-agent doctor``: check a provisioned gateway and say, for each failure, how to fix it.

Checks, in order: the configuration is valid; secrets are private and every key file loads; the
clock is synchronised; each device answers with sane values; the broker is reachable, its TLS
certificate chains to the pinned CA, the credentials are accepted, a publish on the site's own
topic is acknowledged and one on another site's topic is refused; the outbox is healthy; the
consent ledger's hash chain is intact; the systemd watchdog is configured. Exit code 0 only when
none fails. Every network step has a deadline, so an unplugged gateway is diagnosed in seconds.

The uplink test sends one signed ``event`` envelope (purpose ``service``, tier ``events``) to
the site's own topic. Its sequence number is taken from a range the daemon never uses
(:data:`PROBE_SEQ_BASE` plus the time in microseconds), so receivers, which dedupe by
``(site, seq)``, never mistake a later data envelope for a replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import DEFAULT_PATH
from agent.paths import LEDGER_FILE, OUTBOX_FILE
from agent.scan_range import DeviceProbe, probe_devices

if TYPE_CHECKING:
    from agent.config import AgentConfig

# File names in state_dir, as the daemon opens them (agent.state imports the whole pipeline).
LEDGER_NAME = LEDGER_FILE
OUTBOX_NAME = OUTBOX_FILE
PROBE_SEQ_BASE = 1 << 62
UNIT_PATHS = (Path("/etc/systemd/system/hems-agent.service"),
              Path("/lib/systemd/system/hems-agent.service"),
              Path("/usr/lib/systemd/system/hems-agent.service"))
STALE_OUTBOX_S = 24 * 3600
NOT_AUTHORISED = 0x87


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"  # worth knowing, not a failure (e.g. a check turned off in the config)


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One result: what was checked, how it went, in plain words, and the fix for a failure."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def passed(name: str, detail: str) -> Check:
    return Check(name=name, status=Status.PASS, detail=detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, status=Status.FAIL, detail=detail, fix=fix)


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkResult:
    """The broker steps in order; the first failing one ends the test."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.status is not Status.FAIL for c in self.checks)


# -- devices -------------------------------------------------------------------------------


def device_checks(probes: list[DeviceProbe]) -> list[Check]:
    checks = []
    for p in probes:
        name = f"device {p.name}"
        if p.error is not None:
            checks.append(failed(name, f"{p.where}: {p.error}",
                                 "check the device is powered, its cable or Wi-Fi link, and "
                                 "its address, port and unit id (hems-agent scan finds them)"))
        elif p.problems:
            checks.append(failed(name, f"{p.where}: " + "; ".join(p.problems),
                                 "check the device's own display and its register profile"))
        else:
            ident = (p.entry or {}).get("identity", {})
            checks.append(passed(name, f"{p.where}: {ident.get('manufacturer')} "
                                       f"{ident.get('model')}, values plausible"))
    return checks


# -- broker --------------------------------------------------------------------------------


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
    import aiomqtt

    try:
        client = _client(config, host, port, tls, deadline)
        async with asyncio.timeout(deadline * 2):
            await client.__aenter__()
    except aiomqtt.MqttError as exc:
        out.append(failed("broker credentials", f"the broker refused the login: {exc}",
                          "check broker.username and the password file (or the client "
                          "certificate) against what the backend registered for this site"))
        return False
    except (TimeoutError, OSError) as exc:
        out.append(failed("broker credentials", f"no CONNACK: {exc or 'timed out'}",
                          "the broker accepted TLS but did not answer MQTT; check broker.url"))
        return False
    out.append(passed("broker credentials", f"logged in as {config.broker.username or 'cert'}"))
    try:
        return await _publish_steps(config, client, deadline, out)
    finally:
        try:
            async with asyncio.timeout(deadline):
                await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError):
            pass


def _client(config: AgentConfig, host: str, port: int, tls: bool, deadline: float) -> Any:
    import aiomqtt

    from agent.uplink import BrokerConfig, read_password, tls_context

    password = None
    if config.broker.password_file is not None:
        password = read_password(config.broker.password_file)
    context = None
    if tls:
        context = tls_context(BrokerConfig(
            host=host, port=port, ca_file=config.broker.ca_file or Path(),
            client_id="-", client_cert=config.broker.client_cert,
            client_key=config.broker.client_key))
    v5 = config.broker.protocol == "5"
    return aiomqtt.Client(host, port, identifier=f"{config.site_id}-doctor",
                          username=config.broker.username, password=password,
                          protocol=aiomqtt.ProtocolVersion.V5 if v5
                          else aiomqtt.ProtocolVersion.V311,
                          tls_context=context, timeout=deadline)


async def _publish_steps(config: AgentConfig, client: Any, deadline: float,
                         out: list[Check]) -> bool:
    from agent.topics import topic_for

    site = config.site_id.lower()
    codes = _capture_puback_codes(client)
    own = topic_for(site, "service", "event")
    code = await _publish(client, own, probe_envelope(config), deadline, codes)
    if code is None or code >= 0x80:
        reason = "no PUBACK in time" if code is None else f"PUBACK reason code 0x{code:02x}"
        out.append(failed("publish on own topic", f"{own}: {reason}",
                          "the broker's ACL must let this site's user write hems/v1/<site>/#"))
        return False
    out.append(passed("publish on own topic", f"{own}: envelope acknowledged"))
    if config.broker.protocol != "5":
        out.append(Check(name="publish elsewhere refused", status=Status.WARN,
                         detail="MQTT 3.1.1 cannot report a refused publish; not verified"))
        return True
    other = topic_for(f"{site[:40]}-acl-probe", "service", "event")
    code = await _publish(client, other, b"", deadline, codes)
    if code is not None and code >= 0x80:
        out.append(passed("publish elsewhere refused", f"{other}: refused (0x{code:02x})"))
        return True
    out.append(failed("publish elsewhere refused",
                      f"{other}: the broker accepted a publish into another site's topics",
                      "fix the broker's ACL: each site's user may write hems/v1/<its site>/# "
                      "only (mosquitto: pattern write hems/v1/%u/#)"))
    return False


def _capture_puback_codes(client: Any) -> dict[int, int]:
    """aiomqtt drops the PUBACK reason code; keep it (by message id) from paho's callback."""
    codes: dict[int, int] = {}
    paho = client._client
    original = paho.on_publish

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        codes[mid] = int(getattr(reason, "value", 0) or 0)
        codes[-1] = codes[mid]  # the latest: publishes here go one at a time
        original(c, userdata, mid, reason, properties)

    paho.on_publish = on_publish
    return codes


async def _publish(client: Any, topic: str, payload: bytes, deadline: float,
                   codes: dict[int, int]) -> int | None:
    import aiomqtt

    codes.pop(-1, None)
    try:
        await client.publish(topic, payload, qos=1, timeout=deadline)
    except (aiomqtt.MqttError, TimeoutError):
        return None
    return codes.get(-1)


def probe_envelope(config: AgentConfig) -> bytes:
    """A small signed ``event`` envelope to the company's recipient key."""
    from agent import envelope, keys

    device = keys.load_device_key(config.device_key_file)
    target = next((r for r in config.recipients if r.id == "company"), config.recipients[0])
    recipient = keys.load_recipient_public(target.key_file)
    now_us = time.time_ns() // 1000
    header = envelope.Header(
        site=config.site_id.lower(), purpose="service", tier="events", kind="event",
        recipient_key=recipient.key_id, kem=recipient.kem,
        device_key=keys.device_key_id(device.public_key()), catalogue="commissioning",
        consent_id="commissioning", consent_hash="-", seq=PROBE_SEQ_BASE + now_us,
        window_start=None, window_end=None, created=now_us // 1000)
    body = {"events": [{"point": "agent.commissioning", "value": "uplink test"}]}
    return envelope.seal(header, body, recipient=recipient, device_key=device)


# -- local checks --------------------------------------------------------------------------


def config_checks(path: Path) -> tuple[AgentConfig | None, list[Check]]:
    """The configuration, the secrets' modes and every key file."""
    from agent import keys
    from agent.config import check_secret_permissions, load_config
    from agent.errors import AgentError

    try:
        config = load_config(path, check_secrets=False)
    except AgentError as exc:
        return None, [failed("config valid", str(exc),
                             f"edit {path} or re-run hems-agent provision")]
    checks = [passed("config valid", f"{path}: {len(config.devices)} device(s), "
                                     f"{len(config.recipients)} recipient(s)")]
    try:
        check_secret_permissions(config, path)
        keys.load_device_key(config.device_key_file)
        for recipient in config.recipients:
            keys.load_recipient_public(recipient.key_file)
    except AgentError as exc:
        fix = "re-run hems-agent provision (it rewrites missing keys and sets the modes)"
        if "readable by others" in str(exc) or "accessible by group" in str(exc):
            fix = "chmod 600 the file named (and chown it to the service user)"
        return config, [*checks, failed("secrets", str(exc), fix)]
    return config, [*checks, passed("secrets", "private files 0600, every key file loads")]


def clock_check(config: AgentConfig) -> Check:
    from agent.clock import make_sync_check

    if config.clock.sync_check == "none":
        return Check(name="clock", status=Status.WARN,
                     detail="not checked (clock.sync_check = none)")
    if make_sync_check(config.clock.sync_check)():
        return passed("clock", "synchronised")
    return failed("clock", "the system clock is not synchronised (readings would wait)",
                  "enable time sync: systemctl enable --now systemd-timesyncd; let NTP "
                  "(UDP 123) out; then wait a minute and run doctor again")


def outbox_check(config: AgentConfig) -> Check:
    from agent.errors import OutboxError
    from agent.outbox import Outbox

    path = config.state_dir / OUTBOX_NAME
    if not path.exists():
        return passed("outbox", "empty (the daemon has not queued anything yet)")
    try:
        outbox = Outbox(path)
        stats = outbox.stats()
        outbox.close()
    except OutboxError as exc:
        return failed("outbox", str(exc), f"stop the agent, move {path} aside, start it again")
    detail = (f"{stats.depth} queued, {stats.bytes} bytes, oldest "
              f"{'-' if stats.oldest_age is None else f'{stats.oldest_age:.0f} s'}, "
              f"drops {dict(stats.drops) or 0}")
    if stats.bytes > 0.9 * config.outbox.max_bytes:
        return failed("outbox", detail + ": nearly full", "get the uplink working (see above)")
    if stats.oldest_age is not None and stats.oldest_age > STALE_OUTBOX_S:
        return failed("outbox", detail + ": nothing has left for a day",
                      "get the uplink working (see above); the backlog then drains by itself")
    return passed("outbox", detail)


def ledger_check(config: AgentConfig) -> Check:
    """Verify the hash chain and the device's signatures read-only (opening a Ledger could
    write a catalogue update the daemon must deliver)."""
    from agent.errors import AgentError
    from policy.errors import PolicyError

    path = config.state_dir / LEDGER_NAME
    fix = "do not edit the ledger; restore it from the last backup and tell the support centre"
    try:
        count = verify_ledger(path, config.device_key_file)
    except FileNotFoundError:
        return failed("consent ledger", f"{path} is missing",
                      "run hems-agent provision: it writes the factory consent defaults")
    except (OSError, ValueError, AttributeError, AgentError) as exc:
        return failed("consent ledger", f"{path}: unreadable: {exc}", fix)
    except PolicyError as exc:
        return failed("consent ledger", str(exc), fix)
    return passed("consent ledger", f"{count} records, hash chain and signatures intact")


def verify_ledger(path: Path, device_key_file: Path) -> int:
    """Check a ledger file's chain, head and signatures (by the device key, current or retired:
    see :func:`agent.keys.device_history_verifier`); its record count."""
    from agent import keys
    from policy.chain import check_chain, check_meta

    current = keys.load_device_key(device_key_file).public_key()
    verify = keys.device_history_verifier(current, keys.retired_device_keys(path.parent))
    raw = json.loads(path.read_text(encoding="utf-8"))
    docs = sorted((int(k), v) for k, v in raw.get("records", {}).items())
    metas = list(raw.get("meta", {}).values())
    check_chain(docs, str(path), verify)
    check_meta(metas[0] if metas else None, docs, str(path), verify)
    return len(docs)


def ed25519_verifier(public: Any) -> Callable[[bytes, bytes], bool]:
    """``verify(message, signature)`` for the ledger's checks."""
    from cryptography.exceptions import InvalidSignature

    def verify(message: bytes, signature: bytes) -> bool:
        try:
            public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return verify


def watchdog_check(unit_file: Path | None) -> Check:
    candidates = [unit_file] if unit_file is not None else list(UNIT_PATHS)
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        return failed("watchdog", "the hems-agent systemd unit is not installed",
                      "install -m 0644 systemd/hems-agent.service /etc/systemd/system/ && "
                      "systemctl daemon-reload")
    text = found.read_text(encoding="utf-8")
    lines = {line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip()
             for line in text.splitlines() if "=" in line and not line.startswith("#")}
    if lines.get("Type") != "notify" or lines.get("WatchdogSec", "0") in ("0", ""):
        return failed("watchdog", f"{found}: needs Type=notify and WatchdogSec=",
                      "reinstall the unit file shipped with the agent")
    return passed("watchdog", f"{found}: WatchdogSec={lines['WatchdogSec']}")


async def run_checks(path: Path, *, unit_file: Path | None = None,
                     deadline: float = 3.0) -> list[Check]:
    """Every check, in order; the network ones run concurrently, each with its deadline."""
    config, checks = config_checks(path)
    if config is None:
        return checks
    checks.append(clock_check(config))
    secrets_ok = checks[-2].status is Status.PASS
    probes, uplink = await asyncio.gather(
        probe_devices(config),
        uplink_test(config, deadline=deadline) if secrets_ok else _no_uplink())
    checks += device_checks(probes)
    checks += uplink.checks
    checks += [outbox_check(config), ledger_check(config), watchdog_check(unit_file)]
    return checks


async def _no_uplink() -> UplinkResult:
    return UplinkResult(checks=[failed("broker", "not tested: the secrets above are not usable",
                                       "fix the secrets first")])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH,
                        help=f"configuration file (default {DEFAULT_PATH})")
    parser.add_argument("--unit-file", type=Path, help="the systemd unit to check")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds allowed per network step (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def main(args: argparse.Namespace) -> int:
    checks = asyncio.run(run_checks(args.config, unit_file=args.unit_file,
                                    deadline=args.timeout))
    ok = all(c.status is not Status.FAIL for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]},
                         ensure_ascii=False, indent=2))
    else:
        for c in checks:
            print(f"{c.status.upper():<4}  {c.name}: {c.detail}")
            if c.fix:
                print(f"      fix: {c.fix}")
        failures = sum(c.status is Status.FAIL for c in checks)
        print("all checks passed" if ok else f"{failures} check(s) failed")
    return 0 if ok else 1
