"""A gateway's first two days under the factory grants, on the daemon's own state and pipeline
with a simulated clock: what the receiver accepts is exactly service at 30 minutes and
improvement once a day, from the first whole local day on.

The state is opened by ``agent.daemon.state.open_state`` (as ``hems-agent run`` does at its
first start) from an agent.toml written by the tests' site helper; readings go in at the
pipeline's edge, every envelope the outbox commits goes through the real receiver (device
signature, recipient keys, replay, content rules). Only the broker between them is left out:
the whole daemon with mosquitto is tests/e2e/test_daemon.py.
"""

from __future__ import annotations

import io
import json
import types
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore, load_device_registry
from agent.config.model import load_config
from agent.daemon.state import State, open_state
from agent.host.metrics import Metrics
from drivers.models import PointKind, Reading
from policy.catalogue import load_catalogue
from tests.support.mosquitto import make_tls
from tests.support.site import SiteFiles, make_site

SITE = "site-day-1"
FIRST_START = datetime.fromisoformat("2026-06-01T23:56:00+09:00")  # four minutes before a day
DAY2 = datetime.fromisoformat("2026-06-02T00:00:00+09:00")  # the first whole local day
DAY3 = DAY2 + timedelta(days=1)
END = DAY3 + timedelta(hours=1)
TICK = timedelta(minutes=5)  # from DAY2 on; a window closes on the first tick at or after its end

SERIAL = "SIM-INV-0042"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[SiteFiles, State]]:
    (tmp_path / "tls").mkdir()
    ca, _, _ = make_tls(tmp_path / "tls")
    broker: Any = types.SimpleNamespace(port=8883, ca=ca)  # written to agent.toml, never dialled
    files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=[])
    state = open_state(load_config(files.config), Metrics(), now=FIRST_START)
    yield files, state
    state.close()


def _minute(ts: datetime, n: int) -> list[Reading]:
    """One poll of an inverter and a meter at ``ts`` (the nameplate every half hour)."""
    readings = [
        Reading(device="inverter", point="pv.power", kind=PointKind.POWER, value=1200.0 + n % 7,
                unit="W", ts=ts),
        Reading(device="inverter", point="pv.energy", kind=PointKind.ENERGY,
                value=5_000_000.0 + 20 * n, unit="Wh", ts=ts),
        Reading(device="meter", point="grid.power", kind=PointKind.POWER, value=300.0 - n % 5,
                unit="W", ts=ts),
        Reading(device="meter", point="grid.energy_import", kind=PointKind.ENERGY,
                value=1_000_000.0 + 5 * n, unit="Wh", ts=ts),
    ]
    if n % 30 == 0:
        readings.append(Reading(device="inverter", point="device.serial", kind=PointKind.INFO,
                                value=SERIAL, unit="", ts=ts))
    return readings


def _run(state: State, until: datetime) -> None:
    """Feed a poll every simulated minute (5 s past it) and tick every TICK."""
    now, n, next_tick = FIRST_START, 0, DAY2
    while now < until:
        state.pipeline.submit(_minute(now + timedelta(seconds=5), n))
        now, n = now + timedelta(minutes=1), n + 1
        if now >= next_tick:
            state.pipeline.tick(now)
            next_tick += TICK


def _deliver(files: SiteFiles, state: State, db: Path) -> tuple[Receiver, list[dict[str, Any]]]:
    """Everything the outbox committed, in its order, through the receiver."""
    out = io.StringIO()
    receiver = Receiver(device_keys=load_device_registry(files.device_registry),
                        recipient_keys={k.key_id: k for k in files.recipient_keys.values()},
                        rules=CatalogueRules(), replay=ReplayStore(db), output=out)
    try:
        while batch := state.outbox.next_batch(100):
            for item in batch:
                assert receiver.handle(item.topic, item.payload).accepted
            state.outbox.ack([item.id for item in batch])
    finally:
        receiver.replay.close()
    return receiver, [json.loads(line) for line in out.getvalue().splitlines()]


def test_first_start_releases_service_half_hours_and_improvement_from_the_first_whole_day(
        gateway: tuple[SiteFiles, State], tmp_path: Path) -> None:
    files, state = gateway
    _run(state, END)
    receiver, envelopes = _deliver(files, state, tmp_path / "seen.db")
    data = [e for e in envelopes if e["header"]["kind"] == "data"]

    assert {(e["header"]["purpose"], e["header"]["tier"]) for e in data} == {
        ("service", "30min"), ("improvement", "1d")}
    consent = [e for e in envelopes if e["header"]["kind"] == "consent"]
    assert {e["body"]["purpose"] for e in consent} >= {"service", "improvement", "proposals"}
    assert receiver.rejected == {}
    assert envelopes.index(consent[0]) < envelopes.index(data[0])  # the notices go first

    # Improvement: the day the gateway started in was not granted when it began, so it is
    # never released; day 2 is released whole, once, at its local midnight.
    improvement = [e["header"] for e in data if e["header"]["purpose"] == "improvement"]
    assert [(h["window_start"], h["window_end"]) for h in improvement] == [
        (int(DAY2.timestamp()), int(DAY3.timestamp()))]
    [logged] = [e for e in state.release_log.entries() if e.purpose == "improvement"]
    assert logged.logged_at == DAY3, logged
    # Service: every half hour from the first whole one after the start, once each.
    service = sorted(e["header"]["window_start"] for e in data
                     if e["header"]["purpose"] == "service")
    assert service == [int((DAY2 + k * timedelta(minutes=30)).timestamp())
                       for k in range((END - DAY2) // timedelta(minutes=30))]

    # The serial (equipment information) goes only to purposes listing that category.
    purposes = load_catalogue().purposes
    with_serial = {e["header"]["purpose"] for e in data
                   if "device.serial" in {r["point"] for r in e["body"]["records"]}}
    assert with_serial == {"service", "improvement"}
    assert all("equipment" in purposes[p].categories for p in with_serial)
    assert SERIAL not in json.dumps([e["header"] for e in envelopes])
