"""The Modbus TCP framer's checks on received bytes, without I/O: what it takes, what it waits
for, and the reason it gives for what it refuses."""

from __future__ import annotations

import struct

import pytest
from pymodbus.pdu import DecodePDU

from drivers.framing import StrictSocketFramer


def mbap(pdu: bytes, *, tid: int = 7, unit: int = 1, protocol: int = 0,
         length: int | None = None) -> bytes:
    size = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", tid, protocol, size, unit) + pdu


READ = bytes((3, 4, 0x12, 0x34, 0x56, 0x78))  # read holding: 2 registers


def take(data: bytes) -> tuple[int, object, list[str]]:
    refused: list[str] = []
    used, pdu = StrictSocketFramer(DecodePDU(False), refused.append).handleFrame(data, 1, 7)
    return used, pdu, refused


def test_the_answer_to_the_pending_request_is_taken() -> None:
    used, pdu, refused = take(mbap(READ))
    assert (used, refused) == (len(mbap(READ)), [])
    assert getattr(pdu, "registers", None) == [0x1234, 0x5678]
    assert (getattr(pdu, "transaction_id", None), getattr(pdu, "dev_id", None)) == (7, 1)


@pytest.mark.parametrize("cut", [0, 3, 6, 7, 10])
def test_a_partial_reply_is_waited_for(cut: int) -> None:
    assert take(mbap(READ)[:cut]) == (0, None, [])


@pytest.mark.parametrize(("data", "reason"), [
    (mbap(READ, tid=0), "transaction id 0, the request's was 7"),
    (mbap(READ, tid=8), "transaction id 8, the request's was 7"),
    (mbap(READ, unit=2), "from unit 2, the request was for unit 1"),
    (mbap(READ, protocol=1), "not a Modbus TCP reply"),
    (mbap(READ, length=1), "not a Modbus TCP reply"),
    (mbap(READ, length=255), "not a Modbus TCP reply"),
    (mbap(bytes((3, 6)) + READ[2:]), "byte count 6 for 4 bytes of registers"),
    (mbap(bytes((4, 3, 1, 2, 3))), "byte count 3 for 3 bytes of registers"),
    (mbap(bytes((0x83, 2, 0, 0))), "exception reply of 4 bytes, not 2"),
    (mbap(READ) + b"\x00\x00\x00", "3 byte(s) after the reply"),
    (mbap(bytes((0x55, 1, 2))), "undecodable reply of 10 bytes"),
])
def test_a_reply_that_is_not_the_answer_is_refused_whole(data: bytes, reason: str) -> None:
    used, pdu, refused = take(data)
    assert (used, pdu) == (len(data), None)  # dropped, undecoded
    assert len(refused) == 1 and reason in refused[0]
    assert "0x12" not in refused[0] and "4660" not in refused[0]  # no register in the reason
