"""Modbus TCP devices that send broken or misaddressed replies (tests/support/hostile_modbus.py):
the transport refuses each one as a protocol error without decoding it, the next read works, and
no log line, of ours or of a library, carries what the refused frames held."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from drivers.errors import DeviceProtocolError
from drivers.sim.devices import DeviceKind
from drivers.sim.server import SimHome, SimulatedDevice
from drivers.transport import Bus
from tests.integration.drivers.test_sunspec_pysunspec2 import chain_image
from tests.integration.installer.test_scan_cli import encoded, scan
from tests.support.hostile_modbus import Fault, HostileUnit, hostile_server
from tests.support.rtu_line import Direction, Piece, rtu_line

SECRET = [0x7A69, 0x4B1D, 0x5EC2, 0x3A7F]  # registers the device sends: 31337, 19229, ...


def secret_forms(values: list[int]) -> list[str]:
    """How register values could show in a log: decimal, or as pymodbus dumps frames."""
    forms = []
    for value in values:
        high, low = divmod(value, 256)
        forms += [str(value), f"{hex(high)} {hex(low)}"]
    return forms


def assert_no_secret(text: str, values: list[int]) -> None:
    leaked = [form for form in secret_forms(values) if form in text.lower()]
    assert not leaked, f"device data in the output: {leaked}"


REFUSALS = [
    (Fault.TID_ZERO, "transaction id 0, the request's was 1"),
    (Fault.WRONG_TID, "transaction id 2, the request's was 1"),
    (Fault.WRONG_UNIT, "from unit 200, the request was for unit 1"),
    (Fault.LONG_BYTE_COUNT, "byte count 255 for 8 bytes of registers"),
    (Fault.GARBAGE, "not a Modbus TCP reply"),
]


@pytest.mark.parametrize(("fault", "reason"), REFUSALS, ids=[f for f, _ in REFUSALS])
async def test_a_broken_reply_is_a_protocol_error_and_the_next_read_works(
        fault: Fault, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    unit = HostileUnit(dict(enumerate(SECRET)), fault=fault)
    async with hostile_server({1: unit}) as server, \
            Bus.tcp("127.0.0.1", server.port, timeout=1.0) as bus:
        with pytest.raises(DeviceProtocolError, match=reason) as info:
            await bus.read_holding(0, 4, unit=1)
        assert info.value.exception_code is None
        assert not bus.connected  # the stream is not trusted past a broken frame
        assert_no_secret(str(info.value), SECRET)
        unit.fault = Fault.NONE
        assert await bus.read_holding(0, 4, unit=1) == SECRET
        assert server.connections == 2 and unit.spoiled == 1
        assert (bus.requests, bus.failures) == (2, 1)
    assert_no_secret(caplog.text, SECRET)
    assert not [r for r in caplog.records if r.name.startswith(("pymodbus", "asyncio"))]


async def test_a_hostile_device_does_not_disturb_a_good_one_on_another_bus() -> None:
    hostile = HostileUnit(dict(enumerate(SECRET)), fault=Fault.TID_ZERO)
    good = HostileUnit({0: 1, 1: 2})
    async with hostile_server({1: hostile}) as bad_server, hostile_server({1: good}) as server, \
            Bus.tcp("127.0.0.1", bad_server.port) as bad_bus, \
            Bus.tcp("127.0.0.1", server.port) as good_bus:
        for _ in range(3):
            with pytest.raises(DeviceProtocolError, match="transaction id 0"):
                await bad_bus.read_input(0, 4, unit=1)
            assert await good_bus.read_input(0, 2, unit=1) == [1, 2]


async def test_a_reply_to_a_read_of_unit_0_must_come_from_unit_0() -> None:
    # pymodbus skips its own unit check for unit 0 (a broadcast on RTU); on TCP a gateway
    # answers with the unit id it was asked for, so anything else is refused too.
    unit = HostileUnit(dict(enumerate(SECRET)), fault=Fault.WRONG_UNIT)
    async with hostile_server({0: unit}) as server, Bus.tcp("127.0.0.1", server.port) as bus:
        with pytest.raises(DeviceProtocolError, match="from unit 200, the request was for unit 0"):
            await bus.read_holding(0, 4, unit=0)


async def test_an_rtu_frame_pymodbus_cannot_decode_is_a_protocol_error(
        caplog: pytest.LogCaptureFixture) -> None:
    """An intact RTU frame (valid CRC) of function 17 with an empty body makes pymodbus's decoder
    raise inside ``data_received``; the transport contains it."""
    caplog.set_level(logging.DEBUG)
    spoil = [True]

    def forge(frame: bytes, direction: Direction) -> list[Piece]:
        if direction is Direction.REQUEST or not spoil or not spoil.pop():
            return [(0.0, frame)]
        body = bytes((frame[0], 0x11, 0x00))
        return [(0.0, body + FramerRTU.compute_CRC(body).to_bytes(2, "big"))]

    meter = SimulatedDevice(DeviceKind.METER, SimHome(wall=lambda: 0.0), unit=1)
    async with rtu_line([meter], forge) as relay, \
            Bus.serial(relay.client_path, timeout=1.0, gap=0.0) as bus:
        with pytest.raises(DeviceProtocolError, match="undecodable reply of 5 bytes"):
            await bus.read_holding(40000, 2, unit=1)
        assert await bus.read_holding(40000, 2, unit=1) == [0x5375, 0x6E53]  # "SunS"
    assert not [r for r in caplog.records if r.name.startswith(("pymodbus", "asyncio"))]


def test_asyncio_reports_of_a_library_exception_carry_no_frame() -> None:
    """A traceback raised inside pymodbus (e.g. from an RTU frame it cannot decode) reaches the
    log as one line naming the exception type, without the traceback or its message."""
    import drivers.transport  # noqa: F401  (installs the filter)

    broken = bytes.fromhex("0001 0000 0007 01 03 ff") + bytes((0x7A, 0x69, 0x4B, 0x1D))
    with pytest.raises(Exception) as info:
        FramerSocket(DecodePDU(False)).handleFrame(broken, 1, 1)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("asyncio")
    keep = Keep()
    logger.addHandler(keep)
    try:
        logger.error("Fatal error: protocol.data_received() call failed.\nprotocol: %r",
                     broken, exc_info=info.value)
    finally:
        logger.removeHandler(keep)
    [record] = records
    line = logging.Formatter().format(record)
    assert "ModbusIOException" in line and "Traceback" not in line
    assert_no_secret(line, SECRET)


# -- the whole scan command against hostile devices ------------------------------------------

HOSTILE_UNITS = {1: Fault.TID_ZERO, 2: Fault.WRONG_TID, 3: Fault.WRONG_UNIT,
                 4: Fault.LONG_BYTE_COUNT, 5: Fault.GARBAGE}
GOOD_UNIT = 9


def serial_of(unit: int) -> str:
    return f"GOOD-SN-{unit}" if unit == GOOD_UNIT else f"HOSTILE-SN-{unit}-QX"


def power_of(unit: int) -> int:
    return 31000 + unit  # W, scale factor 0; below the ephemeral ports, so no chance match


def sunspec_image(unit: int) -> dict[int, int]:
    image = chain_image([
        encoded(1, {"Mn": "Hostile Works", "Md": "HW-1", "SN": serial_of(unit), "Vr": "1"}),
        encoded(103, {"W": power_of(unit), "W_SF": 0, "St": 4, "Evt1": 0}),
    ])
    return {40000 + i: r for i, r in enumerate(image)}


def text_forms(text: str) -> list[str]:
    data = text.encode("ascii")
    return [text.lower(), " ".join(hex(b) for b in data), data.hex()]


async def test_scan_of_hostile_devices_prints_nothing_they_sent() -> None:
    def model_reads(_address: int, count: int) -> bool:
        return count > 2  # discovery's marker and header reads pass; the models are spoiled

    units = {unit: HostileUnit(sunspec_image(unit), fault=fault, spoils=model_reads)
             for unit, fault in HOSTILE_UNITS.items()}
    units[GOOD_UNIT] = HostileUnit(sunspec_image(GOOD_UNIT))
    async with hostile_server(units) as server:
        unit_args = [arg for unit in units for arg in ("--unit", str(unit))]
        code, out, err = await scan("--host", "127.0.0.1", "--port", str(server.port),
                                    "--timeout", "1", *unit_args)
    assert all(units[u].spoiled >= 1 for u in HOSTILE_UNITS)  # their data went on the wire
    assert code == 0, err
    assert f"serial={serial_of(GOOD_UNIT)}" in out and f"{power_of(GOOD_UNIT)}" in out
    output = (out + err).lower()
    for unit in HOSTILE_UNITS:
        leaked = [form for form in text_forms(serial_of(unit)) if form in output]
        assert not leaked, f"unit {unit}'s serial in the scan's output: {leaked}"
        assert_no_secret(output, [power_of(unit)])
        assert f"note: unit {unit}: " in err
    assert "traceback" not in output
    assert err.count("\n") == len(HOSTILE_UNITS), err  # one note per refused unit, nothing else


@pytest.fixture
def daemon_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The daemon's log set-up (logfmt to stdout, at debug), into a buffer; undone afterwards."""
    from agent.logs import setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level
              for name in ("pymodbus", "pymodbus.logging", "aiomqtt", "paho", "uvicorn",
                           "asyncio")}
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    setup_logging("debug")
    try:
        yield stdout
    finally:
        root.handlers[:], root.level = saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("fault", [f for f, _ in REFUSALS], ids=[f for f, _ in REFUSALS])
async def test_the_daemons_log_at_debug_holds_no_refused_frame(
        fault: Fault, daemon_log: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
    unit = HostileUnit(dict(enumerate(SECRET)), fault=fault)
    async with hostile_server({1: unit}) as server, \
            Bus.tcp("127.0.0.1", server.port, timeout=1.0) as bus:
        with pytest.raises(DeviceProtocolError):
            await bus.read_holding(0, 4, unit=1)
    out = daemon_log.getvalue()
    err = capsys.readouterr().err
    assert "level=debug logger=drivers.transport" in out  # the log was live
    assert_no_secret(out + err, SECRET)
    assert "pymodbus" not in out + err
