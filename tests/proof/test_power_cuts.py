"""Power cuts: SIGKILL the daemon 200+ times at seeded random moments and lose nothing committed.

Lives differ in where the kill lands: anywhere from process start (ledger and outbox being
opened) to 1.5 s later; after ready (polling, windows closing, sealing, outbox commits,
publishes); right after a consent change made on the household page (the POST had returned,
so the change must be in the ledger after the kill); right after a signed operator command
that changes the ledger was published; with the broker down (a backlog builds) and then during
the heavy publish that drains it. After every kill the consent ledger verifies (chain and
signatures, as ``hems-agent doctor`` checks) and sqlite finds the outbox intact; at the end one
last life drains everything and the receiver holds every committed release exactly once.

Set HEMS_PROOF_KILLS to change the number of lives (default 220).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.uplink.session import BrokerConfig, connect, tls_context
from agent.wire.commands import encode, new_command
from agent.wire.keys import load_device_key
from agent.wire.topics import control_topic
from drivers.sim.server import run_site
from tests.conftest import free_port
from tests.e2e.daemon_helpers import DaemonProcess, Page, page_toml, sim_devices, wait_for
from tests.integration.downlink_helpers import OPERATOR_PASSWORD, operator_keys_toml
from tests.proof.fault_rig import (
    check_exactly_once,
    check_state,
    logged,
    outbox_depth,
    quick_cloud,
    received,
    recipient_names,
)
from tests.support.mosquitto import OPERATOR_USER, Mosquitto
from tests.support.site import SiteFiles, broker_users, make_site

pytestmark = [pytest.mark.proof, pytest.mark.mosquitto]

SITE = "site-cuts-1"
SPEED = 2880.0  # a 30-minute window closes every 0.6 s
START = datetime.fromisoformat("2026-06-01T23:56:00+09:00")
SEED = 20261126
LIVES = int(os.environ.get("HEMS_PROOF_KILLS", "220"))
BROKER_DOWN = range(LIVES * 6 // 10, LIVES * 7 // 10)  # a backlog builds, then drains


def _kind(life: int) -> str:
    if life in BROKER_DOWN:
        return "start" if life % 2 else "ready"
    return ("start", "ready", "ready", "page", "start", "ready", "command", "ready")[life % 8]


async def _operator_send(broker: Mosquitto, directory: Path, n: int) -> None:
    """A signed ``suspend improvement`` command from the support centre (QoS 1)."""
    config = BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=broker.ca,
                          client_id="operator-cuts", username=OPERATOR_USER,
                          password=OPERATOR_PASSWORD, timeout=2.0, session_expiry=60)
    command = new_command(site=SITE, key="ops-a", type="suspend",
                          args={"purpose": "improvement", "reference": f"SR-{n}"},
                          now=time.time())
    async with connect(config, tls_context(config)) as client:
        await client.publish(control_topic(SITE),
                             encode(command, load_device_key(directory / "ops-a.key")),
                             qos=1, wait=2)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    users = {**broker_users(SITE), OPERATOR_USER: OPERATOR_PASSWORD}
    with Mosquitto(tmp_path / "broker", users) as mosquitto:
        yield mosquitto


class Lives:
    """Runs the lives and keeps their tally."""

    def __init__(self, files: SiteFiles, broker: Mosquitto, web_port: int) -> None:
        self.files, self.broker, self.web_port = files, broker, web_port
        self.rng = random.Random(SEED)
        self.tally: Counter[str] = Counter()
        self.ledger_records = check_state(files) if files.state_dir.exists() else 0
        loop = asyncio.get_running_loop()
        origin = loop.time()
        self.sim_now = lambda: START + timedelta(seconds=(loop.time() - origin) * SPEED)

    async def live(self, life: int) -> None:
        kind = _kind(life)
        daemon = await DaemonProcess.start(self.files, speed=SPEED, start=self.sim_now())
        if kind == "start":
            await asyncio.sleep(self.rng.uniform(0.05, 1.5))
        else:
            await daemon.wait_line("ready:")  # the ledger loaded after the previous kill
            self.tally["reached ready"] += 1
            if kind == "page":
                await self._page_change(life)
                await asyncio.sleep(self.rng.uniform(0.0, 0.05))
            elif kind == "command":
                await _operator_send(self.broker, self.files.directory, life)
                await asyncio.sleep(self.rng.uniform(0.0, 0.4))
            else:
                await asyncio.sleep(self.rng.uniform(0.05, 1.5))
        await daemon.kill()
        self.tally[kind] += 1
        records = check_state(self.files)
        assert records >= self.ledger_records, "consent records vanished after a kill"
        self.ledger_records = records

    async def _page_change(self, life: int) -> None:
        before = check_state(self.files)
        purpose, tier = (("improvement", "1d"), ("proposals", "1d"), ("proposals", "off"),
                         ("improvement", "off"))[(life // 8) % 4]
        async with Page(self.web_port) as page:
            await page.login()
            await page.grant(purpose, "company", tier)
        # The POST returned: the change is committed and must survive the kill below.
        assert check_state(self.files) >= before + 1


@pytest.mark.timeout(900)
async def test_two_hundred_power_cuts_lose_nothing_committed(
        tmp_path: Path, broker: Mosquitto) -> None:
    began = time.monotonic()
    web_port = free_port()
    async with run_site(speed=SPEED, start=START) as site:
        directory = tmp_path / "gw"
        directory.mkdir()
        files = make_site(directory, broker, site_id=SITE, devices=sim_devices(site),
                          extra=page_toml(directory, web_port) + operator_keys_toml(directory))
        async with quick_cloud(files, broker, tmp_path / "seen.db") as c:
            lives = Lives(files, broker, web_port)
            for life in range(LIVES):
                if life == BROKER_DOWN.start:
                    broker.stop()
                elif life == BROKER_DOWN.stop:
                    broker.start()
                await lives.live(life)
            daemon = await DaemonProcess.start(files, speed=SPEED, start=lives.sim_now())
            try:
                await daemon.wait_line("ready:")
                names = recipient_names(files)
                await wait_for(lambda: set(logged(files)) <= set(received(c, names)),
                               "every committed release at the receiver", 90)
                await wait_for(lambda: outbox_depth(files) == 0, "an empty outbox", 60)
            finally:
                code = await daemon.terminate()
            assert code == 0, daemon.output()
    committed, got = check_exactly_once(c, files)
    assert committed >= LIVES // 2, "too few releases to prove anything"
    assert set(c.receiver.rejected) <= {"replay"}  # resent after a kill, dropped as seen
    tally = lives.tally
    assert sum(tally[k] for k in ("start", "ready", "page", "command")) == LIVES >= 200
    assert tally["page"] >= 10 and tally["command"] >= 10
    _report(tally, committed, got, c.receiver.rejected, time.monotonic() - began)


def _report(tally: Counter[str], committed: int, got: int, rejected: object,
            seconds: float) -> None:
    """One line for docs/results.md (shown with ``pytest -s``)."""
    print(f"\npower cuts: {LIVES} kills ({dict(tally)}), {committed} committed releases, "
          f"{got} received once, receiver rejected {rejected}, {seconds:.0f} s")
