"""The SK line parsers: what they accept, and that nothing else escapes them but
DeviceProtocolError (fuzzed with a few hundred lines; tests/proof has the long run)."""

from __future__ import annotations

import pytest

from drivers.broute.dialects import BP35C2
from drivers.broute.sk import Pan, parse_epandesc, parse_erxudp, parse_event
from drivers.errors import DeviceProtocolError
from tests.support.fake_sk_module import METER_IP, METER_MAC, OUR_IP
from tests.support.fuzz_broute import cases, check_meter_push

_CASES = cases(100)

test_sk_lines_raise_only_driver_errors = _CASES["sk_lines"]
test_epandesc_fields_raise_only_driver_errors = _CASES["epandesc"]
test_meter_line_handler_never_raises = _CASES["meter_lines"]
test_only_the_meter_secured_is_heard = _CASES["meter_senders"]

DATA = "1081000102880105FF017201E70400000278"


def test_erxudp_fields() -> None:
    rx = parse_erxudp(f"ERXUDP {METER_IP.lower()} {OUR_IP} 0E1A 0E1A {METER_MAC.lower()} 0 "
                      f"0012 {DATA}")
    assert (rx.sender, rx.mac, rx.secured, rx.rport, rx.lport) == (
        METER_IP, METER_MAC, False, 3610, 3610)
    assert rx.data == bytes.fromhex(DATA)
    c2 = parse_erxudp(f"ERXUDP {METER_IP} {OUR_IP} 0E1A 0E1A {METER_MAC} 1 0 0012 {DATA}",
                      BP35C2)
    assert c2.secured and c2.data == rx.data  # BP35C2: the side field before the length


@pytest.mark.parametrize(("line", "error"), [
    (f"ERXUDP {METER_IP} {OUR_IP} 0E1A 0E1A {METER_MAC} 1 {'F' * 3600} 00",
     "data length"),  # once a ValueError from int -> str of a 4,335-digit number
    (f"ERXUDP {METER_IP} {OUR_IP} 0E1A 0E1A {METER_MAC} 1 0013 {DATA}", "says 19 bytes"),
    (f"ERXUDP {METER_IP} {OUR_IP} 0E1A 0E1A {METER_MAC} 1 0002 ZZZZ", "not hex"),
    (f"ERXUDP {METER_IP} {OUR_IP} 0E1A 0E1A {METER_MAC} 2 0012 {DATA}", "secured flag"),
    (f"ERXUDP FE80::1 {OUR_IP} 0E1A 0E1A {METER_MAC} 1 0012 {DATA}", "sender"),
    (f"ERXUDP {METER_IP} {OUR_IP} +E1A 0E1A {METER_MAC} 1 0012 {DATA}", "remote port"),
    (f"ERXUDP {METER_IP} {OUR_IP} 0E1A 0E1A 001C64 1 0012 {DATA}", "sender MAC"),
    (f"ERXUDP {METER_IP} {OUR_IP} 0E1A 0E1A {METER_MAC} 1", "7 fields, need 9 for bp35a1"),
    (f"EVENT 2 {METER_IP}", "EVENT code"),
    ("EVENT 29", "need 3 to 5"),
    (f"EVENT 29 {METER_IP} 0 ZZ", "side or parameter"),
])
def test_malformed_lines_name_the_field(line: str, error: str) -> None:
    with pytest.raises(DeviceProtocolError, match=error) as info:
        parse_erxudp(line) if line.startswith("ERXUDP") else parse_event(line)
    assert METER_IP not in str(info.value) and METER_MAC not in str(info.value)


def test_event_and_epandesc() -> None:
    assert parse_event(f"EVENT 29 {METER_IP}").code == 0x29
    assert parse_event(f"EVENT 21 {METER_IP} 0 00").sender == METER_IP  # BP35C2
    assert parse_epandesc({"Channel": "21", "Pan ID": "8888", "Addr": METER_MAC.lower(),
                           "LQI": "E1"}) == Pan(channel=0x21, pan_id=0x8888, mac=METER_MAC,
                                                lqi=0xE1)
    with pytest.raises(DeviceProtocolError, match="EPANDESC Channel"):
        parse_epandesc({"Channel": "٢١", "Pan ID": "8888", "Addr": METER_MAC})
    with pytest.raises(DeviceProtocolError, match="without Pan ID"):
        parse_epandesc({"Channel": "21", "Addr": METER_MAC})
test_meter_pushes_never_raise = _CASES["meter_pushes"]


def test_a_pushed_timestamp_before_utc_year_1_is_no_reading() -> None:
    # 0001-01-01 00:00 JST: converting it to UTC once raised OverflowError out of the handler.
    check_meter_push(0xEA, bytes([0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1]))
