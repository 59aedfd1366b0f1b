"""Each command is contained on its own, and the daemon supervises the downlink: an unexpected
exception while checking a command rejects it (``internal_error``), while applying one answers
``error``, and one that ends the downlink restarts it with backoff; only configuration and
storage failures stop the daemon. Over a real mosquitto, with the daemon's own state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import agent.daemon.downlink
from agent.config.model import load_config
from agent.daemon.actions import Actions
from agent.daemon.daemon import Daemon
from agent.errors import OutboxError
from tests.integration.downlink_helpers import gateway, wait_for

pytestmark = pytest.mark.mosquitto


async def test_an_unexpected_error_while_checking_a_command_rejects_only_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    real = agent.daemon.downlink.verify_command

    def verify(payload: bytes, **kwargs: Any) -> Any:
        if payload == b"boom":
            raise RuntimeError("a parser bug quoting the input: secret-serial-123")
        return real(payload, **kwargs)

    monkeypatch.setattr(agent.daemon.downlink, "verify_command", verify)
    async with gateway(tmp_path) as gw:
        await gw.publish(b"boom")
        await wait_for(lambda: gw.rejected("internal_error") == 1, "the contained failure")
        assert (await gw.send("diagnostics"))["status"] == "done"
    assert "command rejected (internal_error): unexpected RuntimeError at tests." in caplog.text
    assert "secret-serial-123" not in caplog.text


async def test_an_unexpected_error_while_applying_a_command_is_answered_as_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Actions, command: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(Actions, "_stop_third_party", broken)
    async with gateway(tmp_path) as gw:
        result = await gw.send("stop_third_party", {"reference": "SR-3"})
        assert (result["status"], result["reason"]) == ("error", "internal error (KeyError)")
        assert (await gw.send("diagnostics"))["status"] == "done"


async def test_the_daemon_restarts_a_failed_downlink_and_stops_on_storage_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []

    async with gateway(tmp_path) as gw:
        await gw.stop_downlink()
        daemon = Daemon(load_config(gw.files.config))

        async def flaky(state: Any, stop: asyncio.Event, **kwargs: Any) -> None:
            runs.append("run")
            if len(runs) == 1:
                raise RuntimeError("the downlink broke")
            if len(runs) == 2:
                daemon.stop.set()
                return
            raise AssertionError("not restarted after stop")

        monkeypatch.setattr(agent.daemon.downlink, "run_downlink", flaky)
        await asyncio.wait_for(daemon._supervised_downlink(gw.state), 30)
        assert runs == ["run", "run"]

        async def storage_failure(state: Any, stop: asyncio.Event, **kwargs: Any) -> None:
            raise OutboxError("disk full")

        monkeypatch.setattr(agent.daemon.downlink, "run_downlink", storage_failure)
        daemon.stop.clear()
        with pytest.raises(OutboxError):
            await asyncio.wait_for(daemon._supervised_downlink(gw.state), 30)
