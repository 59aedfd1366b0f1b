"""The minimiser's snapshot file, so a restart neither cuts its open windows nor loses the
energy counted across it.

Read at start-up, restored only once the clock is trusted (before the first reading is fed:
the daemon calls :meth:`MinimiserSnapshots.restore_once` from both the tick and the reading
sink), saved after a tick every ``interval`` seconds, after every tick that released a window
(so its release marks are on disk with the outbox commit), and at a clean stop after the last
flush, so a SIGKILL or power cut loses at most one interval of open windows. Written
atomically (temp file, fsync, rename, directory fsync) with mode 0600: it holds the
household's open aggregates.
A refused or unreadable snapshot is logged with the reason and the minimiser starts empty;
it never stops the daemon. Erasure (``Minimiser.clear``) deletes the file at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.wire.keys import write_file_atomic
from policy import strict_json
from policy.errors import PolicyError
from policy.minimise import Minimiser
from policy.storage import fsync_dir
from policy.strict_json import JSONRefused

log = logging.getLogger(__name__)


@dataclass
class SaveCost:
    """What the last save cost: bytes written and seconds (snapshot, encode, write, fsync)."""

    bytes: int = 0
    seconds: float = 0.0


class MinimiserSnapshots:
    """Restore-once, periodic and final saves of one minimiser's snapshot file."""

    def __init__(self, path: Path, minimiser: Minimiser, site: str, *, interval: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.interval = interval
        self.last = SaveCost()
        self._minimiser = minimiser
        self._site = site
        self._monotonic = monotonic
        self._pending: Any = None
        self._problem: str | None = None
        self._settled = False  # restore attempted: from now on the file may be overwritten
        self._saved_at: float | None = None
        self._read()

    def _read(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self._problem = f"cannot be read: {exc.strerror or exc}"
            return
        try:
            self._pending = strict_json.loads(raw)
        except JSONRefused as exc:
            self._problem = f"is not valid JSON: {exc}"

    def restore_once(self, now: datetime) -> None:
        """Restore the snapshot read at start-up (the first call only; ``now`` is trusted)."""
        if self._settled:
            return
        self._settled = True
        data, self._pending = self._pending, None
        if self._problem is not None:
            log.warning("minimiser snapshot %s %s; starting empty", self.path, self._problem)
            return
        if data is None:
            log.info("no minimiser snapshot: starting empty")
            return
        try:
            self._minimiser.restore(data, site=self._site, now=now)
        except PolicyError as exc:
            log.warning("minimiser snapshot %s not restored (%s); starting empty", self.path, exc)
            return
        held = self._minimiser.held()
        windows = sum(len(starts) for starts in held["open_windows"].values())
        log.info("minimiser state restored: %d series, %d open windows, taken %s",
                 len(held["series"]), windows, data.get("taken"))

    def after_tick(self, now: datetime, *, released: bool) -> None:
        """Save at once after a tick that released a window, else when one is due.

        The snapshot carries the minimiser's release marks: saved right after the outbox
        commit, a power cut can no longer restore the state from before a release and have
        the policy layer release that window a second time.
        """
        if released:
            self.save(now)
        else:
            self.save_if_due(now)

    def save_if_due(self, now: datetime) -> None:
        """Save when ``interval`` seconds have passed since the last save (after a tick)."""
        at = self._monotonic()
        if self._saved_at is None:
            self._saved_at = at  # the first one an interval after start, not at once
        elif at - self._saved_at >= self.interval:
            self.save(now)

    def save(self, now: datetime) -> None:
        """Write the snapshot taken at ``now`` (right after a flush at ``now``)."""
        if not self._settled:
            return  # the file on disk was not restored yet: it is still the newest state
        started = time.perf_counter()
        self._saved_at = self._monotonic()
        data = json.dumps(self._minimiser.snapshot(site=self._site, taken=now),
                          separators=(",", ":")).encode()
        try:
            write_file_atomic(self.path, data, mode=0o600)
        except OSError as exc:
            log.warning("minimiser snapshot %s not saved: %s", self.path, exc.strerror or exc)
            return
        self.last = SaveCost(bytes=len(data), seconds=time.perf_counter() - started)

    def forget(self) -> None:
        """Delete the snapshot (erasure of the household's data): nothing is restored later."""
        self._settled = True
        self._pending = None
        try:
            self.path.unlink(missing_ok=True)
            self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)
            fsync_dir(self.path.parent)
        except OSError as exc:
            log.error("minimiser snapshot %s could not be deleted: %s", self.path,
                      exc.strerror or exc)
