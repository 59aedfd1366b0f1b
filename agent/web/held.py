"""The values of recent releases, kept in memory so the household can open them on the page.

An envelope is sealed to its recipient: the device cannot read it back, and the release log
and the outbox's notes list which points a release held, never their values. So the pipeline
hands every release it queues to :meth:`HeldValues.keep` (its read-only ``on_release`` hook),
with the sequence number of its envelope, and the page looks them up by that number. Only the
last :data:`MAX_RELEASES` are kept, in memory only: nothing is written to disk or logged, a
restart starts empty, and erasure clears it.

Each release is held pickled and compressed, and rebuilt when the page opens it: as objects a
release of ten inverters' service window took about 63 KB, and the 200 held releases about
13 MB of the daemon's memory after four days. The bytes are made here and read back only here,
in the same process: nothing from outside is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import pickle
import zlib
from collections import OrderedDict

from policy.release import Record, Release

MAX_RELEASES = 200
MAX_SAMPLES = 60  # per record of the raw tier: one minute of one-second readings


class HeldValues:
    """The records of the last ``limit`` releases queued since the start, by envelope seq."""

    def __init__(self, limit: int = MAX_RELEASES) -> None:
        if limit < 1:
            raise ValueError(f"HeldValues keeps at least one release, not {limit}")
        self._limit = limit
        self._held: OrderedDict[int, bytes] = OrderedDict()

    def keep(self, seq: int, release: Release) -> None:
        """Keep the records of the release queued as envelope ``seq`` (the oldest kept goes
        once ``limit`` are held)."""
        records = tuple(
            r if len(r.samples) <= MAX_SAMPLES
            else dataclasses.replace(r, samples=r.samples[:MAX_SAMPLES])
            for r in release.records)
        self._held[seq] = zlib.compress(pickle.dumps(records, pickle.HIGHEST_PROTOCOL), 1)
        self._held.move_to_end(seq)
        while len(self._held) > self._limit:
            self._held.popitem(last=False)

    def get(self, seq: int | None) -> tuple[Record, ...] | None:
        """The records of envelope ``seq``, or None when they are not held (older, from before
        the last start, or erased)."""
        held = None if seq is None else self._held.get(seq)
        if held is None:
            return None
        records: tuple[Record, ...] = pickle.loads(zlib.decompress(held))  # made by keep()
        return records

    def clear(self) -> None:
        """Forget every value (erasure of the household's local data)."""
        self._held.clear()

    @property
    def limit(self) -> int:
        return self._limit

    def __len__(self) -> int:
        return len(self._held)
