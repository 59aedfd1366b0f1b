"""The three simulated SunSpec devices: which models they carry and how a snapshot fills them.

Scale factors are fixed per device and chosen so a home's range fits the point types with
useful resolution (W in 1 W, currents in 10 mA, voltages in 0.1 V, frequency in 0.01 Hz).
Sign conventions on the wire: meter ``W`` (model 203) is positive when importing; battery
``W`` (model 802) is positive when discharging, like the canonical points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from drivers.models import DeviceIdentity
from drivers.sim.curves import HomeConfig, Snapshot
from drivers.sim.sunspec_image import ModelSpec, SunSpecImage

MANUFACTURER = "HEMS Simulated"


class DeviceKind(StrEnum):
    """Which device a simulator plays."""

    INVERTER = "inverter"  # models 1, 103, 120, 160 (two MPPT modules)
    BATTERY = "battery"  # models 1, 802
    METER = "meter"  # models 1, 203


_MODEL_NAMES = {
    DeviceKind.INVERTER: "SIM-PV5500",
    DeviceKind.BATTERY: "SIM-BAT98",
    DeviceKind.METER: "SIM-MTR3",
}
_SERIAL_PREFIX = {DeviceKind.INVERTER: "PV", DeviceKind.BATTERY: "BT", DeviceKind.METER: "MT"}
VERSION = "1.4.2"


def serial_for(kind: DeviceKind, seed: int, generation: int = 0) -> str:
    """A deterministic fake serial; ``generation`` changes when a device is 'replaced'."""
    return f"SIM{_SERIAL_PREFIX[kind]}{seed % 10000:04d}{generation:04d}"


def _common(identity: DeviceIdentity, unit: int) -> ModelSpec:
    return (1, {"Mn": identity.manufacturer, "Md": identity.model, "Opt": "sim",
                "Vr": identity.version, "SN": identity.serial, "DA": unit})


def _inverter_models(config: HomeConfig) -> list[ModelSpec]:
    rating = round(config.inverter_rating_w)
    inverter = {"A_SF": -2, "V_SF": -1, "W_SF": 0, "Hz_SF": -2, "VA_SF": 0, "VAr_SF": 0,
                "PF_SF": -1, "WH_SF": 0, "DCA_SF": -2, "DCV_SF": -1, "DCW_SF": 0, "Tmp_SF": -1,
                "Evt1": 0, "Evt2": 0}
    nameplate = {"DERTyp": 4, "WRtg": rating, "WRtg_SF": 0, "VARtg": rating, "VARtg_SF": 0,
                 "VArRtgQ1": rating // 2, "VArRtgQ2": rating // 2, "VArRtgQ3": -rating // 2,
                 "VArRtgQ4": -rating // 2, "VArRtg_SF": 0, "ARtg": 2750, "ARtg_SF": -2,
                 "PFRtgQ1": 80, "PFRtgQ2": 80, "PFRtgQ3": -80, "PFRtgQ4": -80, "PFRtg_SF": -2}
    modules = [{"ID": n, "IDStr": f"String {n}", "DCSt": 2, "DCEvt": 0}
               for n in range(1, len(config.mppt_shares) + 1)]
    mppt = {"DCA_SF": -2, "DCV_SF": -1, "DCW_SF": 0, "DCWH_SF": 0, "Evt": 0,
            "N": len(modules), "TmsPer": 0, "module": modules}
    return [(103, inverter), (120, nameplate), (160, mppt)]


def _battery_models(config: HomeConfig) -> list[ModelSpec]:
    battery = {"AHRtg": round(config.battery_capacity_wh / 51.2), "AHRtg_SF": 0,
               "WHRtg": round(config.battery_capacity_wh), "WHRtg_SF": 0,
               "WChaRteMax": round(config.battery_max_charge_w),
               "WDisChaRteMax": round(config.battery_max_discharge_w), "WChaDisChaMax_SF": 0,
               "SoCMax": round(config.soc_max_pct * 10), "SoCMin": round(config.soc_min_pct * 10),
               "SoC_SF": -1, "SoH": 985, "SoH_SF": -1, "LocRemCtl": 1, "AlmRst": 0, "Typ": 4,
               "State": 3, "Evt1": 0, "Evt2": 0, "EvtVnd1": 0, "EvtVnd2": 0, "V_SF": -1,
               "CellV_SF": -3, "A_SF": -1, "AMax_SF": 0, "W_SF": 0, "SetOp": 1,
               "SetInvState": 3}
    return [(802, battery)]


def _meter_models(_: HomeConfig) -> list[ModelSpec]:
    meter = {"A_SF": -2, "V_SF": -1, "Hz_SF": -2, "W_SF": 0, "VA_SF": 0, "PF_SF": -1,
             "TotWh_SF": 0, "Evt": 0, "AphC": 0, "PhVphC": 0, "PhVphBC": 0, "PhVphCA": 0}
    return [(203, meter)]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceDefinition:
    """How to build one kind of device and how to fill it from a snapshot."""

    kind: DeviceKind
    models: Callable[[HomeConfig], list[ModelSpec]]
    update: Callable[[SunSpecImage, Snapshot], None]


def identity_for(kind: DeviceKind, seed: int, generation: int = 0) -> DeviceIdentity:
    """The identity a simulated device reports in its common model."""
    return DeviceIdentity(manufacturer=MANUFACTURER, model=_MODEL_NAMES[kind],
                          serial=serial_for(kind, seed, generation), version=VERSION,
                          protocol="sunspec")


def build_image(kind: DeviceKind, config: HomeConfig, identity: DeviceIdentity, unit: int,
                snapshot: Snapshot) -> SunSpecImage:
    """A complete image for ``kind``, filled from ``snapshot``."""
    definition = DEFINITIONS[kind]
    image = SunSpecImage([_common(identity, unit), *definition.models(config)])
    definition.update(image, snapshot)
    return image


def _set_all(image: SunSpecImage, model_id: int, values: dict[str, float | None],
             index: int | None = None) -> None:
    for name, value in values.items():
        image.set_value(model_id, name, value, index=index)


def update_inverter(image: SunSpecImage, s: Snapshot) -> None:
    """Models 103 and 160 from the PV side of a snapshot."""
    current = s.pv_w / (3 * s.ac_voltage_v)  # three-phase model: a balanced share per phase
    dc_v = sum(s.mppt_v) / len(s.mppt_v)
    _set_all(image, 103, {
        "A": 3 * current, "AphA": current, "AphB": current, "AphC": current,
        "PhVphA": s.ac_voltage_v, "PhVphB": s.ac_voltage_v, "PhVphC": s.ac_voltage_v,
        "W": s.pv_w, "Hz": s.frequency_hz, "VA": s.pv_w, "VAr": 0.0,
        "PF": 100.0 if s.pv_w else None,
        "WH": int(s.pv_wh), "DCA": s.pv_dc_w / dc_v if dc_v else 0.0, "DCV": dc_v,
        "DCW": s.pv_dc_w, "TmpCab": s.inverter_temp_c,
    })
    image.set_raw(103, "St", 4 if s.pv_w > 0 else 2)  # MPPT / SLEEPING
    for n, (watts, volts, wh) in enumerate(zip(s.mppt_w, s.mppt_v, s.mppt_wh, strict=True), 1):
        _set_all(image, 160, {"DCA": watts / volts if volts else 0.0, "DCV": volts,
                              "DCW": watts, "DCWH": int(wh), "Tmp": None}, index=n)
        image.set_raw(160, "DCSt", 4 if watts > 0 else 2, index=n)


def update_battery(image: SunSpecImage, s: Snapshot) -> None:
    """Model 802 from the battery side of a snapshot."""
    volts = 48.0 + 6.0 * s.soc_pct / 100.0
    _set_all(image, 802, {"SoC": s.soc_pct, "V": volts, "A": s.battery_w / volts,
                          "W": s.battery_w})
    charge_state = 3 if s.battery_w > 0 else 4 if s.battery_w < 0 else 6
    image.set_raw(802, "ChaSt", charge_state)  # DISCHARGING / CHARGING / HOLDING


def update_meter(image: SunSpecImage, s: Snapshot) -> None:
    """Model 203 from the grid side of a snapshot (single-phase three-wire: phases A and B)."""
    half_current = s.grid_w / (2 * s.ac_voltage_v)
    _set_all(image, 203, {
        "A": 2 * half_current, "AphA": half_current, "AphB": half_current,
        "PhV": s.ac_voltage_v, "PhVphA": s.ac_voltage_v, "PhVphB": s.ac_voltage_v,
        "PPV": 2 * s.ac_voltage_v, "PhVphAB": 2 * s.ac_voltage_v, "Hz": s.frequency_hz,
        "W": s.grid_w, "WphA": s.grid_w / 2, "WphB": s.grid_w / 2, "WphC": 0.0,
        "TotWhImp": int(s.grid_import_wh), "TotWhExp": int(s.grid_export_wh),
    })


DEFINITIONS: dict[DeviceKind, DeviceDefinition] = {
    DeviceKind.INVERTER: DeviceDefinition(kind=DeviceKind.INVERTER, models=_inverter_models,
                                          update=update_inverter),
    DeviceKind.BATTERY: DeviceDefinition(kind=DeviceKind.BATTERY, models=_battery_models,
                                         update=update_battery),
    DeviceKind.METER: DeviceDefinition(kind=DeviceKind.METER, models=_meter_models,
                                       update=update_meter),
}
