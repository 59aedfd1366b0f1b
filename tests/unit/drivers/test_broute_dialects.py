"""SK dialects against byte-exact transcripts of public sources (tests/fixtures/sk/, each
file names its source): line endings, telling the modules apart, each dialect's ERXUDP."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.broute.dialects import BP35A1, BP35C2, DIALECTS, dialect_from_einfo
from drivers.broute.sk import SkModule, parse_erxudp, parse_event
from drivers.errors import DeviceProtocolError

FIXTURES = Path(__file__).parents[2] / "fixtures" / "sk"


def _transcript(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert doc["source"]  # a transcript names where it comes from
    return doc


def _received(doc: dict[str, Any], sent: str) -> bytes:
    return next(x["received"] for x in doc["exchanges"]
                if x["sent"].startswith(sent)).encode("ascii")


A1 = _transcript("bp35a1_smdn_bp35xx.json")
C2 = _transcript("bp35c2_rs_wsuha_p.json")


class _Socket:
    """One end of a socket pair, as the serial opener's object."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def line() -> AsyncIterator[tuple[SkModule, socket.socket]]:
    ours, theirs = socket.socketpair()
    async with SkModule("/dev/pseudo", opener=lambda _path, _baud: _Socket(ours)) as module:
        yield module, theirs
    theirs.close()


@pytest.mark.parametrize("doc", [A1, C2], ids=["bp35a1", "bp35c2"])
async def test_ropt_answered_with_cr_alone_is_read(
        line: tuple[SkModule, socket.socket], doc: dict[str, Any]) -> None:
    module, peer = line
    peer.sendall(_received(doc, "ROPT"))  # "OK 01\r" (after the echo, on the BP35C2)
    assert await module.command("ROPT", end=b"\r", deadline=2.0) == "OK 01"
    assert peer.recv(64) == b"ROPT\r"  # what momonga and Smdn.Devices.BP35XX send


async def test_lines_end_at_cr_lf_or_crlf(line: tuple[SkModule, socket.socket]) -> None:
    module, peer = line
    peer.sendall(b"OK 01\rOK 02\nOK 03\r\nOK 04\r")
    got = [await module.expect(lambda s: s.startswith("OK"), deadline=2.0, what="OK")
           for _ in range(4)]
    assert got == ["OK 01", "OK 02", "OK 03", "OK 04"]


@pytest.mark.parametrize(("doc", "dialect"), [(A1, BP35A1), (C2, BP35C2)],
                         ids=["bp35a1", "bp35c2"])
async def test_skinfo_tells_the_dialect(line: tuple[SkModule, socket.socket],
                                        doc: dict[str, Any], dialect: Any) -> None:
    module, peer = line
    peer.sendall(_received(doc, "SKVER") + _received(doc, "SKINFO"))
    version = await module.query("SKVER", "EVER", deadline=2.0)
    einfo = await module.query("SKINFO", "EINFO", deadline=2.0)
    assert version.split()[1] == {"bp35a1": "1.2.10", "bp35c2": "1.5.2"}[doc["module"]]
    assert dialect_from_einfo(einfo) is dialect is DIALECTS[doc["module"]]


def test_an_unknown_einfo_names_the_setting() -> None:
    with pytest.raises(DeviceProtocolError, match=r"set \[broute\] module"):
        dialect_from_einfo("EINFO FE80:0000:0000:0000:021D:1290:1234:5678 "
                           "001D129012345678 21 8888 7")
    with pytest.raises(DeviceProtocolError, match="4 fields, not 6"):
        dialect_from_einfo("EINFO a b c")


def test_bp35c2_lines_from_the_transcript_parse() -> None:
    text = _received(C2, "SKSENDTO").decode("ascii")
    erxudp = next(s for s in text.split("\r\n") if s.startswith("ERXUDP"))
    rx = parse_erxudp(erxudp, BP35C2)  # ten fields: SECURED then SIDE
    assert rx.secured and rx.lport == 3610 and rx.data.hex().upper().endswith("E704000000E4")
    with pytest.raises(DeviceProtocolError, match="10 fields, need 9 for bp35a1"):
        parse_erxudp(erxudp, BP35A1)
    events = [s for s in _received(C2, "SKJOIN").decode("ascii").split("\r\n")
              if s.startswith("EVENT")]
    assert [parse_event(e).code for e in events] == [0x21, 0x02, 0x21, 0x25]


def test_bp35c2_erxudp_with_rssi_parses() -> None:
    # After SKSREG SA2 1 a BP35C2 puts the frame's RSSI before SECURED: eleven fields (the
    # form momonga asks for and reads, momonga_device.py BP35C2Strategy.parse_erxudp).
    head = ("ERXUDP FE80:0000:0000:0000:C2F9:4500:4058:B5FB "
            "FE80:0000:0000:0000:021D:1291:0004:E578 0E1A 0E1A 0011223344556677")
    data = "1081525302880105FF017201E704000000E4"
    rx = parse_erxudp(f"{head} 5A 1 0 0012 {data}", BP35C2)
    assert rx.secured and rx.data == bytes.fromhex(data)
    assert not parse_erxudp(f"{head} 5A 0 1 0012 {data}", BP35C2).secured
    with pytest.raises(DeviceProtocolError, match="RSSI or side"):
        parse_erxudp(f"{head} 5A 1 ZZ 0012 {data}", BP35C2)


def test_commands_of_each_dialect() -> None:
    address = "FE80:0000:0000:0000:C2F9:4500:4058:B5FB"
    assert BP35A1.scan_command(6) == "SKSCAN 2 FFFFFFFF 6"
    assert BP35C2.scan_command(6) == "SKSCAN 2 FFFFFFFF 6 0"
    assert BP35A1.sendto_command(address, "0E1A", 14) == f"SKSENDTO 1 {address} 0E1A 1 000E"
    # the transcript's own SKSENDTO, byte for byte up to the payload
    sent = next(x["sent"] for x in C2["exchanges"] if x["sent"].startswith("SKSENDTO"))
    assert sent.startswith(BP35C2.sendto_command(address, "0E1A", 14) + " ")
