"""``hems-agent doctor``'s device checks: each configured device answers with sane values."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.host.check import Check, failed, passed

if TYPE_CHECKING:
    from agent.installer.scan.range import DeviceProbe


def device_checks(probes: list[DeviceProbe]) -> list[Check]:
    checks = []
    for p in probes:
        name = f"device {p.name}"
        if p.error is not None:
            checks.append(failed(name, f"{p.where}: {p.error}",
                                 "check the device is powered, its cable or Wi-Fi link, and "
                                 "its address, port and unit id (hems-agent scan finds them)"))
        elif p.problems:
            checks.append(failed(name, f"{p.where}: " + "; ".join(p.problems),
                                 "check the device's own display and its register profile"))
        else:
            ident = (p.entry or {}).get("identity", {})
            checks.append(passed(name, f"{p.where}: {ident.get('manufacturer')} "
                                       f"{ident.get('model')}, values plausible"))
    return checks
