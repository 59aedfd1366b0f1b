"""A gateway's downlink on real parts: mosquitto, the open state, the page, a receiver.

The gateway side is the daemon's own state (``open_state``) with the uplink publisher and
``run_downlink`` running in the test's event loop; the backend side is an operator connection
that publishes commands and the reference receiver that opens the signed results.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.cloud.operator_cli import keygen
from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore, load_device_registry
from agent.config.model import load_config
from agent.daemon.downlink import DownlinkSettings, run_downlink
from agent.daemon.state import State, open_state
from agent.host.metrics import Metrics
from agent.uplink.session import BrokerConfig, Session, connect, tls_context
from agent.web.app import create_app
from agent.web.household import HouseholdService
from agent.web.security import PairingHash
from agent.web.settings import WebSettings
from agent.wire.commands import encode, new_command
from agent.wire.keys import load_device_key
from agent.wire.topics import control_topic
from tests.integration.web.test_web_security import _PAIRING, HOST, PORT
from tests.support.mosquitto import OPERATOR_USER, RECEIVER_USER, Mosquitto
from tests.support.site import SiteFiles, broker_users, make_site

SITE = "site-dl-1"
OPERATOR_PASSWORD = "pw-operator"
KEY_IDS = ("ops-a", "ops-b")


def users() -> dict[str, str]:
    return {**broker_users(SITE), OPERATOR_USER: OPERATOR_PASSWORD}


def operator_keys_toml(directory: Path) -> str:
    """Two pinned operator keys (rotation), written with ``hems-operator keygen``."""
    lines = []
    for key_id in KEY_IDS:
        keygen(directory / f"{key_id}.key", directory / f"{key_id}.pub")
        lines += ["[[operator_keys]]", f'id = "{key_id}"',
                  f'key_file = "{directory / key_id}.pub"', ""]
    return "\n".join(lines)


@dataclass
class Gateway:
    """One running downlink and what the backend sees of it."""

    files: SiteFiles
    broker: Mosquitto
    state: State
    household: HouseholdService
    out: io.StringIO
    operator: Session
    settings: DownlinkSettings
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def key(self, key_id: str = "ops-a") -> ed25519.Ed25519PrivateKey:
        return load_device_key(self.files.directory / f"{key_id}.key")

    def sign(self, ctype: str, args: dict[str, Any] | None = None, *, key_id: str = "ops-a",
             signer: ed25519.Ed25519PrivateKey | None = None, site: str = SITE,
             now: float | None = None, ttl: int = 600) -> tuple[str, bytes]:
        command = new_command(site=site, key=key_id, type=ctype, args=args or {},
                              now=time.time() if now is None else now, ttl=ttl)
        return command.id, encode(command, signer or self.key(key_id))

    async def publish(self, payload: bytes) -> None:
        await self.operator.publish(control_topic(SITE), payload, qos=1, wait=3)

    async def send(self, ctype: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sign, send and wait for the gateway's result."""
        command_id, payload = self.sign(ctype, args)
        await self.publish(payload)
        return await self.result(command_id)

    def envelopes(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def results(self) -> list[dict[str, Any]]:
        return [e["body"] for e in self.envelopes()
                if e["header"]["kind"] == "event" and e["body"].get("type") == "command_result"]

    async def result(self, command_id: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            found[:] = [r for r in self.results() if r["command_id"] == command_id]
            return bool(found)

        await wait_for(arrived, f"the result of command {command_id}")
        return found[0]

    def rejected(self, reason: str) -> float:
        return self.state.pipeline.metrics.get("hems_commands_rejected_total", reason=reason)

    def start_downlink(self) -> None:
        self.stop = asyncio.Event()
        self.tasks["downlink"] = asyncio.create_task(
            run_downlink(self.state, self.stop, settings=self.settings))

    async def stop_downlink(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.tasks.pop("downlink"), 10)

    def page(self) -> Any:
        settings = WebSettings(pairing=PairingHash.parse(_PAIRING), allowed_hosts=frozenset({HOST}),
                               port=PORT)
        return create_app(self.household, settings)


async def wait_for(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _client_config(broker: Mosquitto, client_id: str, user: str, password: str,
                   expiry: int = 0) -> BrokerConfig:
    return BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=broker.ca,
                        client_id=client_id, username=user, password=password,
                        session_expiry=expiry)


async def subscribed(broker: Mosquitto, client_id: str) -> None:
    """Wait until mosquitto has acknowledged a subscription of ``client_id``."""
    await wait_for(lambda: f"Sending SUBACK to {client_id}" in broker.log_text(),
                   f"{client_id} to subscribe")


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, settings: DownlinkSettings | None = None
                  ) -> AsyncIterator[Gateway]:
    broker = Mosquitto(tmp_path / "broker", users())
    broker.start()
    directory = tmp_path / "gw"
    directory.mkdir()
    files = make_site(directory, broker, site_id=SITE, devices=[],
                      extra=operator_keys_toml(directory))
    state = open_state(load_config(files.config), Metrics(), now=datetime.now(UTC))
    household = HouseholdService(
        ledger=state.ledger, release_log=state.release_log, outbox=state.outbox,
        apply_consent=state.pipeline.apply_changes,
        on_deletion=state.pipeline.queue_deletion, minimiser=state.minimiser,
        state_dir=state.config.state_dir)
    state.household = household
    out = io.StringIO()
    receiver = Receiver(device_keys=load_device_registry(files.device_registry),
                        recipient_keys={k.key_id: k for k in files.recipient_keys.values()},
                        rules=CatalogueRules(), replay=ReplayStore(tmp_path / "seen.db"),
                        output=out)
    receiver_config = _client_config(broker, "receiver-dl", RECEIVER_USER,
                                     users()[RECEIVER_USER], expiry=3600)
    operator_config = _client_config(broker, "operator-dl", OPERATOR_USER, OPERATOR_PASSWORD)
    tasks = {"uplink": asyncio.create_task(state.publisher.run()),
             "receiver": asyncio.create_task(receiver.run(receiver_config, None))}
    gw: Gateway | None = None
    try:
        async with connect(operator_config, tls_context(operator_config)) as operator:
            gw = Gateway(files=files, broker=broker, state=state, household=household, out=out,
                         operator=operator, settings=settings or DownlinkSettings(),
                         tasks=tasks)
            gw.start_downlink()
            await subscribed(broker, f"hems-{SITE}-control")
            await subscribed(broker, "receiver-dl")
            yield gw
    finally:
        if gw is not None:
            gw.stop.set()
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        (gw.state if gw is not None else state).close()
        receiver.replay.close()
        broker.stop()
