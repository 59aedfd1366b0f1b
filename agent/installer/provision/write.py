"""Writing ``hems-agent provision``'s checked plan: keys and secrets, copied files, the
configuration as TOML (absolute paths), the consent ledger, then ownership.

Nothing is written before the whole plan is checked; the ledger keeps every existing record and
gets only the written consents not recorded by an earlier run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.installer.provision.checks import ConsentInput, ProvisionError, RecipientInput
from agent.installer.provision.secrets import (
    device_key,
    page_certificate,
    write_pairing_code,
    write_public,
)

if TYPE_CHECKING:
    from agent.config.model import AgentConfig

DEFAULT_OWNER = "hems-agent"


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything the run will write, decided and checked before anything is written."""

    path: Path
    raw: dict[str, Any]
    password: str | None
    files: dict[Path, bytes] = field(default_factory=dict)  # public files
    private: dict[Path, bytes] = field(default_factory=dict)  # 0600 files
    recipients: tuple[RecipientInput, ...] = ()
    consents: tuple[ConsentInput, ...] = ()
    reference: str | None = None
    rotate: bool = False
    grace: timedelta = timedelta(days=7)
    new_pairing: bool = False
    web_tls: bool = False
    owner: str | None = None

    @property
    def conf_dir(self) -> Path:
        return self.path.parent


def apply_plan(plan: Plan) -> dict[str, Any]:
    """Write everything (the layout is in :mod:`agent.installer.provision.plan`); returns what the
    installer must see."""
    from agent.config_checks import load_checked, state_dir_problem
    from agent.errors import AgentError
    from agent.wire import keys

    state = Path(plan.raw["state_dir"])
    problem = state_dir_problem(state)
    if problem is not None:  # refused before anything is written, as run would refuse it
        raise ProvisionError(f"{plan.path}: state_dir: {state}: {problem}")
    try:
        for directory in (plan.conf_dir, plan.conf_dir / "recipients", state / "keys"):
            directory.mkdir(parents=True, exist_ok=True)
        state.chmod(0o700)
        outcome = device_key(Path(plan.raw["device_key_file"]), state, rotate=plan.rotate,
                             grace=plan.grace)
        for target, data in plan.files.items():
            write_public(target, data)
        for target, data in plan.private.items():
            keys.write_private_file(target, data)
        if plan.password is not None:
            keys.write_private_file(Path(plan.raw["broker"]["password_file"]),
                                    plan.password.encode() + b"\n")
        if plan.new_pairing:
            outcome["pairing_code"] = write_pairing_code(Path(plan.raw["web"]["pairing_hash_file"]))
        if plan.web_tls and not Path(plan.raw["web"]["tls_key"]).exists():
            page_certificate(plan.raw["web"])
        write_public(plan.path, to_toml(plan.raw).encode("utf-8"))
        config = load_checked(plan.path)  # what check-config and run check
        outcome["consent"] = _ledger(plan, config)
        _chown(plan, config)
    except (AgentError, OSError) as exc:
        raise ProvisionError(f"writing failed: {exc}") from exc
    outcome["config"] = str(plan.path)
    return outcome


def _ledger(plan: Plan, config: AgentConfig) -> list[str]:
    """Open (or create, with the catalogue's defaults) the ledger; record written consents."""
    from agent.paths import LEDGER_FILE
    from agent.store.catalogue import newest_catalogue
    from agent.wire.keys import device_history_verifier, load_device_key, retired_device_keys
    from policy.catalogue import load_catalogue
    from policy.ledger import Ledger
    from policy.tiers import parse

    now = datetime.now(UTC)
    device = load_device_key(config.device_key_file)
    state_dir = config.state_dir
    verify = device_history_verifier(device.public_key(), retired_device_keys(state_dir))
    catalogue = newest_catalogue(load_catalogue(config.catalogue), state_dir)
    ledger = Ledger.open(state_dir / LEDGER_FILE, catalogue, config.site_id, now,
                         sign=device.sign, verify=verify)
    recorded = []
    try:
        state = ledger.state()
        for c in plan.consents:
            current = state.get((c.purpose, c.recipient))
            if (current is not None and current.tier == parse(c.tier)
                    and current.data.get("reference") == plan.reference):
                continue  # the same form recorded by an earlier run
            ledger.set_grant(c.purpose, c.recipient, c.tier, source="installer",
                             reference=plan.reference, now=now)
            recorded.append(f"{c.purpose}:{c.recipient}={c.tier}")
    finally:
        ledger.close()
    return recorded


def _chown(plan: Plan, config: AgentConfig) -> None:
    ids = owner_ids(plan.owner)
    if ids is None:
        return
    for secret in config.secret_files():
        os.chown(secret, *ids)
    for root, dirs, names in os.walk(config.state_dir):
        for name in [*dirs, *names]:
            os.chown(Path(root) / name, *ids)
    os.chown(config.state_dir, *ids)


def to_toml(raw: dict[str, Any]) -> str:
    """The configuration as TOML: scalars first, then tables, then arrays of tables."""
    lines = ["# Written by hems-agent provision; re-run it to change a setting (it keeps the",
             "# rest). Relative paths are relative to this file's directory."]
    lines += [f"{k} = {_scalar(v)}" for k, v in raw.items()
              if not isinstance(v, dict | list) and v is not None]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]", *(f"{kk} = {_scalar(vv)}" for kk, vv in v.items()
                                      if vv is not None)]
    for k, v in raw.items():
        if isinstance(v, list):
            for item in v:
                lines += ["", f"[[{k}]]", *(f"{kk} = {_scalar(vv)}" for kk, vv in item.items()
                                            if vv is not None)]
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def owner_ids(owner: str | None) -> tuple[int, int] | None:
    """(uid, gid) to chown secrets and state to, when running as root; None otherwise.

    ``owner`` None: no chown; ``""``: the service user if it exists."""
    import pwd

    if os.geteuid() != 0 or owner is None:
        return None
    try:
        entry = pwd.getpwnam(owner or DEFAULT_OWNER)
    except KeyError:
        if owner:
            raise ProvisionError(f"--owner {owner}: no such user") from None
        return None
    return entry.pw_uid, entry.pw_gid
