"""``hems-agent doctor``'s checks of the state directory: the outbox is healthy and the consent
ledger's hash chain and signatures are intact (both read, never opened for writing)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.host.check import Check, failed, passed
from agent.paths import LEDGER_FILE, OUTBOX_FILE
from policy import strict_json

if TYPE_CHECKING:
    from agent.config.model import AgentConfig

STALE_OUTBOX_S = 24 * 3600


def outbox_check(config: AgentConfig) -> Check:
    from agent.errors import OutboxError
    from agent.store.outbox import Outbox

    path = config.state_dir / OUTBOX_FILE
    if not path.exists():
        return passed("outbox", "empty (the daemon has not queued anything yet)")
    try:
        outbox = Outbox(path)
        stats = outbox.stats()
        outbox.close()
    except OutboxError as exc:
        return failed("outbox", str(exc), f"stop the agent, move {path} aside, start it again")
    detail = (f"{stats.depth} queued, {stats.bytes} bytes, oldest "
              f"{'-' if stats.oldest_age is None else f'{stats.oldest_age:.0f} s'}, "
              f"drops {dict(stats.drops) or 0}")
    if stats.bytes > 0.9 * config.outbox.max_bytes:
        return failed("outbox", detail + ": nearly full", "get the uplink working (see above)")
    if stats.oldest_age is not None and stats.oldest_age > STALE_OUTBOX_S:
        return failed("outbox", detail + ": nothing has left for a day",
                      "get the uplink working (see above); the backlog then drains by itself")
    return passed("outbox", detail)


def ledger_check(config: AgentConfig) -> Check:
    """Verify the hash chain and the device's signatures read-only (opening a Ledger could
    write a catalogue update the daemon must deliver)."""
    from agent.errors import AgentError
    from policy.errors import PolicyError

    path = config.state_dir / LEDGER_FILE
    fix = "do not edit the ledger; restore it from the last backup and tell the support centre"
    try:
        count = verify_ledger(path, config.device_key_file)
    except FileNotFoundError:
        return failed("consent ledger", f"{path} is missing",
                      "run hems-agent provision: it writes the factory consent defaults")
    except (OSError, ValueError, AttributeError, AgentError) as exc:
        return failed("consent ledger", f"{path}: unreadable: {exc}", fix)
    except PolicyError as exc:
        return failed("consent ledger", str(exc), fix)
    return passed("consent ledger", f"{count} records, hash chain and signatures intact")


def verify_ledger(path: Path, device_key_file: Path) -> int:
    """Check a ledger file's chain, head and signatures (by the device key, current or retired:
    see :func:`agent.wire.keys.device_history_verifier`); its record count."""
    from agent.wire import keys
    from policy.chain import check_chain, check_meta

    current = keys.load_device_key(device_key_file).public_key()
    verify = keys.device_history_verifier(current, keys.retired_device_keys(path.parent))
    raw = strict_json.loads(path.read_bytes())  # a damaged file: JSONRefused, a ValueError
    docs = sorted((int(k), v) for k, v in raw.get("records", {}).items())
    metas = list(raw.get("meta", {}).values())
    check_chain(docs, str(path), verify)
    check_meta(metas[0] if metas else None, docs, str(path), verify)
    return len(docs)
