"""Everything the daemon opens at start-up: keys, catalogue, consent ledger, release log,
outbox, publisher and the pipeline that ties them together.

Files under the state directory: ``consent-ledger.json`` (TinyDB, atomic writes),
``release-log.jsonl`` (append-only), ``outbox.sqlite`` (WAL). Any problem here is fatal at
start-up and reported with the file it concerns. ``minimiser-state.json`` (the minimiser's
snapshot) is read here but restored later, once the clock is trusted; a bad one is never fatal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config.model import AgentConfig
from agent.config_checks import probe_writable, read_broker_password, recipient_key
from agent.errors import ConfigError, OutboxError
from agent.host.metrics import Metrics
from agent.paths import LEDGER_FILE, MINIMISER_STATE_FILE, OUTBOX_FILE, RELEASE_LOG_FILE
from agent.pipeline import Pipeline
from agent.store.catalogue import newest_catalogue
from agent.store.outbox import Outbox, OutboxConfig
from agent.store.snapshots import MinimiserSnapshots
from agent.uplink.publisher import Publisher
from agent.uplink.session import BrokerConfig, endpoint
from agent.wire.keys import (
    RecipientPublicKey,
    device_history_verifier,
    load_device_key,
    retired_device_keys,
)
from policy.catalogue import Catalogue, load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.rights import ReleaseLog

if TYPE_CHECKING:  # the page stack is imported lazily, only when the page is configured
    from agent.web.household import HouseholdService

_VIA_COMPANY_KINDS = frozenset({"contractor", "joint_user"})


@dataclass(kw_only=True)
class State:
    """The daemon's open state; :meth:`close` commits and closes everything."""

    config: AgentConfig
    device_key: ed25519.Ed25519PrivateKey
    recipients: Mapping[str, RecipientPublicKey]
    catalogue: Catalogue
    ledger: Ledger
    minimiser: Minimiser
    release_log: ReleaseLog
    outbox: Outbox
    publisher: Publisher
    pipeline: Pipeline
    snapshots: MinimiserSnapshots
    household: HouseholdService | None = None
    """The household page's service, once the page runs."""

    def close(self) -> None:
        try:
            self.outbox.close()  # fails when the outbox's storage does; the ledger still closes
        finally:
            self.ledger.close()


def open_state(config: AgentConfig, metrics: Metrics, *, now: datetime) -> State:
    """Open keys and state files; raises ConfigError/KeyFileError/PolicyError/OutboxError."""
    state_dir = config.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"state_dir: {state_dir}: cannot be created "
                          f"({exc.strerror or exc})") from exc
    check_writable(state_dir)
    device_key = load_device_key(config.device_key_file)
    recipients = load_recipients(config)
    catalogue = newest_catalogue(load_catalogue(config.catalogue), state_dir)
    public = device_key.public_key()
    ledger = Ledger.open(state_dir / LEDGER_FILE, catalogue, config.site_id, now,
                         sign=device_key.sign,
                         verify=device_history_verifier(public, retired_device_keys(state_dir)))
    minimiser = Minimiser(catalogue, tz=config.timezone)
    snapshots = MinimiserSnapshots(state_dir / MINIMISER_STATE_FILE, minimiser, config.site_id)
    minimiser.on_clear = snapshots.forget
    release_log = ReleaseLog(state_dir / RELEASE_LOG_FILE, catalogue, config.site_id)
    priorities = {p.id: p.priority for p in catalogue.spec.purposes}
    outbox = Outbox(state_dir / OUTBOX_FILE,
                    OutboxConfig(max_bytes=config.outbox.max_bytes,
                                 backlog_rate=config.outbox.drain_rate, priorities=priorities))
    publisher = Publisher(broker_config(config), outbox, metrics=metrics)
    outbox.on_commit = publisher.notify
    via_company = frozenset(r.id for p in catalogue.spec.purposes for r in p.recipients
                            if r.kind in _VIA_COMPANY_KINDS)
    pipeline = Pipeline(site_id=config.site_id, ledger=ledger, minimiser=minimiser,
                        outbox=outbox, device_key=device_key, recipients=recipients,
                        metrics=metrics, release_log=release_log, via_company=via_company)
    pipeline.apply_changes(ledger.startup_changes)
    pipeline.reconcile_outbox(now)
    return State(config=config, device_key=device_key, recipients=recipients,
                 catalogue=catalogue, ledger=ledger, minimiser=minimiser,
                 release_log=release_log, outbox=outbox, publisher=publisher, pipeline=pipeline,
                 snapshots=snapshots)


def load_recipients(config: AgentConfig) -> dict[str, RecipientPublicKey]:
    """Each configured recipient's HPKE public key, checked against its configured KEM."""
    keys: dict[str, RecipientPublicKey] = {}
    for recipient in config.recipients:
        keys[recipient.id] = recipient_key(recipient.key_file, kem=recipient.kem)
    return keys


def broker_config(config: AgentConfig) -> BrokerConfig:
    """The publisher's view of the configured broker (the password read from its file)."""
    broker = config.broker
    try:
        host, port = endpoint(broker.url)
    except ValueError as exc:
        raise ConfigError(f"broker.url: {exc}") from exc
    if broker.ca_file is None:
        raise ConfigError(f"broker.ca_file: required: TLS with a pinned CA ({broker.url})")
    password = None
    if broker.password_file is not None:
        try:
            password = read_broker_password(broker.password_file)
        except OSError as exc:
            raise ConfigError(f"broker.password_file: {broker.password_file}: "
                              f"{exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"broker.password_file: {broker.password_file}: {exc}") from exc
    return BrokerConfig(host=host, port=port, ca_file=broker.ca_file,
                        client_id=f"hems-{config.site_id}", username=broker.username,
                        password=password, client_cert=broker.client_cert,
                        client_key=broker.client_key, protocol=broker.protocol,
                        keepalive=broker.keepalive)


def check_writable(state_dir: Path) -> None:
    """Fail at start-up, naming the cause, when the state directory cannot take a write (a
    read-only remount after SD card errors, a full disk, wrong ownership)."""
    try:
        probe_writable(state_dir)
    except OSError as exc:
        raise OutboxError(f"state directory {state_dir} cannot be written: "
                          f"{exc.strerror or exc}") from exc
