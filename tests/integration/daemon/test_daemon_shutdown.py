"""The daemon's shutdown deadline: a task stuck in its cleanup is reported by name when
``shutdown_timeout`` passes, and the steps after it still run (the MQTT session is closed while
that task still hangs). The real daemon, over a real mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.config.model import load_config
from agent.daemon.daemon import Daemon, DaemonOptions
from agent.daemon.state import State
from tests.integration.downlink_helpers import wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.site import broker_users, make_site

pytestmark = pytest.mark.mosquitto
SITE = "site-stop-1"


async def test_a_task_stuck_in_its_cleanup_is_reported_and_the_session_still_closes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    cancelled, release = asyncio.Event(), asyncio.Event()
    states: list[State] = []

    async def stuck_cleanup(state: State, stop: asyncio.Event) -> None:
        states.append(state)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            await release.wait()  # a cleanup that hangs past the deadline

    with Mosquitto(tmp_path / "broker", broker_users(SITE)) as broker:
        files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=[])
        daemon = Daemon(load_config(files.config),
                        DaemonOptions(shutdown_timeout=1.0, extra_tasks=[stuck_cleanup]))
        run = asyncio.create_task(daemon.run())
        await wait_for(lambda: bool(states) and states[0].publisher.connected.is_set(),
                       "the uplink to connect")
        daemon.stop.set()
        await wait_for(lambda: "did not stop in time: stuck_cleanup" in caplog.text,
                       "the late task to be reported")
        await wait_for(lambda: f"Client hems-{SITE} disconnected" in broker.log_text(),
                       "the uplink to close its session")
        assert cancelled.is_set() and not release.is_set() and not run.done()
        release.set()
        assert await asyncio.wait_for(run, 30) == 0
