"""The daemon runs the downlink when operator keys are pinned: `hems-agent run` (a subprocess)
answers a signed command through a real mosquitto, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore, load_device_registry
from agent.uplink.session import BrokerConfig, connect, tls_context
from agent.wire.commands import encode, new_command
from agent.wire.keys import load_device_key
from agent.wire.topics import control_topic
from tests.integration.downlink_helpers import (
    OPERATOR_PASSWORD,
    SITE,
    operator_keys_toml,
    subscribed,
    users,
    wait_for,
)
from tests.support.mosquitto import OPERATOR_USER, RECEIVER_USER, Mosquitto
from tests.support.site import make_site

pytestmark = pytest.mark.mosquitto


def _config(broker: Mosquitto, client_id: str, user: str, password: str) -> BrokerConfig:
    return BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=broker.ca,
                        client_id=client_id, username=user, password=password,
                        session_expiry=3600)


async def test_the_daemon_answers_a_signed_command(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", users())
    broker.start()
    directory = tmp_path / "gw"
    directory.mkdir()
    files = make_site(directory, broker, site_id=SITE, devices=[],
                      extra=operator_keys_toml(directory))
    out = io.StringIO()
    receiver = Receiver(device_keys=load_device_registry(files.device_registry),
                        recipient_keys={k.key_id: k for k in files.recipient_keys.values()},
                        rules=CatalogueRules(), replay=ReplayStore(tmp_path / "seen.db"),
                        output=out)
    listening = asyncio.create_task(receiver.run(
        _config(broker, "receiver-daemon", RECEIVER_USER, users()[RECEIVER_USER]), None))
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run", "--config", str(files.config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"})
    try:
        await subscribed(broker, f"hems-{SITE}-control")
        await subscribed(broker, "receiver-daemon")
        command = new_command(site=SITE, key="ops-b", type="suspend",
                              args={"purpose": "improvement", "reference": "SR-42"},
                              now=time.time())
        operator = _config(broker, "operator-daemon", OPERATOR_USER, OPERATOR_PASSWORD)
        async with connect(operator, tls_context(operator)) as client:
            await client.publish(control_topic(SITE),
                                 encode(command, load_device_key(directory / "ops-b.key")),
                                 qos=1, wait=3)

        def answered() -> bool:
            return any(json.loads(line)["body"].get("command_id") == command.id
                       for line in out.getvalue().splitlines())

        await wait_for(answered, "the daemon's answer")
    finally:
        daemon.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(daemon.communicate(), 30)
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        receiver.replay.close()
        broker.stop()
    assert daemon.returncode == 0, output.decode()
    [result] = [json.loads(line)["body"] for line in out.getvalue().splitlines()
                if json.loads(line)["body"].get("command_id") == command.id]
    assert (result["status"], result["result"]["off"]) == ("done", [["improvement", "company"]])
    assert "command rejected" not in output.decode()
