"""``hems-agent doctor``'s checks of the gateway itself: the clock is synchronised and the
systemd unit has its watchdog (also shown in the daemon's health answer)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.host.check import Check, Status, failed, passed

if TYPE_CHECKING:
    from agent.config.model import AgentConfig

UNIT_PATHS = (Path("/etc/systemd/system/hems-agent.service"),
              Path("/lib/systemd/system/hems-agent.service"),
              Path("/usr/lib/systemd/system/hems-agent.service"))


def clock_check(config: AgentConfig) -> Check:
    # lazy: the clock's sync checks load ctypes and subprocess (+3.1 MB, 38 modules)
    from agent.host.clock import make_sync_check

    if config.clock.sync_check == "none":
        return Check(name="clock", status=Status.WARN,
                     detail="not checked (clock.sync_check = none)")
    if make_sync_check(config.clock.sync_check)():
        return passed("clock", "synchronised")
    return failed("clock", "the system clock is not synchronised (readings would wait)",
                  "enable time sync: systemctl enable --now systemd-timesyncd; let NTP "
                  "(UDP 123) out; then wait a minute and run doctor again")


def watchdog_check(unit_file: Path | None) -> Check:
    candidates = [unit_file] if unit_file is not None else list(UNIT_PATHS)
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        return failed("watchdog", "the hems-agent systemd unit is not installed",
                      "install -m 0644 systemd/hems-agent.service /etc/systemd/system/ && "
                      "systemctl daemon-reload")
    text = found.read_text(encoding="utf-8")
    lines = {line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip()
             for line in text.splitlines() if "=" in line and not line.startswith("#")}
    if lines.get("Type") != "notify" or lines.get("WatchdogSec", "0") in ("0", ""):
        return failed("watchdog", f"{found}: needs Type=notify and WatchdogSec=",
                      "reinstall the unit file shipped with the agent")
    return passed("watchdog", f"{found}: WatchdogSec={lines['WatchdogSec']}")
