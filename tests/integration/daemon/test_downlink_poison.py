"""Hostile JSON on the command path and at the receiver, over a real mosquitto: a command nested
2,000 deep (about 4 KB, signed or not) used to raise RecursionError inside the downlink and stop
`hems-agent run` (exit 1); published with retain it did so at every restart. Now it is refused
as ``malformed``, counted, logged once, and the commands after it are applied. The same for a
header nested 2,000 deep sent to hems-receiver by a gateway login on its own topic."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import struct
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore, load_device_registry
from agent.uplink.session import BrokerConfig, connect, tls_context
from agent.wire import commands, keys
from agent.wire.commands import new_command
from agent.wire.keys import load_device_key
from agent.wire.topics import control_topic
from tests.integration.downlink_helpers import (
    OPERATOR_PASSWORD,
    SITE,
    gateway,
    operator_keys_toml,
    subscribed,
    users,
    wait_for,
)
from tests.integration.uplink_helpers import PASSWORDS, Fleet, data_topic, wait_until
from tests.integration.uplink_helpers import broker_config as gateway_config
from tests.support.mosquitto import OPERATOR_USER, RECEIVER_USER, Mosquitto
from tests.support.site import make_site

pytestmark = pytest.mark.mosquitto
NESTED = "[" * 2000 + "]" * 2000


def poison(signer: ed25519.Ed25519PrivateKey, *, key_id: str = "ops-a",
           replace: tuple[str, str] = ('"args":{}', '"args":{"x":' + NESTED + "}")) -> bytes:
    """A diagnostics command whose body text is edited after signing would break it: the edit
    is made first, and the result signed as it is."""
    body = new_command(site=SITE, key=key_id, type="diagnostics", args={}, now=time.time())
    text = body.body_bytes().decode().replace(*replace)
    raw = text.encode("ascii")
    signed = struct.pack(">4sBI", commands.MAGIC, commands.VERSION, len(raw)) + raw
    return signed + struct.pack(">H", 64) + signer.sign(signed)


async def test_nested_and_repeated_key_commands_are_dropped_and_later_ones_applied(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with gateway(tmp_path) as gw:
        await gw.publish(poison(gw.key()))
        await wait_for(lambda: gw.rejected("malformed") == 1, "the nested command's rejection")
        await gw.publish(poison(gw.key(), replace=('{"args"', '{"site":"site-x","args"')))
        await wait_for(lambda: gw.rejected("malformed") == 2, "the repeated key's rejection")
        result = await gw.send("suspend", {"purpose": "improvement", "reference": "SR-7"})
        assert result["status"] == "done"
        assert not gw.tasks["downlink"].done()
    assert caplog.text.count("command rejected (malformed)") == 2
    assert "too_deep" in caplog.text and "'site' appears twice" in caplog.text


def _config(broker: Mosquitto, client_id: str, user: str, password: str) -> BrokerConfig:
    return BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=broker.ca,
                        client_id=client_id, username=user, password=password,
                        session_expiry=3600)


async def test_a_retained_nested_command_does_not_stop_the_daemon(tmp_path: Path) -> None:
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
        _config(broker, "receiver-poison", RECEIVER_USER, users()[RECEIVER_USER]), None))
    operator = _config(broker, "operator-poison", OPERATOR_USER, OPERATOR_PASSWORD)
    signer = load_device_key(directory / "ops-a.key")
    async with connect(operator, tls_context(operator)) as client:
        await client.publish(control_topic(SITE), poison(signer), qos=1, retain=True, wait=3)
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run", "--config", str(files.config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"})
    try:
        await subscribed(broker, f"hems-{SITE}-control")
        await subscribed(broker, "receiver-poison")
        command = new_command(site=SITE, key="ops-a", type="diagnostics", args={},
                              now=time.time())
        async with connect(operator, tls_context(operator)) as client:
            await client.publish(control_topic(SITE), commands.encode(command, signer), qos=1,
                                 wait=3)

        def answered() -> bool:
            return any(json.loads(line)["body"].get("command_id") == command.id
                       for line in out.getvalue().splitlines())

        await wait_for(answered, "the daemon's answer after the retained poison")
        assert daemon.returncode is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(daemon.communicate(), 30)
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        receiver.replay.close()
        broker.stop()
    assert daemon.returncode == 0, output.decode()
    assert output.decode().count("command rejected (malformed)") == 1


async def test_hems_receiver_drops_a_nested_header_and_goes_on(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", PASSWORDS)
    broker.start()
    fleet = Fleet()
    (tmp_path / "devices.json").write_text(json.dumps(
        {s: keys.device_public_pem(k.public_key()).decode() for s, k in fleet.devices.items()}),
        encoding="utf-8")
    keys.write_private_file(tmp_path / "company.key", keys.recipient_private_pem(fleet.recipient))
    keys.write_private_file(tmp_path / "receiver.pass", PASSWORDS[RECEIVER_USER].encode())
    out = tmp_path / "out.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cloud.receiver_cli", "--broker", f"mqtts://127.0.0.1:{broker.port}",
        "--ca", str(broker.ca), "--username", RECEIVER_USER, "--password-file",
        str(tmp_path / "receiver.pass"), "--device-keys", str(tmp_path / "devices.json"),
        "--recipient-key", str(tmp_path / "company.key"), "--replay-db",
        str(tmp_path / "seen.db"), "--output", str(out), "--client-id", "rx-poison",
        stderr=asyncio.subprocess.PIPE)
    nested = NESTED.encode()
    hostile = b"HEMS\x01" + struct.pack(">I", len(nested)) + nested
    try:
        await wait_until(lambda: "rx-poison 1 $share/hems/" in broker.log_text(), "subscribed")
        config = gateway_config(broker, "s-0001")
        async with connect(config, tls_context(config)) as client:
            await client.publish(data_topic("s-0001"), hostile, qos=1)
            await client.publish(data_topic("s-0001"), fleet.seal("s-0001", 1), qos=1)
        await wait_until(lambda: out.exists() and out.read_text().count("\n") >= 1, "output")
        assert proc.returncode is None
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            _, err = await proc.communicate()
        broker.stop()
    [line] = [json.loads(text) for text in out.read_text().splitlines()]
    assert line["header"]["seq"] == 1
    assert b"header refused (too_deep)" in err and proc.returncode == 130
    assert b"Traceback" not in err
