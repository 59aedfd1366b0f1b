"""A gateway's consent paths on its real state files, for the stateful consent property test.

:class:`ConsentSite` opens the daemon's own state (``agent.daemon.state.open_state``: catalogue as
stored, ledger, minimiser with its snapshot file, release log, outbox, pipeline) on a simulated
clock, with the household page's service and the downlink's command actions on top, exactly as
the daemon wires them. No broker: the publisher is built but never run, so what the pipeline
commits to the outbox stays there. Every data envelope the pipeline commits is captured (from
the release log note it is committed with) in :attr:`ConsentSite.released`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config.model import load_config
from agent.daemon.actions import Actions, Outcome
from agent.daemon.state import State, open_state
from agent.host.metrics import Metrics
from agent.web.household import HouseholdService
from agent.wire.commands import Command, CommandType
from agent.wire.keys import (
    KEM_X25519,
    ensure_device_key,
    generate_recipient_key,
    recipient_public_pem,
    write_private_file,
)
from tests.support.mosquitto import make_tls

SITE = "site-consent-1"
OPERATOR_KEY = "ops-a"
#: Every recipient the factory catalogue and the generated updates name, with a key, so that
#: every release the minimiser makes is sealed and committed (contractors and joint users go
#: through the company's envelope, as configured in the field).
RECIPIENTS = ("company", "support_centre", "sales_company", "installer", "wholesaler",
              "partner", "broker")


@dataclass(frozen=True, kw_only=True)
class Released:
    """One data envelope committed to the outbox: what, to whom, which window, when."""

    purpose: str
    recipient: str
    tier: str
    start: datetime
    end: datetime
    at: datetime


def write_site(directory: Path) -> Path:
    """Keys, a (never contacted) broker section and agent.toml; the config file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    ensure_device_key(directory / "device.key")
    write_private_file(directory / "broker.pass", b"pw-unused")
    ca, _, _ = make_tls(directory)  # the publisher loads the CA, never connects
    lines = [
        f'site_id = "{SITE}"', 'timezone = "Asia/Tokyo"', f'state_dir = "{directory}/state"',
        f'device_key_file = "{directory}/device.key"', 'metrics_listen = ""', "",
        "[clock]", 'sync_check = "none"', "",
        "[broker]", 'url = "mqtts://127.0.0.1:9"', f'ca_file = "{ca}"',
        f'username = "{SITE}"', f'password_file = "{directory}/broker.pass"', "",
    ]
    for name in RECIPIENTS:
        key = generate_recipient_key(KEM_X25519)
        (directory / f"{name}.pub").write_bytes(recipient_public_pem(key.public))
        lines += ["[[recipients]]", f'id = "{name}"', f'key_file = "{directory}/{name}.pub"', ""]
    config = directory / "agent.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


class ConsentSite:
    """The daemon's state, page service and command actions on one state directory."""

    def __init__(self, directory: Path, clock: Callable[[], datetime]) -> None:
        self._config = load_config(write_site(directory))
        self._clock = clock
        self.released: list[Released] = []
        self.state, self.household, self.actions = self._open()

    def _open(self) -> tuple[State, HouseholdService, Actions]:
        now = self._clock()
        state = open_state(self._config, Metrics(), now=now)
        outbox = state.outbox
        enqueue = outbox.enqueue

        def recording(payload: bytes, **kwargs: Any) -> Any:
            if kwargs.get("kind") == "data":
                note = json.loads(kwargs["log_entry"])
                start, end = note["w"]
                self.released.append(Released(
                    purpose=note["p"], recipient=note["r"], tier=note["t"],
                    start=datetime.fromtimestamp(start, UTC),
                    end=datetime.fromtimestamp(end, UTC),
                    at=datetime.fromtimestamp(note["at"], UTC)))
            return enqueue(payload, **kwargs)

        setattr(outbox, "enqueue", recording)  # noqa: B010 (an instance attribute on purpose)
        household = HouseholdService(
            ledger=state.ledger, release_log=state.release_log, outbox=state.outbox,
            apply_consent=state.pipeline.apply_changes,
            on_deletion=state.pipeline.queue_deletion, minimiser=state.minimiser,
            clock=self._clock, state_dir=state.config.state_dir,
            receivers=frozenset(state.pipeline.recipients))
        state.household = household
        # As the daemon: the snapshot is restored once the clock is trusted, before readings.
        state.snapshots.restore_once(now)
        return state, household, Actions(state, now=self._clock)

    def tick(self) -> int:
        return self.state.pipeline.tick(self._clock())

    def save_snapshot(self) -> None:
        self.state.snapshots.save(self._clock())

    def restart(self, *, clean: bool) -> None:
        """Stop and start again on the same files. ``clean``: as the daemon's stop (a last
        tick, the snapshot saved); otherwise as a power cut after the last commit."""
        if clean:
            self.tick()
            self.save_snapshot()
        self.state.close()
        self.state, self.household, self.actions = self._open()

    def command(self, ctype: CommandType, args: Mapping[str, Any]) -> Outcome:
        """A command as the downlink hands it on after verifying its signature."""
        issued = int(self._clock().timestamp())
        command = Command(id=uuid.uuid4().hex, site=SITE, key=OPERATOR_KEY, type=ctype,
                          issued=issued, expires=issued + 3600, args=dict(args))
        return self.actions.apply(command)

    def close(self) -> None:
        self.state.close()
