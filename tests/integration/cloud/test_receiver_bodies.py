"""What the real pipeline queues opens at a strict receiver: every kind, every body fits its
schema (agent/wire/schemas), every header its tier/kind rule, including consent notices at
``off``."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore
from agent.host.metrics import Metrics
from agent.pipeline import Pipeline
from agent.store.outbox import Outbox
from agent.wire import envelope
from agent.wire.keys import ensure_device_key, generate_recipient_key
from drivers.models import PointKind, Reading
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.rights import ReleaseLog, delete_household_data

SITE = "s-0001"
T0 = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
RECIPIENTS = ("company", "installer", "support_centre")


def test_everything_the_pipeline_queues_is_accepted_by_the_receiver(tmp_path: Path) -> None:
    catalogue = load_catalogue()
    ledger = Ledger.open(tmp_path / "ledger.json", catalogue, SITE, T0 - timedelta(hours=1))
    outbox = Outbox(tmp_path / "outbox.sqlite")
    release_log = ReleaseLog(tmp_path / "release-log.jsonl", catalogue, SITE)
    device = ensure_device_key(tmp_path / "device.key")
    private = {r: generate_recipient_key() for r in RECIPIENTS}
    pipeline = Pipeline(site_id=SITE, ledger=ledger, minimiser=Minimiser(catalogue),
                        outbox=outbox, device_key=device,
                        recipients={r: k.public for r, k in private.items()},
                        metrics=Metrics(), release_log=release_log)
    try:
        pipeline.apply_changes(ledger.startup_changes)  # factory defaults, several of them off
        pipeline.apply_changes([ledger.set_grant("support", "support_centre", "raw",
                                                 source="support_request", reference="R-1",
                                                 now=T0)])
        pipeline.submit([
            Reading(device="meter", point=point, kind=kind, value=value + minute, unit=unit,
                    ts=T0 + timedelta(minutes=minute, seconds=5))
            for minute in range(30)
            for point, kind, value, unit in (("grid.power", PointKind.POWER, 500.0, "W"),
                                             ("grid.energy_import", PointKind.ENERGY, 1e6,
                                              "Wh"))])
        assert pipeline.tick(T0 + timedelta(minutes=30, seconds=10)) > 0
        deletion = delete_household_data(ledger=ledger, now=T0 + timedelta(hours=1),
                                         source="household_page")
        pipeline.apply_changes(deletion.changes, reason="erasure")
        pipeline.queue_deletion(deletion.item)
        items = outbox.next_batch(1000)
    finally:
        outbox.close()
        ledger.close()
    receiver = Receiver(device_keys={SITE: device.public_key()},
                        recipient_keys={k.key_id: k for k in private.values()},
                        rules=CatalogueRules(), replay=ReplayStore(tmp_path / "seen.db"),
                        output=io.StringIO())
    verdicts = [receiver.handle(item.topic, item.payload) for item in items]
    assert [v.reason for v in verdicts if not v.accepted] == []
    headers = [envelope.parse(item.payload).header for item in items]
    kinds = Counter(h.kind for h in headers)
    assert kinds["data"] > 0 and kinds["consent"] > 0 and kinds["deletion"] == 1
    assert "off" in {h.tier for h in headers if h.kind == "consent"}
