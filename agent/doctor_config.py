"""``hems-agent doctor``'s first check: the configuration loads, secrets are private and every
key file it names loads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.doctor_check import Check, failed, passed

if TYPE_CHECKING:
    from agent.config import AgentConfig


def config_checks(path: Path) -> tuple[AgentConfig | None, list[Check]]:
    """The configuration, the secrets' modes and every key file."""
    from agent import keys
    from agent.config import check_secret_permissions, load_config
    from agent.errors import AgentError

    try:
        config = load_config(path, check_secrets=False)
    except AgentError as exc:
        return None, [failed("config valid", str(exc),
                             f"edit {path} or re-run hems-agent provision")]
    checks = [passed("config valid", f"{path}: {len(config.devices)} device(s), "
                                     f"{len(config.recipients)} recipient(s)")]
    try:
        check_secret_permissions(config, path)
        keys.load_device_key(config.device_key_file)
        for recipient in config.recipients:
            keys.load_recipient_public(recipient.key_file)
    except AgentError as exc:
        fix = "re-run hems-agent provision (it rewrites missing keys and sets the modes)"
        if "readable by others" in str(exc) or "accessible by group" in str(exc):
            fix = "chmod 600 the file named (and chown it to the service user)"
        return config, [*checks, failed("secrets", str(exc), fix)]
    return config, [*checks, passed("secrets", "private files 0600, every key file loads")]
