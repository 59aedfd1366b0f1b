"""What the downlink refuses, over a real mosquitto: each rejection reason, bursts, replays;
the persistent session; and ``hems-operator`` signing and sending."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.cloud.operator_cli import main as operator_main
from agent.daemon.downlink import DownlinkSettings
from agent.wire.commands import CommandType, parse
from tests.integration.downlink_helpers import (
    OPERATOR_PASSWORD,
    SITE,
    Gateway,
    gateway,
    wait_for,
)
from tests.support.mosquitto import OPERATOR_USER

pytestmark = pytest.mark.mosquitto


async def expect_rejected(gw: Gateway, payload: bytes, reason: str) -> None:
    before = gw.rejected(reason)
    await gw.publish(payload)
    await wait_for(lambda: gw.rejected(reason) == before + 1, f"a {reason} rejection")


async def test_each_rejection_is_counted_logged_and_unanswered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with gateway(tmp_path) as gw:
        stranger = ed25519.Ed25519PrivateKey.generate()
        cases = {
            "bad_signature": gw.sign("diagnostics", signer=stranger)[1],
            "wrong_site": gw.sign("diagnostics", site="site-other")[1],
            "expired": gw.sign("diagnostics", now=time.time() - 7200, ttl=600)[1],
            "unknown_key": gw.sign("diagnostics", key_id="ops-z", signer=stranger)[1],
            "malformed": b"HEMC\x01\x00\x00\x00\x02{}\x00\x40" + bytes(64),
            "oversized": b"HEMC" + bytes(300 * 1024),
        }
        for reason, payload in cases.items():
            await expect_rejected(gw, payload, reason)
        command_id, payload = gw.sign("diagnostics")
        await gw.publish(payload)
        await gw.result(command_id)
        await expect_rejected(gw, payload, "replayed")
        # the rotated-in second key works as well as the first
        other_id, other = gw.sign("diagnostics", key_id="ops-b")
        await gw.publish(other)
        await gw.result(other_id)
        assert [r["command_id"] for r in gw.results()] == [command_id, other_id]
    logged = caplog.text
    for reason in [*cases, "replayed"]:
        assert f"command rejected ({reason})" in logged


async def test_a_burst_is_refused_without_stopping_uploads(tmp_path: Path) -> None:
    settings = DownlinkSettings(burst=3, refill_per_second=1e-6)
    async with gateway(tmp_path, settings) as gw:
        ticks = 0

        async def heartbeat() -> None:  # stands in for the pollers sharing the loop
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(heartbeat())
        signed = [gw.sign("diagnostics") for _ in range(10)]
        for _, payload in signed:
            await gw.publish(payload)
        await wait_for(lambda: gw.rejected("rate_limited") == 7, "seven rate-limited commands")
        await wait_for(lambda: len(gw.results()) == 3, "the three accepted commands' results")
        before = ticks
        await wait_for(lambda: ticks > before, "the event loop to keep running")
        beat.cancel()
        assert gw.state.publisher.published >= 3  # the uplink kept publishing
        assert {r["command_id"] for r in gw.results()} == {i for i, _ in signed[:3]}


async def test_commands_sent_while_offline_arrive_through_the_persistent_session(
        tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        await gw.send("diagnostics")  # the session exists
        await gw.stop_downlink()
        command_id, payload = gw.sign("suspend", {"purpose": "proposals", "reference": "SR-9"})
        await gw.publish(payload)
        gw.start_downlink()
        result = await gw.result(command_id)
        assert result["status"] == "done"


def _cli(gw: Gateway, action: str, *rest: str) -> list[str]:
    directory = gw.files.directory
    common = ["--key", str(directory / "ops-a.key"), "--key-id", "ops-a", "--site", SITE]
    if action == "send":
        password = directory / "operator.pass"
        password.write_text(OPERATOR_PASSWORD, encoding="utf-8")
        common += ["--broker", f"mqtts://127.0.0.1:{gw.broker.port}", "--ca",
                   str(gw.broker.ca), "--username", OPERATOR_USER, "--password-file",
                   str(password)]
    return [action, *common, *rest]


async def test_the_operator_cli_signs_every_type_and_sends(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        catalogue = tmp_path / "catalogue.json"
        catalogue.write_bytes(gw.state.catalogue.canonical_json())
        per_type = {
            "catalogue-update": ["--file", str(catalogue)],
            "suspend": ["--purpose", "all", "--reference", "SR-1"],
            "stop-third-party": ["--reference", "SR-1"], "export": ["--reference", "SR-1"],
            "delete": ["--reference", "SR-1"], "diagnostics": [],
            "grant-request": ["--purpose", "support", "--recipient", "support_centre",
                              "--tier", "raw", "--hours", "24", "--reference", "SR-1"],
        }
        seen = set()
        for name, args in per_type.items():
            out = tmp_path / f"{name}.bin"
            assert operator_main(_cli(gw, "sign", "--out", str(out), name, *args)) == 0
            seen.add(parse(out.read_bytes()).command.type)
        assert seen == set(CommandType)
        sent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.cloud.operator_cli", *_cli(gw, "send"), "suspend",
            "--purpose", "proposals", "--reference", "SR-2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(sent.communicate(), 30)
        assert sent.returncode == 0, stderr.decode()
        command_id = stdout.decode().split()[1]
        result = await gw.result(command_id)
        assert result["command_type"] == "suspend" and result["status"] == "done"


def test_keygen_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    assert operator_main(["keygen", str(private), str(public)]) == 0
    assert private.stat().st_mode & 0o077 == 0
    assert operator_main(["keygen", str(private), str(public)]) == 2
