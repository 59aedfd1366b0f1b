"""The canonical point names every driver produces (data, not code paths).

A name is ``<domain>.<quantity>``; repeating inputs add an index: ``pv.mppt.2.power``.
Signs: ``grid.power`` is positive when importing from the grid, negative when exporting;
``battery.power`` is positive when discharging, negative when charging.
Domains map to the purpose catalogue's data categories in ``policy``.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.models import PointKind


@dataclass(frozen=True, slots=True, kw_only=True)
class PointSpec:
    name: str
    kind: PointKind
    unit: str
    domain: str
    description: str


_P = PointKind
_SPECS: tuple[PointSpec, ...] = (
    # photovoltaic generation
    PointSpec(name="pv.power", kind=_P.POWER, unit="W", domain="pv",
              description="PV generation (AC side of the inverter)"),
    PointSpec(name="pv.energy", kind=_P.ENERGY, unit="Wh", domain="pv",
              description="PV generation, lifetime counter"),
    PointSpec(name="pv.dc_power", kind=_P.POWER, unit="W", domain="pv",
              description="PV DC input power"),
    PointSpec(name="pv.dc_voltage", kind=_P.GAUGE, unit="V", domain="pv",
              description="PV DC input voltage"),
    PointSpec(name="pv.dc_current", kind=_P.GAUGE, unit="A", domain="pv",
              description="PV DC input current"),
    PointSpec(name="pv.energy_sold", kind=_P.ENERGY, unit="Wh", domain="pv",
              description="PV energy sold to the grid, lifetime counter (ECHONET Lite)"),
    # inverter (AC side, status)
    PointSpec(name="inverter.ac_voltage", kind=_P.GAUGE, unit="V", domain="inverter",
              description="AC voltage (phase A or line-to-neutral)"),
    PointSpec(name="inverter.ac_current", kind=_P.GAUGE, unit="A", domain="inverter",
              description="AC current, total"),
    PointSpec(name="inverter.frequency", kind=_P.GAUGE, unit="Hz", domain="inverter",
              description="AC frequency"),
    PointSpec(name="inverter.power_factor", kind=_P.GAUGE, unit="%", domain="inverter",
              description="Power factor"),
    PointSpec(name="inverter.temperature", kind=_P.GAUGE, unit="Cel", domain="inverter",
              description="Cabinet or heat-sink temperature"),
    PointSpec(name="inverter.rated_power", kind=_P.INFO, unit="W", domain="inverter",
              description="Nameplate continuous power rating"),
    PointSpec(name="inverter.state", kind=_P.STATE, unit="", domain="inverter",
              description="Operating state (off, sleeping, starting, mppt, throttled, fault, ...)"),
    PointSpec(name="inverter.events", kind=_P.EVENT, unit="", domain="inverter",
              description="Active fault and alarm flags"),
    # battery
    PointSpec(name="battery.power", kind=_P.POWER, unit="W", domain="battery",
              description="Battery power, positive when discharging"),
    PointSpec(name="battery.soc", kind=_P.LEVEL, unit="%", domain="battery",
              description="State of charge"),
    PointSpec(name="battery.soh", kind=_P.LEVEL, unit="%", domain="battery",
              description="State of health"),
    PointSpec(name="battery.energy_charged", kind=_P.ENERGY, unit="Wh", domain="battery",
              description="Energy charged into the battery, lifetime counter"),
    PointSpec(name="battery.energy_discharged", kind=_P.ENERGY, unit="Wh", domain="battery",
              description="Energy discharged from the battery, lifetime counter"),
    PointSpec(name="battery.energy_available", kind=_P.LEVEL, unit="Wh", domain="battery",
              description="Energy remaining in the battery"),
    PointSpec(name="battery.capacity", kind=_P.INFO, unit="Wh", domain="battery",
              description="Nameplate energy capacity"),
    PointSpec(name="battery.voltage", kind=_P.GAUGE, unit="V", domain="battery",
              description="Battery DC voltage"),
    PointSpec(name="battery.temperature", kind=_P.GAUGE, unit="Cel", domain="battery",
              description="Battery temperature"),
    PointSpec(name="battery.state", kind=_P.STATE, unit="", domain="battery",
              description="Operating state (idle, charging, discharging, fault, ...)"),
    PointSpec(name="battery.mode", kind=_P.STATE, unit="", domain="battery",
              description="Operation mode the battery is set to (automatic, charging, standby, "
              "...; ECHONET Lite)"),
    PointSpec(name="battery.events", kind=_P.EVENT, unit="", domain="battery",
              description="Active fault and alarm flags"),
    # grid connection point (meter)
    PointSpec(name="grid.power", kind=_P.POWER, unit="W", domain="grid",
              description="Power at the grid connection, positive when importing"),
    PointSpec(name="grid.energy_import", kind=_P.ENERGY, unit="Wh", domain="grid",
              description="Energy imported from the grid, lifetime counter"),
    PointSpec(name="grid.energy_export", kind=_P.ENERGY, unit="Wh", domain="grid",
              description="Energy exported to the grid, lifetime counter"),
    PointSpec(name="grid.voltage", kind=_P.GAUGE, unit="V", domain="grid",
              description="Grid voltage (phase A or line-to-neutral)"),
    PointSpec(name="grid.frequency", kind=_P.GAUGE, unit="Hz", domain="grid",
              description="Grid frequency"),
    # household consumption (measured by a load meter, or derived)
    PointSpec(name="load.power", kind=_P.POWER, unit="W", domain="load",
              description="Household consumption"),
    PointSpec(name="load.energy", kind=_P.ENERGY, unit="Wh", domain="load",
              description="Household consumption, lifetime counter"),
    # device identity (equipment information)
    PointSpec(name="device.manufacturer", kind=_P.INFO, unit="", domain="device",
              description="Manufacturer as reported by the device"),
    PointSpec(name="device.model", kind=_P.INFO, unit="", domain="device",
              description="Model as reported by the device"),
    PointSpec(name="device.serial", kind=_P.INFO, unit="", domain="device",
              description="Serial number (equipment information: only to purposes that list it)"),
    PointSpec(name="device.version", kind=_P.INFO, unit="", domain="device",
              description="Firmware version"),
)

POINTS: dict[str, PointSpec] = {spec.name: spec for spec in _SPECS}
MPPT_QUANTITIES: dict[str, PointSpec] = {
    "power": PointSpec(name="pv.mppt.{n}.power", kind=_P.POWER, unit="W", domain="pv",
                       description="DC power of MPPT input n (1-based)"),
    "voltage": PointSpec(name="pv.mppt.{n}.voltage", kind=_P.GAUGE, unit="V", domain="pv",
                         description="DC voltage of MPPT input n"),
    "current": PointSpec(name="pv.mppt.{n}.current", kind=_P.GAUGE, unit="A", domain="pv",
                         description="DC current of MPPT input n"),
    "energy": PointSpec(name="pv.mppt.{n}.energy", kind=_P.ENERGY, unit="Wh", domain="pv",
                        description="Lifetime energy of MPPT input n"),
}


def spec(name: str) -> PointSpec:
    """Return the spec of a canonical point, including indexed MPPT points."""
    found = POINTS.get(name)
    if found is not None:
        return found
    parts = name.split(".")
    if len(parts) == 4 and parts[:2] == ["pv", "mppt"] and parts[2].isdigit():
        template = MPPT_QUANTITIES.get(parts[3])
        if template is not None:
            return PointSpec(name=name, kind=template.kind, unit=template.unit,
                             domain=template.domain, description=template.description)
    raise KeyError(f"unknown canonical point {name!r}")
