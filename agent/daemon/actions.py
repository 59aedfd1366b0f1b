"""What each verified operator command does to the gateway's state.

Support-centre requests arrive only after the centre has verified the caller's identity; they
are recorded in the consent ledger with the source ``support_request`` and the request's
reference. A request to *grant* a purpose is never applied here: it becomes a pending request
on the household page, which only the household can accept. A catalogue update is validated
(a consent purpose or a third-party recipient that defaults to on is refused), stored
atomically, then applied with the ledger's rule: a purpose that became more invasive is paused
(off) until the household agrees again on the page; it never takes the new default.

Every action is synchronous and returns an :class:`Outcome`; refusals carry a reason and change
nothing. Reasons and results never hold personal data, except the export, which the downlink
seals to the company's key like every other upload.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.daemon.state import State
from agent.host.health import clock_check, watchdog_check
from agent.pipeline import erase_local_data
from agent.store.catalogue import is_newer, store_catalogue
from agent.wire.commands import Command, CommandType
from policy.catalogue import Catalogue, parse_catalogue
from policy.errors import CatalogueError, PolicyError
from policy.records import ConsentChange, Source
from policy.rights import export_all
from policy.tiers import parse as parse_tier
from policy.tiers import rank

log = logging.getLogger(__name__)

SOURCE = Source.SUPPORT_REQUEST
ALL_PURPOSES = "all"
"""``suspend`` with this purpose suspends every use the contract does not require."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """``status``: done, pending (waits for the household), ignored, refused or error."""

    status: str
    reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


def refused(reason: str) -> Outcome:
    return Outcome(status="refused", reason=reason)


class Actions:
    """Applies commands to an open :class:`~agent.daemon.state.State` (the daemon's)."""

    def __init__(self, state: State, *, now: Callable[[], datetime]) -> None:
        self._state = state
        self._now = now
        self._handlers: dict[CommandType, Callable[[Command], Outcome]] = {
            CommandType.CATALOGUE_UPDATE: self._catalogue_update,
            CommandType.SUSPEND: self._suspend,
            CommandType.STOP_THIRD_PARTY: self._stop_third_party,
            CommandType.EXPORT: self._export,
            CommandType.DELETE: self._delete,
            CommandType.GRANT_REQUEST: self._grant_request,
            CommandType.DIAGNOSTICS: self._diagnostics,
        }
        self.diagnostics_extra: Callable[[], dict[str, Any]] = dict

    def apply(self, command: Command) -> Outcome:
        """Carry out ``command``; a policy refusal becomes a ``refused`` outcome."""
        try:
            return self._handlers[command.type](command)
        except PolicyError as exc:
            return refused(str(exc))

    # -- policy revision --------------------------------------------------------------------

    def _catalogue_update(self, command: Command) -> Outcome:
        text = json.dumps(command.args["catalogue"], ensure_ascii=False, sort_keys=True,
                          indent=1).encode("utf-8")
        try:
            new = parse_catalogue(text, source="catalogue update")
        except CatalogueError as exc:
            return refused(f"broken catalogue, the current one stays: {exc}")
        state = self._state
        current = state.ledger.catalogue
        try:
            newer = is_newer(new, current)
        except ValueError as exc:
            return refused(f"cannot order catalogue versions: {exc}")
        if not newer:
            return Outcome(status="ignored", reason=f"version {new.version} is not newer than "
                                                    f"the current {current.version}")
        try:
            store_catalogue(state.config.state_dir, text)
        except OSError as exc:
            return Outcome(status="error", reason=f"cannot store the catalogue: {exc.strerror}")
        changes = self._switch_catalogue(new)
        reset = sorted({c.record.purpose for c in changes if c.record.needs_agreement})
        log.info("catalogue %s applied: %d consent changes, %d purposes need agreement again",
                 new.version, len(changes), len(reset))
        return Outcome(status="done", result={"version": new.version, "hash": new.content_hash,
                                              "changes": len(changes),
                                              "needs_agreement": reset})

    def _switch_catalogue(self, new: Catalogue) -> list[ConsentChange]:
        state = self._state
        changes = state.ledger.apply_catalogue(new, self._now())
        state.minimiser.set_catalogue(new)
        state.release_log.set_catalogue(new)
        state.catalogue = new
        state.pipeline.apply_changes(changes)
        return changes

    # -- support-centre requests ------------------------------------------------------------

    def _suspend(self, command: Command) -> Outcome:
        args, ledger, now = command.args, self._state.ledger, self._now()
        reference = args["reference"]
        purpose = args["purpose"]
        if purpose == ALL_PURPOSES:
            changes = ledger.suspend(source=SOURCE, reference=reference, now=now)
        else:
            found = ledger.catalogue.purposes.get(purpose)
            if found is None:
                return refused(f"unknown purpose {purpose!r}")
            wanted = [args["recipient"]] if "recipient" in args else [
                r.id for r in found.recipients]
            current = ledger.state()
            changes = [ledger.set_grant(purpose, rid, None, source=SOURCE, reference=reference,
                                        now=now)
                       for rid in wanted
                       if (rec := current.get((purpose, rid))) is None or rec.tier is not None]
        return self._applied(changes)

    def _stop_third_party(self, command: Command) -> Outcome:
        changes = self._state.ledger.stop_third_party(
            source=SOURCE, reference=command.args["reference"], now=self._now())
        return self._applied(changes)

    def _applied(self, changes: list[ConsentChange]) -> Outcome:
        self._state.pipeline.apply_changes(changes)
        return Outcome(status="done", result={"off": sorted(
            [c.record.purpose, c.record.recipient] for c in changes)})

    def _export(self, command: Command) -> Outcome:
        state = self._state
        if state.household is not None:
            data: dict[str, Any] = state.household.export_all()
        else:
            data = export_all(ledger=state.ledger, now=self._now(),
                              release_log=state.release_log, minimiser=state.minimiser)
            stats = state.outbox.stats()
            data["outbox"] = {"depth": stats.depth, "bytes": stats.bytes,
                              "drops": dict(stats.drops)}
        return Outcome(status="done", result={"reference": command.args["reference"],
                                              "export": data})

    def _delete(self, command: Command) -> Outcome:
        state = self._state
        deletion, purged = erase_local_data(
            state.outbox.purge, ledger=state.ledger, now=self._now(), source=SOURCE,
            reference=command.args["reference"], minimiser=state.minimiser,
            release_log=state.release_log)
        state.pipeline.apply_changes(deletion.changes, reason="erasure")
        if state.household is not None:
            for request in state.household.pending_requests():
                state.household.decline_request(request.request_id)
        state.pipeline.queue_deletion(deletion.item)
        log.info("support request: local data deleted, deletion request queued")
        return Outcome(status="done", result={"deleted": True, "purged": purged,
                                              "consent_changes": len(deletion.changes)})

    def _grant_request(self, command: Command) -> Outcome:
        args = command.args
        problem = self._grant_problem(args["purpose"], args["recipient"], args["tier"])
        if problem is not None:
            return refused(problem)
        household = self._state.household
        if household is None:
            return refused("the household page is not running: a grant request can only be "
                           "accepted there")
        # It waits as long as the command was valid for: the centre chose that when signing.
        request = household.add_pending_request(
            purpose=args["purpose"], recipient=args["recipient"], tier=args["tier"],
            hours=args["hours"], reference=args["reference"],
            lifetime=timedelta(seconds=command.expires - command.issued))
        return Outcome(status="pending", result={"request_id": request.request_id})

    def _grant_problem(self, purpose: str, recipient: str, tier: str) -> str | None:
        found = self._state.ledger.catalogue.purposes.get(purpose)
        if found is None:
            return f"unknown purpose {purpose!r}"
        if found.recipient(recipient) is None:
            return f"purpose {purpose!r} has no recipient {recipient!r}"
        try:
            wanted = parse_tier(tier)
        except (PolicyError, ValueError):
            return f"unknown tier {tier!r}"
        if wanted is None or found.finest is None or rank(wanted) > rank(found.finest):
            return f"tier {tier} is not available for purpose {purpose!r}"
        return None

    # -- remote diagnostics -----------------------------------------------------------------

    def _diagnostics(self, command: Command) -> Outcome:
        return Outcome(status="done", result=diagnostics(self._state, self.diagnostics_extra()))


def diagnostics(state: State, extra: dict[str, Any]) -> dict[str, Any]:
    """Health without personal data: doctor's local checks and the running daemon's figures.

    ``hems-agent doctor``'s device and broker probes are not run from inside the daemon (they
    would compete with polling on the same buses); its local checks that do not touch the
    daemon's open files are.
    """
    stats = state.outbox.stats()
    count, _ = state.ledger.head()
    try:
        state.ledger.verify()
        chain = "intact"
    except PolicyError as exc:
        chain = f"broken: {exc}"
    health = {
        "catalogue": state.ledger.catalogue.version,
        "ledger": {"records": count, "chain": chain},
        "outbox": {"depth": stats.depth, "bytes": stats.bytes, "oldest_age": stats.oldest_age,
                   "drops": dict(stats.drops)},
        "uplink": {"connected": state.publisher.connected.is_set(),
                   "published": state.publisher.published,
                   "reconnects": state.publisher.reconnects},
        "metrics": _samples(state.pipeline.metrics.render()),
    }
    return {"doctor": _doctor_checks(state), "health": health, **extra}


def _doctor_checks(state: State) -> list[dict[str, Any]]:
    checks = [clock_check(state.config), watchdog_check(None)]
    return [asdict(check) for check in checks]


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
