"""ECHONET Lite frame and property-map codec, against frames published in documentation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.echonet.codec import (
    Eoj,
    Esv,
    Frame,
    Property,
    decode,
    decode_instance_list,
    decode_property_map,
    encode,
    encode_instance_list,
    encode_property_map,
)
from drivers.errors import DeviceProtocolError

# Frames printed in documentation, byte for byte. Sources:
#  NEL = futomi/node-echonet-lite, README.md, "Monitoring ECHONET Lite packets" (a LAN
#        discovery: multicast Get of 0xD6 and a home air conditioner's Get_Res) and the
#        "data-serial event" section (a B-route smart meter answering a Get of 0x9E).
RECORDED = {
    "nel_get_d6": ("NEL", "1081000105FF010EF0006201D600"),
    "nel_get_res_d6": ("NEL", "108100010EF00105FF017201D60401013001"),
    "nel_broute_get_9e": ("NEL", "1081001A05FF0102880162019E00"),
    "nel_broute_get_res_9e": ("NEL", "1081001A02880105FF0172019E040381E5ED"),
}


def _frame(name: str) -> bytes:
    return bytes.fromhex(RECORDED[name][1])


def test_recorded_discovery_request() -> None:
    frame = decode(_frame("nel_get_d6"))
    assert frame == Frame(tid=1, seoj=Eoj(class_code=0x05FF, instance=1),
                          deoj=Eoj(class_code=0x0EF0, instance=0), esv=Esv.GET,
                          properties=(Property(epc=0xD6),))
    assert encode(frame) == _frame("nel_get_d6")


def test_recorded_instance_list_response() -> None:
    frame = decode(_frame("nel_get_res_d6"))
    assert frame.esv is Esv.GET_RES
    assert str(frame.seoj) == "0x0EF001"
    assert decode_instance_list(frame.values()[0xD6]) == (Eoj(class_code=0x0130, instance=1),)


def test_recorded_broute_property_map() -> None:
    request, response = decode(_frame("nel_broute_get_9e")), decode(_frame("nel_broute_get_res_9e"))
    assert (request.tid, response.tid) == (0x1A, 0x1A)
    assert response.seoj == Eoj(class_code=0x0288, instance=1)
    assert decode_property_map(response.values()[0x9E]) == {0x81, 0xE5, 0xED}


def test_bitmap_property_map_layout() -> None:
    # APPENDIX / Part II, property map description format 2: bit b of byte i is 0x80+i+0x10*b.
    epcs = {0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x8C, 0x8D, 0x9D, 0x9E, 0x9F,
            0xD3, 0xE0, 0xE1, 0xE7, 0xEA, 0xFF}
    edt = encode_property_map(epcs)
    assert len(edt) == 17 and edt[0] == 17
    assert edt[1] == 0b0100_0001  # low nibble 0: 0x80 (bit 0) and 0xE0 (bit 6)
    assert edt[1 + 0x0F] & 0b1000_0000  # 0xFF: low nibble F, high nibble F -> bit 7
    assert decode_property_map(edt) == epcs


@given(st.sets(st.integers(min_value=0x80, max_value=0xFF), min_size=1))
def test_property_map_round_trip(epcs: set[int]) -> None:
    edt = encode_property_map(epcs)
    assert (len(edt) == 17) == (len(epcs) >= 16)
    assert decode_property_map(edt) == epcs


@pytest.mark.parametrize(("edt", "message"), [
    (b"", "empty property map"),
    (bytes([3, 0x80, 0x81]), "lists 3 EPCs"),
    (bytes([2, 0x80, 0x80]), "duplicate"),
    (bytes([16]) + bytes(15), "must be 17 bytes"),
    (bytes([16]) + bytes(16), "sets 0 bits"),
])
def test_bad_property_maps(edt: bytes, message: str) -> None:
    with pytest.raises(DeviceProtocolError, match=message):
        decode_property_map(edt)


@pytest.mark.parametrize(("hexdata", "message"), [
    ("1081000105FF010EF00062", "too short: 11 bytes"),
    ("1082000105FF010EF0006201D600", "not an ECHONET Lite format-1 frame"),
    ("1081000105FF010EF000FF01D600", "unknown ESV 0xFF"),
    ("1081000105FF010EF0006202D600", "ends inside property 2 of 2"),
    ("108100010EF00105FF017201D60501013001", "declares PDC 5 but only 4"),
    ("1081000105FF010EF0006201D60000", "1 unexpected bytes"),
])
def test_garbled_frames_are_named(hexdata: str, message: str) -> None:
    with pytest.raises(DeviceProtocolError, match=message):
        decode(bytes.fromhex(hexdata))


def test_setget_carries_two_lists() -> None:
    frame = Frame(tid=7, seoj=Eoj(class_code=0x05FF, instance=1),
                  deoj=Eoj(class_code=0x027D, instance=0x1F), esv=Esv.SETGET_SNA,
                  properties=(Property(epc=0xDA, edt=b"\x44"),),
                  properties_get=(Property(epc=0xE4),))
    assert decode(encode(frame)) == frame


def test_instance_list_round_trip_and_errors() -> None:
    eojs = (Eoj(class_code=0x0279, instance=0x1F), Eoj(class_code=0x027D, instance=2))
    assert decode_instance_list(encode_instance_list(eojs)) == eojs
    with pytest.raises(DeviceProtocolError, match="says 2 objects"):
        decode_instance_list(bytes([2, 2, 0x79, 1]))


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_but_protocol_errors(data: bytes) -> None:
    try:
        frame = decode(data)
    except DeviceProtocolError:
        return
    assert encode(frame) == data
