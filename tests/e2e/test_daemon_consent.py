"""Consent end to end: what the receiver gets is exactly what the household granted, and a
change made on the household page takes effect at once (purge, consent notice, new data).

Simulators + real mosquitto + `hems-agent run` (with its page) + an in-process receiver. The
consent ledger is created a day before the first run, so the first run's day window already
falls under the factory grants; the second run starts a day later with the broker down, so the
day's improvement release waits in the outbox when the household turns improvement off.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.config.model import load_config
from agent.daemon.state import open_state
from agent.host.metrics import Metrics
from drivers.sim.server import run_site
from tests.conftest import free_port
from tests.e2e.daemon_helpers import (
    Cloud,
    DaemonProcess,
    Page,
    cloud,
    metric,
    page_toml,
    release_log,
    set_metrics_listen,
    sim_devices,
    wait_for,
)
from tests.support.mosquitto import Mosquitto
from tests.support.site import SiteFiles, broker_users, make_site

SITE = "site-consent-1"
SPEED = 60.0  # a minute per second: page sessions (30 min idle) last half a minute
INSTALLED = datetime.fromisoformat("2026-06-01T23:58:00+09:00")
DAY1 = datetime.fromisoformat("2026-06-02T00:00:00+09:00")
DAY2 = DAY1 + timedelta(days=1)
# Runs 1 and 2 start this long before their day ends (6 s at 60x): the day needs readings from
# the daemon before its midnight, and a loaded machine can take a few seconds to start it.
BEFORE_MIDNIGHT = timedelta(minutes=6)

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", broker_users(SITE)) as mosquitto:
        yield mosquitto


def _install(files: SiteFiles) -> None:
    """Provisioning a day earlier: the ledger with the factory grants, as of INSTALLED."""
    state = open_state(load_config(files.config), Metrics(), now=INSTALLED)
    state.close()


def _windows(c: Cloud, purpose: str) -> list[int]:
    return sorted(e["header"]["window_start"] for e in c.data()
                  if e["header"]["purpose"] == purpose)


def _logged(files: SiteFiles, purpose: str, start: datetime) -> bool:
    return any(e["purpose"] == purpose and datetime.fromisoformat(e["start"]) == start
               for e in release_log(files))


async def test_page_changes_reach_the_receiver_and_the_outbox(
        tmp_path: Path, broker: Mosquitto) -> None:
    web_port, metrics_port = free_port(), free_port()
    async with run_site(speed=SPEED, start=INSTALLED) as site:
        files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=sim_devices(site),
                          extra=page_toml(tmp_path / "gw", web_port))
        set_metrics_listen(files, metrics_port)
        _install(files)
        keys = {name: key.key_id for name, key in files.recipient_keys.items()}
        async with cloud(files, broker, tmp_path / "seen.db") as c:
            # Run 1, the night of day 1: day 1 closes under the factory grants.
            daemon = await DaemonProcess.start(files, speed=SPEED, start=DAY1 - BEFORE_MIDNIGHT
                                               + timedelta(days=1))
            try:
                await daemon.wait_line("ready:")
                await wait_for(lambda: _windows(c, "improvement") and _windows(c, "service"),
                               "day 1's improvement and service data", 30)
            finally:
                code = await daemon.terminate()
            assert code == 0, daemon.output()
            before = {(e["header"]["purpose"], e["header"]["tier"]) for e in c.data()}
            assert before == {("service", "30min"), ("improvement", "1d")}

            # Run 2, the night of day 2, broker down: day 2's improvement release is queued.
            broker.stop()
            daemon = await DaemonProcess.start(files, speed=SPEED, start=DAY2 - BEFORE_MIDNIGHT
                                               + timedelta(days=1))
            try:
                await daemon.wait_line("ready:")
                await wait_for(lambda: _logged(files, "improvement", DAY2),
                               "day 2's improvement release committed", 30)
                async with Page(web_port) as page:
                    await page.login()
                    # Queued (broker down) and sealed: the page still shows their values (held
                    # in memory by the daemon's on_release hook).
                    waiting = (await page.client.get("/released")).text
                    assert waiting.count('<details class="values">') >= 1, "no held values"
                    await page.grant("improvement", "company", "off")
                    assert await metric(metrics_port, "hems_outbox_purged_total",
                                        purpose="improvement") >= 1
                    broker.start()
                    await wait_for(lambda: [e for e in c.of_kind("consent", "improvement")
                                            if e["header"]["tier"] == "off"],
                                   "the consent notice: improvement off", 40)
                    await page.grant("support", "support_centre", "raw", hours=1)
                    cookies, csrf = dict(page.client.cookies), page.csrf
                await wait_for(lambda: len(_windows(c, "support")) >= 3,
                               "raw support data", 30)
                # Day 2's service data (queued before the change) arrives: the backlog drained.
                await wait_for(lambda: any(w >= DAY2.timestamp() - 1800
                                           for w in _windows(c, "service")),
                               "day 2's service data", 30)
            finally:
                code = await daemon.terminate()
            assert code == 0, daemon.output()

            # Run 3: a restart keeps the household's phone logged in (same cookie, same form).
            daemon = await DaemonProcess.start(files, speed=SPEED, start=DAY2 + timedelta(
                hours=23, minutes=59))
            try:
                await daemon.wait_line("ready:")
                async with Page(web_port) as page:
                    page.client.cookies.update(cookies)
                    page.csrf = csrf
                    home = await page.client.get("/")
                    assert home.status_code == 200, home.status_code
                    await page.grant("support", "support_centre", "off")
            finally:
                code = await daemon.terminate()
            assert code == 0, daemon.output()
    _check(c, keys)


def _check(c: Cloud, keys: dict[str, str]) -> None:
    tiers = {(e["header"]["purpose"], e["header"]["tier"]) for e in c.data()}
    assert tiers == {("service", "30min"), ("improvement", "1d"), ("support", "raw")}
    # Improvement: day 1 only; day 2's release was purged from the outbox, never sent.
    assert _windows(c, "improvement") == [int(DAY1.timestamp())]
    support = [e["header"] for e in c.data() if e["header"]["purpose"] == "support"]
    assert {h["recipient_key"] for h in support} == {keys["support_centre"]}
    assert all(h["window_end"] - h["window_start"] == 60 for h in support)
    assert all(h["window_start"] >= DAY2.timestamp() for h in support)
    service = {e["header"]["recipient_key"] for e in c.data()
               if e["header"]["purpose"] == "service"}
    assert service == {keys["company"]}
    assert c.receiver.rejected == {}
