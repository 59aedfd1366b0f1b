"""The whole daemon: simulators + real mosquitto + `hems-agent run` (a subprocess) + receiver.

Time is simulated (``--time-speed``) so 30-minute and daily windows close within seconds. The
consent ledger is created with the factory grants a day before the daemon's first start (as
provisioning does), so the day that ends a few simulated minutes after the start is already
granted: the test waits for one midnight, not for a whole simulated day.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore, load_device_registry
from agent.config.model import load_config
from agent.daemon.state import open_state
from agent.host.metrics import Metrics
from agent.uplink.session import BrokerConfig
from drivers.sim.server import Site, run_site
from policy.catalogue import load_catalogue
from tests.support.mosquitto import RECEIVER_USER, Mosquitto
from tests.support.site import SiteFiles, broker_users, make_site

SITE = "site-e2e-1"
START = datetime.fromisoformat("2026-06-01T23:56:00+09:00")
SPEED = 1440.0  # a simulated day in a minute
RUN_START = datetime.fromisoformat("2026-06-01T23:44:00+09:00")
RUN_SPEED = 120.0  # midnight 8 s after the start: readings every simulated minute before it
INSTALLED = RUN_START - timedelta(days=1)  # the factory grants start a day before the run


@dataclass
class Cloud:
    receiver: Receiver
    out: io.StringIO

    def envelopes(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def data(self) -> list[dict[str, object]]:
        return [e for e in self.envelopes() if e["header"]["kind"] == "data"]  # type: ignore[index]


@contextlib.asynccontextmanager
async def cloud(files: SiteFiles, broker: Mosquitto, db: Path) -> AsyncIterator[Cloud]:
    out = io.StringIO()
    receiver = Receiver(device_keys=load_device_registry(files.device_registry),
                        recipient_keys={k.key_id: k for k in files.recipient_keys.values()},
                        rules=CatalogueRules(), replay=ReplayStore(db), output=out)
    config = BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=broker.ca,
                          client_id="receiver-e2e", username=RECEIVER_USER,
                          password=broker_users(SITE)[RECEIVER_USER])
    task = asyncio.create_task(receiver.run(config, "e2e"))
    try:
        yield Cloud(receiver, out)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _devices(site: Site) -> list[dict[str, object]]:
    return [{"name": name, "host": "127.0.0.1", "port": server.port, "unit": 1,
             "poll_interval": 0.5, "timeout": 1.0}
            for name, server in (("inverter", site.inverter), ("battery", site.battery),
                                 ("meter", site.meter))]


async def start_daemon(files: SiteFiles, speed: float = SPEED,
                       start: datetime = START) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run", "--config", str(files.config),
        "--time-speed", str(speed), "--time-start", start.isoformat(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"})


async def wait_for(condition: object, what: str, limit: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", broker_users(SITE)) as mosquitto:
        yield mosquitto


async def test_receiver_gets_exactly_the_granted_purposes_at_their_tiers(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with run_site(speed=RUN_SPEED, start=RUN_START) as site:
        files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=_devices(site))
        open_state(load_config(files.config), Metrics(), now=INSTALLED).close()
        async with cloud(files, broker, tmp_path / "seen.db") as c:
            daemon = await start_daemon(files, RUN_SPEED, RUN_START)
            try:
                # factory defaults: service at 30 min, improvement daily; the day's windows
                # close at the midnight 16 simulated minutes after the start
                await wait_for(lambda: {e["header"]["purpose"] for e in c.data()}
                               >= {"service", "improvement"}, "service and improvement data",
                               limit=90)
            finally:
                daemon.send_signal(signal.SIGTERM)
                output, _ = await asyncio.wait_for(daemon.communicate(), 30)
            assert daemon.returncode == 0, output.decode()
    tiers = {(e["header"]["purpose"], e["header"]["tier"]) for e in c.data()}
    assert tiers == {("service", "30min"), ("improvement", "1d")}
    consent = [e for e in c.envelopes() if e["header"]["kind"] == "consent"]
    assert {e["body"]["purpose"] for e in consent} >= {"service", "improvement", "proposals"}
    assert c.receiver.rejected == {}
    # The serial (equipment information) goes only to purposes that list that category
    # (docs/points.md): here service and improvement; proposals, which does not, is not granted.
    purposes = load_catalogue().purposes
    with_serial = {e["header"]["purpose"] for e in c.data()
                   if "device.serial" in {r["point"] for r in e["body"]["records"]}}
    assert "service" in with_serial
    assert all("equipment" in purposes[p].categories for p in with_serial), with_serial
    log_text = output.decode()
    assert "ready:" in log_text and "stopping" in log_text
