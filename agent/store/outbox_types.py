"""What the outbox is configured with, hands out, reports and counts (:mod:`agent.store.outbox`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# A committed data envelope as the release log needs it: seq, size, log entry note.
Noted = tuple[int, int, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxConfig:
    """Outbox tuning; the defaults suit a Raspberry Pi with an SD card."""

    max_bytes: int = 256 * 1024 * 1024
    batch_items: int = 200
    flush_interval: float = 1.0
    # Envelopes younger than this are "live" and always go first.
    live_horizon: float = 120.0
    # Backlog (older) envelopes handed out per second, so a drain never starves live data.
    backlog_rate: float = 50.0
    # Acknowledgements alone are committed at most this often (they go with the next envelope
    # commit otherwise); a power cut before then only means those envelopes are sent again.
    ack_interval: float = 60.0
    priorities: Mapping[str, int] = field(default_factory=dict)


class ReleaseEvents(Protocol):
    """Where the outbox reports, by sequence number, what became of data envelopes."""

    def queued(self, releases: Sequence[Noted]) -> None:
        """They are committed; durable when this returns. After a failure the same ones come
        again, perhaps with some that were written: those must not be listed twice."""

    def sent(self, seqs: Sequence[int]) -> None:
        """The broker acknowledged them; may stay buffered until :meth:`sync`."""

    def sync(self) -> None:
        """Make the sent reports durable (called before acknowledged rows are deleted)."""

    def withdrawn(self, seqs: Sequence[int], reason: str) -> None:
        """They are about to be removed unsent (never handed to the MQTT client); durable
        when this returns."""

    def possibly_sent(self, seqs: Sequence[int], reason: str) -> None:
        """They are about to be removed after the publisher handed them to the MQTT client
        and before the broker acknowledged them: they may have left. Durable when this
        returns."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxItem:
    """One committed envelope awaiting its PUBACK."""

    id: int
    topic: str
    purpose: str
    kind: str
    created: float
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxStats:
    """Figures for metrics; ``drops`` counts envelopes dropped by the bound, per purpose."""

    depth: int
    bytes: int
    pending: int
    oldest_age: float | None
    drops: Mapping[str, int]
