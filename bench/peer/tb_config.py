"""Configuration files for the ThingsBoard IoT Gateway (3.8) reading the simulated inverters.

Written as its documentation describes the Modbus connector: one slave per device, a
``timeseries`` entry per key, polled every second. Two layouts of the same SunSpec model 103
points:

- ``per-point``: one key per point (scale factors are points too), each read on its own;
- ``range``: one key per register over the model's whole block, with the address written as a
  range (``"40072-40121"``) and ``maxRegistersPerRequest`` splitting it into reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drivers.sim.devices import DeviceKind
from drivers.sim.server import SimHome, SimulatedDevice

_TB_TYPES = {"int16": "16int", "sunssf": "16int", "uint16": "16uint", "enum16": "16uint",
             "acc16": "16uint", "bitfield16": "16uint", "int32": "32int", "acc32": "32uint",
             "uint32": "32uint", "bitfield32": "32uint", "string": "string"}


def model_103_points() -> list[tuple[str, int, int, str]]:
    """(name, address, registers, SunSpec type) of model 103's points, header excluded."""
    device = SimulatedDevice(DeviceKind.INVERTER, SimHome())
    return [(p.name, p.address, p.size, p.type) for p in device.image.points()
            if p.model_id == 103 and p.name not in ("ID", "L")]


def timeseries(layout: str, max_registers: int = 16) -> list[dict[str, Any]]:
    """The connector's ``timeseries`` list for one inverter."""
    points = model_103_points()
    if layout == "per-point":
        return [{"tag": name, "type": _TB_TYPES[kind], "functionCode": 3, "address": address,
                 "objectsCount": size} for name, address, size, kind in points]
    first, last = points[0][1], points[-1][1] + points[-1][2] - 1
    return [{"tag": "r${address}", "type": "16uint", "functionCode": 3,
             "address": f"{first}-{last}", "objectsCount": 1,
             "maxRegistersPerRequest": max_registers}]


def modbus_json(ports: list[int], layout: str, max_registers: int = 16) -> dict[str, Any]:
    series = timeseries(layout, max_registers)
    slaves = [{"host": "127.0.0.1", "port": port, "type": "tcp", "method": "socket",
               "unitId": 1, "deviceName": f"inverter-{n}", "deviceType": "inverter",
               "timeout": 5, "byteOrder": "BIG", "wordOrder": "BIG", "retries": 0,
               "retryOnEmpty": False, "retryOnInvalid": False, "pollPeriod": 1000,
               "connectAttemptTimeMs": 1000, "connectAttemptCount": 5,
               "waitAfterFailedAttemptsMs": 5000, "attributes": [], "timeseries": series,
               "attributeUpdates": [], "rpc": []}
              for n, port in enumerate(ports)]
    return {"master": {"slaves": slaves}}


def gateway_json(mqtt_port: int, connectors: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "thingsboard": {
            "host": "127.0.0.1", "port": mqtt_port, "remoteShell": False,
            "remoteConfiguration": False, "latencyDebugMode": False,
            "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600,
                           "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False, "filterFile": "list.json"},
            "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 60, "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": "bench"}, "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False,
                                       "inactivityTimeoutSeconds": 300,
                                       "inactivityCheckPeriodSeconds": 10},
        },
        "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
        "grpc": {"enabled": False},
        "connectors": connectors,
    }


def logs_json(log_dir: Path) -> dict[str, Any]:
    """Warnings and errors only, to files under ``log_dir`` (created beforehand)."""
    handler = {"class": "logging.handlers.RotatingFileHandler", "formatter": "plain",
               "filename": str(log_dir / "gateway.log"), "maxBytes": 10_000_000,
               "backupCount": 1, "level": "WARNING"}
    loggers = {name: {"handlers": ["file"], "level": "WARNING", "propagate": False}
               for name in ("service", "connector", "converter", "tb_connection", "storage",
                            "extension", "statistics")}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
            "handlers": {"file": handler}, "loggers": loggers,
            "root": {"level": "WARNING", "handlers": ["file"]}}


def write_config(directory: Path, *, mqtt_port: int, ports: list[int], layout: str,
                 max_registers: int = 16) -> Path:
    """Write tb_gateway.json, logs.json and modbus.json into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)
    connectors = [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}] \
        if ports else []
    files = {"tb_gateway.json": gateway_json(mqtt_port, connectors),
             "logs.json": logs_json(directory / "logs"),
             "modbus.json": modbus_json(ports, layout, max_registers)}
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
    return directory
