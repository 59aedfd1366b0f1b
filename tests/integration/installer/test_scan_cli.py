"""``hems-agent scan`` as a process, against a real pymodbus server on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import sunspec2.device as ss_device

from tests.conftest import free_port
from tests.integration.drivers.test_sunspec_pysunspec2 import chain_image, modbus_server


def encoded(model_id: int, data: dict[str, Any]) -> bytes:
    model = ss_device.Model(model_id=model_id, data=data)
    assert not model.error_info, model.error_info
    return bytes(model.get_mb())


def inverter_image() -> list[int]:
    """A PV inverter: common model, three-phase inverter, two MPPT inputs, pysunspec2-encoded."""
    return chain_image([
        encoded(1, {"Mn": "ACME Solar", "Md": "PV-5000", "SN": "SN0042", "Vr": "2.1"}),
        encoded(103, {"W": 4520, "W_SF": -1, "WH": 12345, "WH_SF": 1, "PhVphA": 2301,
                      "V_SF": -1, "Hz": 5001, "Hz_SF": -2, "St": 4, "Evt1": 0}),
        encoded(160, {"DCW_SF": 0, "DCA_SF": -2, "DCV_SF": -1, "DCWH_SF": 0, "N": 2,
                      "module": [{"ID": 1, "DCW": 2100, "DCWH": 500},
                                 {"ID": 2, "DCW": 2300, "DCWH": 0}]}),
    ])


async def scan(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "scan", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_json_document() -> None:
    async with modbus_server({1: {40000: inverter_image()}}) as port:
        code, out, err = await scan("--host", "127.0.0.1", "--port", str(port), "--unit", "1",
                                    "--json")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert list(document) == ["devices"]
    [device] = document["devices"]
    assert list(device) == ["unit", "base", "models", "identity", "points", "readings"]
    assert device["unit"] == 1 and device["base"] == 40000
    assert [m["id"] for m in device["models"]] == [1, 103, 160]
    assert device["models"][0] == {"id": 1, "start": 40002, "length": 66}
    assert device["models"][1]["start"] == 40002 + 68
    assert device["identity"] == {"manufacturer": "ACME Solar", "model": "PV-5000",
                                  "serial": "SN0042", "version": "2.1"}
    assert device["points"]["103"]["W"] == 452.0
    assert device["points"]["103"]["A"] is None  # unimplemented: null, never 65535
    assert [m["DCW"] for m in device["points"]["160"]["module"]] == [2100, 2300]
    assert device["points"]["160"]["module"][1]["DCWH"] is None  # acc32 0: not implemented
    readings = device["readings"]
    assert readings["pv.power"] == {"value": 452.0, "unit": "W"}
    assert readings["pv.energy"] == {"value": 123450.0, "unit": "Wh"}
    assert readings["inverter.state"] == {"value": "MPPT", "unit": ""}
    assert readings["pv.mppt.2.power"] == {"value": 2300.0, "unit": "W"}
    assert readings["inverter.ac_current"]["value"] is None


async def test_text_output_and_a_silent_unit() -> None:
    async with modbus_server({1: {40000: inverter_image()}}) as port:
        code, out, err = await scan("--host", "127.0.0.1", "--port", str(port), "--unit", "1",
                                    "--unit", "7", "--timeout", "0.5")
    assert code == 0
    assert "unit 1: SunSpec at base 40000" in out
    assert "manufacturer=ACME Solar" in out and "serial=SN0042" in out
    assert "    1  40002    66" in out and "  160  " in out
    assert "pv.power" in out and "452.0 W" in out
    assert "module[1].DCW = 2300" in out
    assert "unit 7" in err  # reported, not fatal


async def test_refused_connection_is_one_line_and_non_zero() -> None:
    code, out, err = await scan("--host", "127.0.0.1", "--port", str(free_port()), "--unit", "1")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "connection refused" in err


async def test_bad_host_is_one_line_and_non_zero() -> None:
    code, out, err = await scan("--host", "no-such-host.invalid", "--unit", "1",
                                "--timeout", "3")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no-such-host.invalid" in err


async def test_no_sunspec_marker_is_one_line_and_non_zero() -> None:
    blocks = {0: [0] * 10, 40000: [0x1234] * 10, 50000: [0] * 10}
    async with modbus_server({1: blocks}) as port:
        code, out, err = await scan("--host", "127.0.0.1", "--port", str(port), "--unit", "1")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "no SunSpec marker" in err
    assert "40000, 0, 50000" in err
