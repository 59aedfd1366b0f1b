"""The pipeline hands every poll's readings to the household's energy view, and the view adds
nothing to what leaves: the same readings queue the same releases with or without it.
Real pipeline, minimiser, ledger, sqlite outbox and release log; no broker is needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.host.metrics import Metrics
from agent.pipeline import Pipeline
from agent.store.outbox import Outbox
from agent.web.energy import HomeEnergy
from agent.wire.keys import ensure_device_key, generate_recipient_key
from drivers.models import PointKind, Reading
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.rights import ReleaseLog

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # 12:00 Japan time, a window boundary


def _run(tmp_path: Path, energy: HomeEnergy | None) -> tuple[int, int, int]:
    tmp_path.mkdir()
    catalogue = load_catalogue()
    ledger = Ledger.open(tmp_path / "ledger.json", catalogue, "s-1", T0 - timedelta(hours=1))
    outbox = Outbox(tmp_path / "outbox.sqlite")
    release_log = ReleaseLog(tmp_path / "release-log.jsonl", catalogue, "s-1")
    pipeline = Pipeline(site_id="s-1", ledger=ledger, minimiser=Minimiser(catalogue),
                        outbox=outbox, device_key=ensure_device_key(tmp_path / "device.key"),
                        recipients={"company": generate_recipient_key().public},
                        metrics=Metrics(), release_log=release_log)
    if energy is not None:
        pipeline.observers.append(energy.feed)
    for minute in range(30):
        pipeline.submit([
            Reading(device="inv", point=point, kind=PointKind.POWER, value=value, unit="W",
                    ts=T0 + timedelta(minutes=minute, seconds=5))
            for point, value in (("pv.power", 2400.0), ("grid.power", -400.0),
                                 ("battery.power", -500.0))])
    queued = pipeline.tick(T0 + timedelta(minutes=30, seconds=10))
    result = queued, outbox.stats().depth, len(list(release_log.entries()))
    outbox.close()
    ledger.close()
    return result


def test_the_energy_view_sees_every_poll_and_sends_nothing(tmp_path: Path) -> None:
    energy = HomeEnergy()
    with_view = _run(tmp_path / "a", energy)
    without = _run(tmp_path / "b", None)
    assert with_view == without and with_view[0] >= 1  # the service's half hour, as before
    today = energy.today(T0 + timedelta(minutes=31))
    assert today.pv[144:150] == (2400.0,) * 6  # 12:00-12:30 Japan time
    assert today.load[144] == 1500.0  # grid -400 + solar 2400 + battery -500
    assert round(today.kwh(today.pv), 2) == 1.2
