"""``hems-agent doctor``'s device checks: each configured device (Modbus, ECHONET Lite or the
B-route smart meter) answers with sane values."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.host.check import Check, failed, passed

if TYPE_CHECKING:
    from agent.installer.scan.range import DeviceProbe

_FIX_UNREACHABLE = {
    "modbus": "check the device is powered, its cable or Wi-Fi link, and its address, port and "
              "unit id (hems-agent scan finds them)",
    "echonet": "check the device is powered and on the same LAN as the gateway, and its address "
               "and eoj in [[echonet_devices]] (hems-agent scan --echonet lists what answers)",
    "broute": "check the module is plugged in at [broute] device, the B-route ID and password "
              "files (as issued by the utility), and the module's placement (near a window, "
              "away from metal); is hems-agent running? it holds the module: stop it first",
}


def protocol_of(probe: DeviceProbe) -> str:
    """``modbus``, ``echonet`` or ``broute`` (from the probe's entry, else its address)."""
    if probe.entry is not None:
        return str(probe.entry.get("protocol", "modbus"))
    if probe.where.startswith("ECHONET Lite"):
        return "echonet"
    if probe.where.startswith("B-route"):
        return "broute"
    return "modbus"


def device_checks(probes: list[DeviceProbe]) -> list[Check]:
    from agent.installer.doctor.echonet import link_text

    checks = []
    for p in probes:
        name = f"device {p.name}"
        if p.error is not None:
            checks.append(failed(name, f"{p.where}: {p.error}",
                                 _FIX_UNREACHABLE[protocol_of(p)]))
        elif p.problems:
            checks.append(failed(name, f"{p.where}: " + "; ".join(p.problems),
                                 "check the device's own display and its register profile"))
        else:
            entry = p.entry or {}
            ident = entry.get("identity", {})
            link = link_text(entry)
            maker = " ".join(str(ident[k]) for k in ("manufacturer", "model") if ident.get(k))
            checks.append(passed(name, f"{p.where}: {maker or 'identity not reported'}, "
                                       "values plausible" + (f"; {link}" if link else "")))
    return checks
