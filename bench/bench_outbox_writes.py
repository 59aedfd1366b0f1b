"""Outbox disk writes per hour (SD-card wear): the outbox before and after its write reductions.

Replays one hour of the daemon's cadence on a simulated clock and reads the bytes this process
caused to be written (``/proc/self/io`` ``write_bytes``: 4 KiB pages as the kernel dirties
them, what reaches the card). Two loads of 180 envelopes an hour (620 bytes each, 112 KB/h of
payload), each acknowledged by the broker at once, the flusher running every second:

* ``daemon``: a pipeline tick every 5 s; three purposes release a 1-minute window together
  once a minute;
* ``one at a time``: one envelope every 20 s (the pattern of ``bench_uplink``'s hour).

``before`` is ``agent/outbox.py`` as of commit ``BEFORE`` (read with ``git show``): every flush
commits what is pending, acknowledgements alone included, into an AUTOINCREMENT table, marks
rewritten every time; its release log was appended and fsynced once per release. ``after`` is
the current outbox (acknowledgements ride with the next envelope commit or wait up to
``ack_interval``; ids without AUTOINCREMENT; unchanged marks not rewritten) and release log (one
append per tick; ``sent``/``withdrawn`` lines). Each is run with and without the release log.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from agent.pipeline import ReleaseLogEvents
from agent.store.outbox import Outbox
from bench.table import print_table
from policy.catalogue import load_catalogue
from policy.release import Record, Release
from policy.rights import ReleaseLog
from policy.tiers import Tier

BEFORE = "8680dee"  # the outbox before the write reductions
PAYLOAD = b"\x5a" * 620
PURPOSES = ("service", "improvement", "maintenance_watch")
RECIPIENTS = {"service": "company", "improvement": "company", "maintenance_watch": "installer"}
START = datetime(2026, 11, 26, tzinfo=UTC)
LOADS = {"daemon": (60, 3), "one at a time": (20, 1)}  # seconds between releases, per release


def _write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes line")


def _old_outbox_module() -> ModuleType | None:
    """``agent/outbox.py`` at ``BEFORE``, imported under another name; None without git."""
    try:
        source = subprocess.run(["git", "show", f"{BEFORE}:agent/outbox.py"], check=True,
                                capture_output=True, cwd=Path(__file__).parent).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("bench_outbox_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    exec(compile(source, f"{BEFORE}:agent/outbox.py", "exec"), module.__dict__)
    return module


def _release(purpose: str, end: datetime) -> Release:
    record = Record(device="meter", point="grid.power", kind="power", unit="W",
                    values={"mean": 500.0}, coverage=1.0, good=60, bad=0)
    return Release(purpose=purpose, recipient=RECIPIENTS[purpose], tier=Tier.MINUTE,
                   start=end - timedelta(minutes=1), end=end, records=(record,), missing=(),
                   consent_record_id="r1", consent_record_hash="00" * 32,
                   catalogue_version="2026.1")


class _Hour:
    """One simulated hour against one outbox (and, optionally, one release log)."""

    def __init__(self, box: Any, log: ReleaseLog | None, *, new: bool,
                 clock: list[float], notes: ReleaseLog) -> None:
        self.box, self.log, self.new, self.clock = box, log, new, clock
        self.notes = notes  # makes each release's note (stored with its envelope)
        self.commits = 0
        box.on_commit = self._counted
        if new and log is not None:
            box.events = ReleaseLogEvents(log, self._now)

    def _counted(self) -> None:
        self.commits += 1

    def _now(self) -> datetime:
        return START + timedelta(seconds=self.clock[0] - self.clock[1])

    def _tick(self, n: int, seq: int) -> int:
        queued = []
        for k in range(n):
            purpose = PURPOSES[k]
            release = _release(purpose, self._now())
            extra: dict[str, Any] = {}
            if self.new:
                extra = {"seq": seq, "log_entry": self.notes.note(release, now=self._now())}
            self.box.enqueue(PAYLOAD, topic=f"hems/v1/s-0001/{purpose}/data", purpose=purpose,
                             recipient=RECIPIENTS[purpose], tier="1min", kind="data",
                             mark=(f"{purpose}/{RECIPIENTS[purpose]}/1min",
                                   int(release.end.timestamp())), **extra)
            queued.append((release, len(PAYLOAD), seq if self.new else None))
            seq += 1
        self.box.flush()  # after: the outbox has the release log append the entries
        if self.log is not None and not self.new:
            for release, size, _ in queued:  # as the pipeline did: one fsync per release
                self.log.append(release, size=size, now=self._now())
        batch = self.box.next_batch()
        if self.new:  # the publisher marks them in flight, committed, before the PUBLISH
            self.box.publishing(batch)
        self.box.ack([item.id for item in batch])  # PUBACKs come at once
        return seq

    def run(self, every: int, n: int) -> int:
        flusher: Callable[[], None] = self.box.commit_due if self.new else self.box.flush
        before, seq = _write_bytes(), 0
        for second in range(3600):
            self.clock[0] += 1.0
            if second % every == 0:
                seq = self._tick(n, seq)
            flusher()
        self.box.flush()
        return _write_bytes() - before


def _measure(tmp: Path, old: ModuleType | None) -> list[tuple[str, ...]]:
    catalogue = load_catalogue()
    rows = []
    for load, (every, n) in LOADS.items():
        for version, module in (("before", old), ("after", None)):
            if version == "before" and module is None:
                rows.append((load, version, "n/a (no git)", "", "", ""))
                continue
            figures = []
            for with_log in (False, True):
                name = f"{load.replace(' ', '-')}-{version}-{with_log}"
                clock = [1_800_000_000.0, 1_800_000_000.0]
                cls = Outbox if module is None else module.Outbox
                box = cls(tmp / f"{name}.sqlite", clock=lambda c=clock: c[0])
                log = ReleaseLog(tmp / f"{name}.jsonl", catalogue, "s-0001") if with_log else None
                notes = ReleaseLog(tmp / "unwritten.jsonl", catalogue, "s-0001")
                hour = _Hour(box, log, new=module is None, clock=clock, notes=notes)
                figures.append((hour.run(every, n), hour.commits))
                box.close()
            (alone, commits), (total, _) = figures
            rows.append((load, version, f"{commits}", f"{alone / 1e6:.2f}", f"{total / 1e6:.2f}",
                         f"{total / (180 * len(PAYLOAD)):.0f}x"))
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        rows = _measure(Path(tmp), _old_outbox_module())
    print("\nOne hour, 180 envelopes of 620 bytes (112 KB of payload), acknowledged at once;"
          " /proc/self/io write_bytes:\n")
    print_table(["load", "outbox", "commits/h", "outbox MB/h", "outbox + release log MB/h",
                 "written / payload"], rows)
