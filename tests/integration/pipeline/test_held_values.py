"""The pipeline hands every release it queues, with its envelope's sequence number, to the
household page's held values; the page finds them by the release log's ``seq``. The store is
bounded and erasure empties it. Real pipeline, minimiser, ledger, sqlite outbox and release
log; no broker is needed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.host.metrics import Metrics
from agent.pipeline import Pipeline
from agent.store.outbox import Outbox
from agent.web.held import HeldValues
from agent.wire.keys import ensure_device_key, generate_recipient_key
from drivers.models import PointKind, Reading
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.release import Record, Release
from policy.rights import ReleaseLog
from policy.tiers import Tier
from tests.integration.web.test_web_security import Rig
from tests.integration.web.test_web_security import rig as rig

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # 12:00 Japan time, a window boundary


def test_every_queued_release_is_held_under_its_envelope_seq(tmp_path: Path) -> None:
    catalogue = load_catalogue()
    ledger = Ledger.open(tmp_path / "ledger.json", catalogue, "s-1", T0 - timedelta(hours=1))
    outbox = Outbox(tmp_path / "outbox.sqlite")
    release_log = ReleaseLog(tmp_path / "release-log.jsonl", catalogue, "s-1")
    pipeline = Pipeline(site_id="s-1", ledger=ledger, minimiser=Minimiser(catalogue),
                        outbox=outbox, device_key=ensure_device_key(tmp_path / "device.key"),
                        recipients={"company": generate_recipient_key().public},
                        metrics=Metrics(), release_log=release_log)
    held = HeldValues()
    pipeline.on_release.append(held.keep)
    for minute in range(30):
        pipeline.submit([Reading(device="inv", point="pv.power", kind=PointKind.POWER,
                                 value=2400.0, unit="W",
                                 ts=T0 + timedelta(minutes=minute, seconds=5))])
    queued = pipeline.tick(T0 + timedelta(minutes=30, seconds=10))
    entries = list(release_log.entries())
    assert queued >= 1 and len(held) == len(entries) == queued
    for entry in entries:
        records = held.get(entry.seq)
        assert records is not None
        assert sorted({r.point for r in records}) == list(entry.points)
    assert any(r.values.get("mean") == 2400.0 for e in entries
               for r in held.get(e.seq) or ())
    outbox.close()
    ledger.close()


def _release(n: int) -> Release:
    record = Record(device="inv", point="pv.power", kind="power", unit="W",
                    values={"mean": float(n)}, coverage=1.0, good=1, bad=0,
                    samples=tuple((T0, float(i)) for i in range(100)))
    return Release(purpose="improvement", recipient="company", tier=Tier("raw"), start=T0,
                   end=T0 + timedelta(minutes=1), records=(record,), missing=(),
                   consent_record_id="r", consent_record_hash="h", catalogue_version="1")


def test_only_the_last_releases_are_held_and_samples_are_bounded() -> None:
    held = HeldValues(limit=2)
    for seq in (1, 2, 3):
        held.keep(seq, _release(seq))
    assert held.get(1) is None and len(held) == 2
    kept = held.get(3)
    assert kept is not None and len(kept[0].samples) == 60
    # held compressed, given back equal to what was kept
    assert kept == (dataclasses.replace(_release(3).records[0],
                                        samples=_release(3).records[0].samples[:60]),)
    assert held.get(None) is None


def test_erasure_forgets_the_held_values(rig: Rig) -> None:
    rig.service.held.keep(7, _release(7))
    rig.service.delete_local_data()
    assert rig.service.held.get(7) is None and len(rig.service.held) == 0
