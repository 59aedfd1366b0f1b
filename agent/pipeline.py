"""The policy pipeline: readings → minimiser → releases → sealed envelopes → outbox.

Everything here is synchronous and fast; the daemon calls :meth:`Pipeline.submit` from the
pollers and :meth:`Pipeline.tick` from one periodic task. Consent changes (from the household
page, expiry, a catalogue update) go through :meth:`Pipeline.apply_changes`, which purges what
the outbox still holds that the new grant no longer covers and queues the signed consent-change
message for the backend ahead of any data.

The release log lists each release once its envelope is committed, then what became of it: the
pipeline connects the outbox's :attr:`~agent.store.outbox.Outbox.events` to the log, so a committed
envelope is listed as queued, an acknowledged one is marked sent, one purged or dropped after
the publisher handed it to the MQTT client and before its acknowledgement is marked possibly
sent, and one purged or dropped unsent is marked withdrawn (each removal with its reason). The
household page and the export show as released what was sent or possibly sent (the page marks
the latter "may have been sent"). The log entry's note is committed with the envelope; when the
pipeline connects the two it appends the entries a power cut kept from the log
(:meth:`Pipeline.recover_release_log`), before anything can purge their rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.host.metrics import Metrics
from agent.store.outbox import Noted, Outbox
from agent.wire.envelope import Header, seal
from agent.wire.keys import RecipientPublicKey, device_key_id
from agent.wire.topics import topic_for
from policy.ledger import Ledger
from policy.minimise import Minimiser, ReadingLike
from policy.records import ConsentChange, Source
from policy.release import Release
from policy.rights import Deletion, ReleaseLog, delete_household_data, withdrawal_reason
from policy.tiers import not_allowed

log = logging.getLogger(__name__)

# Consent changes and deletion requests are read by the operator's backend.
CONTROL_RECIPIENT = "company"


class ReleaseLogEvents:
    """Writes what the outbox reports (:class:`agent.store.outbox.ReleaseEvents`) to the release
    log, stamped by ``now`` (the pipeline's clock)."""

    def __init__(self, release_log: ReleaseLog, now: Callable[[], datetime]) -> None:
        self._log = release_log
        self._now = now

    def queued(self, releases: Sequence[Noted]) -> None:
        # Stamped with the time in each note; after a failed write the log skips those listed.
        self._log.append_noted(releases)

    def sent(self, seqs: Sequence[int]) -> None:
        # Durable at sync(), which the outbox calls before it deletes the acknowledged rows.
        self._log.mark_sent(seqs, now=self._now(), sync=False)

    def sync(self) -> None:
        self._log.sync()

    def withdrawn(self, seqs: Sequence[int], reason: str) -> None:
        self._log.mark_withdrawn(seqs, reason=reason, now=self._now())

    def possibly_sent(self, seqs: Sequence[int], reason: str) -> None:
        self._log.mark_possibly_sent(seqs, reason=reason, now=self._now())


@dataclass(kw_only=True)
class Pipeline:
    """Wires the minimiser, the ledger and the outbox for one site."""

    site_id: str
    ledger: Ledger
    minimiser: Minimiser
    outbox: Outbox
    device_key: ed25519.Ed25519PrivateKey
    recipients: Mapping[str, RecipientPublicKey]
    metrics: Metrics
    release_log: ReleaseLog
    via_company: frozenset[str] = frozenset()
    """Recipients (contractors, joint users) served through the company's own envelope."""
    observers: list[Callable[[Sequence[ReadingLike]], None]] = field(default_factory=list)
    """Read-only listeners of every poll's readings, called after the minimiser took them
    (the household page's own energy view, which stays on the device)."""
    on_release: list[Callable[[int, Release], None]] = field(default_factory=list)
    """Read-only listeners of every release queued, with its envelope's sequence number (the
    household page keeps the last few in memory to show their values)."""
    wall: Callable[[], float] = time.time
    _device_key_id: str = field(init=False)
    _unroutable: set[tuple[str, str]] = field(init=False, default_factory=set)
    _last_tick: datetime | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._device_key_id = device_key_id(self.device_key.public_key())
        self.outbox.events = ReleaseLogEvents(self.release_log, self._event_time)
        self.recover_release_log()
        for name, kind, text in (
            ("hems_readings_total", "counter", "Readings handed to the policy engine"),
            ("hems_releases_total", "counter", "Releases sealed into the outbox, per purpose"),
            ("hems_release_bytes_total", "counter", "Envelope bytes released, per purpose"),
            ("hems_releases_repeated_total", "counter",
             "Windows not released again: already released before a restart (reason "
             "already_released) or older than the last one sent (clock_behind)"),
            ("hems_releases_unroutable_total", "counter",
             "Releases with no configured key for their recipient (not sent)"),
            ("hems_consent_changes_total", "counter", "Consent changes applied, per source"),
            ("hems_outbox_purged_total", "counter", "Queued envelopes purged by consent changes"),
        ):
            self.metrics.describe(name, kind, text)

    def submit(self, readings: Sequence[ReadingLike]) -> None:
        """Hand a poll's readings to the minimiser."""
        self.minimiser.feed(readings)
        self.metrics.inc("hems_readings_total", len(readings))
        for observe in self.observers:
            observe(readings)

    def tick(self, now: datetime) -> int:
        """Apply expiries, close windows that ended, seal and queue their releases."""
        self._last_tick = now
        self.apply_changes(self.ledger.expire(now))
        releases = [r for r in self.minimiser.flush(now, self.ledger.grants(now))
                    if self._not_yet_released(r)]
        queued = [r for r in releases if self._queue_release(r, now)]
        if queued:
            # Listed by the release log once committed (the outbox reports them), so it never
            # lists what a power cut took; their notes, committed with them, cover a power cut
            # between the commit and the log's write.
            self.outbox.flush()
        return len(queued)

    def recover_release_log(self) -> int:
        """Append the release log entries of committed envelopes the log does not list; how
        many. A power cut between an outbox commit and the log's write leaves those; without
        them the household page and the provision records would under-report what leaves.
        Run when the pipeline connects the outbox to the log (before any purge can delete a
        row); a second run finds nothing."""
        noted = self.outbox.noted()
        added = len(self.release_log.append_noted(noted, only_missing=True)) if noted else 0
        if added:
            log.warning("start-up: %d committed releases were missing from the release log "
                        "(a power cut) and were added", added)
        return added

    def apply_changes(self, changes: Iterable[ConsentChange], *,
                      reason: str | None = None) -> int:
        """Purge what a change no longer allows, then queue its signed notice for the backend;
        how many queued envelopes were purged. This is the one consent path: the household
        page, the downlink and start-up all apply changes here, and each change purges once.

        ``reason`` names why purged releases were withdrawn (``erasure``); by default
        ``expiry`` for an expired grant, else ``consent_change``."""
        purged = 0
        for change in changes:
            purged += purge_withdrawn(self.outbox.purge, change, reason=reason)
            record = change.record
            self._queue_control(change.item, purpose=record.purpose, kind="consent",
                                tier=record.tier.value if record.tier else "off")
            self.metrics.inc("hems_consent_changes_total", source=record.source.value)
        self.outbox.flush()
        self._count_purges()
        return purged

    def reconcile_outbox(self, now: datetime) -> int:
        """Purge queued data the grants in force at ``now`` do not cover; how many went.

        A consent change is committed to the ledger before its purge reaches the outbox, so a
        power cut between the two would leave envelopes queued that the household has already
        stopped; and a time-boxed grant may have expired while the agent was off. Run at
        start-up, before the publisher, this makes the outbox agree with the ledger again (the
        release log marks them withdrawn, reason ``consent_change`` or ``expiry``). A purpose
        or recipient the ledger does not know any more counts as off.
        """
        latest, grants = self.ledger.state(), self.ledger.grants(now)
        removed = 0
        for purpose, recipient, tier in sorted(self.outbox.queued_data()):
            grant = grants.get((purpose, recipient))
            granted = None if grant is None else grant.tier.value
            if tier not in {t.value for t in not_allowed(granted)}:
                continue
            record = latest.get((purpose, recipient))
            expired = grant is None and record is not None and record.tier is not None
            removed += self.outbox.purge(purpose, recipient, [tier],
                                         reason="expiry" if expired else "consent_change")
        if removed:
            log.warning("start-up: %d queued envelopes were no longer allowed by the "
                        "household's consent and were withdrawn", removed)
            self._count_purges()
        return removed

    def queue_deletion(self, item: Mapping[str, Any]) -> None:
        """Queue the household's deletion request for the backend and commit it."""
        self._queue_control(item, purpose="service", kind="deletion", tier="events")
        self.outbox.flush()
        self._count_purges()

    def _count_purges(self) -> None:
        # Counted by the outbox: erasure purges every purpose through it, not through here.
        for purpose, count in self.outbox.purged.items():
            self.metrics.set("hems_outbox_purged_total", count, purpose=purpose)

    def _not_yet_released(self, release: Release) -> bool:
        """False for a window that ends at or before one already released for the same
        purpose, recipient and tier: the last window again after a power cut (the minimiser's
        snapshot predates its release), or older ones after a restart with a clock behind."""
        mark = self.outbox.mark(_mark_key(release))
        end = int(release.end.timestamp())
        if mark is None or end > mark:
            return True
        if end == mark:
            self.metrics.inc("hems_releases_repeated_total", purpose=release.purpose,
                             reason="already_released")
            log.info("not releasing the %s window of %s again: it was released before the "
                     "restart", release.tier.value, release.purpose)
            return False
        self.metrics.inc("hems_releases_repeated_total", purpose=release.purpose,
                         reason="clock_behind")
        log.warning("not releasing a %s window of %s again: it ends before the last one sent "
                    "(is the clock behind?)", release.tier.value, release.purpose)
        return False

    def _event_time(self) -> datetime:
        """When the outbox reports an envelope sent or withdrawn: the pipeline's time at its
        last tick (the daemon ticks every few seconds), the wall clock before the first."""
        return self._last_tick or datetime.fromtimestamp(self.wall(), UTC)

    def _queue_release(self, release: Release, now: datetime) -> bool:
        """Seal and queue one release with its release log note; False if it has no
        recipient key."""
        key = self.recipients.get(release.recipient)
        if key is None:
            if release.recipient not in self.via_company:
                self._note_unroutable(release.purpose, release.recipient)
            return False
        seq = self.outbox.next_sequence()
        header = Header(
            site=self.site_id, purpose=release.purpose, tier=release.tier.value, kind="data",
            recipient_key=key.key_id, device_key=self._device_key_id, kem=key.kem,
            catalogue=release.catalogue_version, consent_id=release.consent_record_id,
            consent_hash=release.consent_record_hash, seq=seq,
            window_start=int(release.start.timestamp()), window_end=int(release.end.timestamp()),
            created=int(self.wall() * 1000))
        payload = seal(header, release.to_dict(), recipient=key, device_key=self.device_key)
        self.outbox.enqueue(payload, topic=topic_for(self.site_id, release.purpose, "data"),
                            purpose=release.purpose, recipient=release.recipient,
                            tier=release.tier.value, kind="data", seq=seq,
                            mark=(_mark_key(release), int(release.end.timestamp())),
                            log_entry=self.release_log.note(release, now=now))
        for listener in self.on_release:
            listener(seq, release)
        self.metrics.inc("hems_releases_total", purpose=release.purpose)
        self.metrics.inc("hems_release_bytes_total", len(payload), purpose=release.purpose)
        return True

    def _queue_control(self, body: Mapping[str, Any], *, purpose: str, kind: str,
                       tier: str) -> None:
        key = self.recipients.get(CONTROL_RECIPIENT)
        if key is None:
            self._note_unroutable(purpose, CONTROL_RECIPIENT)
            return
        catalogue = self.ledger.catalogue
        count, head = self.ledger.head()
        seq = self.outbox.next_sequence()
        header = Header(
            site=self.site_id, purpose=purpose, tier=tier, kind=kind,
            recipient_key=key.key_id, device_key=self._device_key_id, kem=key.kem,
            catalogue=catalogue.version, consent_id=f"ledger-{count}", consent_hash=head,
            seq=seq, window_start=None, window_end=None, created=int(self.wall() * 1000))
        payload = seal(header, dict(body), recipient=key, device_key=self.device_key)
        self.outbox.enqueue(payload, topic=topic_for(self.site_id, purpose, kind),
                            purpose=purpose, recipient=CONTROL_RECIPIENT, tier=tier, kind=kind,
                            seq=seq)

    def _note_unroutable(self, purpose: str, recipient: str) -> None:
        self.metrics.inc("hems_releases_unroutable_total", purpose=purpose, recipient=recipient)
        if (purpose, recipient) not in self._unroutable:
            self._unroutable.add((purpose, recipient))
            log.warning("no key configured for recipient %s: %s releases to it are not sent",
                        recipient, purpose)


def purge_withdrawn(purge: Callable[..., int], change: ConsentChange, *,
                    reason: str | None = None) -> int:
    """Purge the queued items ``change`` no longer allows (``purge`` is ``Outbox.purge``);
    how many went. ``reason`` as for :meth:`Pipeline.apply_changes`."""
    spec = change.purge
    if not spec.tiers:
        return 0
    return purge(spec.purpose, spec.recipient, sorted(t.value for t in spec.tiers),
                 reason=reason or withdrawal_reason(change))


def erase_local_data(purge: Callable[..., int], *, ledger: Ledger, minimiser: Minimiser | None,
                     release_log: ReleaseLog, now: datetime, source: Source | str,
                     reference: str | None = None) -> tuple[Deletion, int]:
    """Erasure on the device: every queued upload purged (``purge`` is ``Outbox.purge``),
    then :func:`~policy.rights.delete_household_data`; the deletion and how many envelopes
    went. Queued uploads go first: a power cut part-way leaves nothing to send that the
    household asked to delete (the deletion is simply asked for again)."""
    purged = sum(purge(pid, reason="erasure") for pid in ledger.catalogue.purposes)
    deletion = delete_household_data(ledger=ledger, now=now, source=source, reference=reference,
                                     minimiser=minimiser, release_log=release_log)
    return deletion, purged


def _mark_key(release: Release) -> str:
    return f"{release.purpose}/{release.recipient}/{release.tier.value}"
