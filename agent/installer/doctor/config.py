"""``hems-agent doctor``'s first checks: the configuration loads, and every file and directory
it names passes the checks ``run`` makes before it starts (:mod:`agent.config_checks`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.host.check import Check, failed, passed

if TYPE_CHECKING:
    from agent.config.model import AgentConfig


def config_checks(path: Path) -> tuple[AgentConfig | None, list[Check]]:
    """The configuration, the secrets' modes, every key file and the state directory."""
    from agent.config.model import load_config
    from agent.config_checks import config_problems, device_count
    from agent.errors import AgentError

    try:
        config = load_config(path, check_secrets=False)
    except AgentError as exc:
        return None, [failed("config valid", str(exc),
                             f"edit {path} or re-run hems-agent provision")]
    checks = [passed("config valid", f"{path}: {device_count(config)}, "
                                     f"{len(config.recipients)} recipient(s)")]
    problems = config_problems(config)
    if problems:
        fix = "re-run hems-agent provision (it rewrites missing keys and sets the modes)"
        if any("readable by others" in p for p in problems):
            fix = "chmod 600 the file named (and chown it to the service user)"
        detail = "\n".join(f"{path}: {p}" for p in problems)
        return config, [*checks, failed("secrets", detail, fix)]
    return config, [*checks, passed("secrets", "private files 0600, every file named loads, "
                                                "state directory writable")]
