"""ECHONET Lite frames (format 1) and property maps: pure encode and decode, no I/O.

A frame is EHD1 (0x10), EHD2 (0x81), TID (2 bytes), SEOJ, DEOJ (3 bytes each), ESV, OPC and
OPC triples of EPC, PDC, EDT (ECHONET Lite Specification Part II, chapter 3). SetGet services
(0x6E, 0x7E, 0x5E) carry a second list (OPCGet) after the first. Anything shorter, longer or
otherwise malformed raises :class:`DeviceProtocolError` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from drivers.errors import DeviceProtocolError

EHD1 = 0x10  # ECHONET Lite
EHD2_FORMAT1 = 0x81  # specified message format
HEADER_LEN = 12  # EHD1 EHD2 TID(2) SEOJ(3) DEOJ(3) ESV OPC
MAX_FRAME = 1500  # UDP on the home LAN; nothing legitimate is bigger


class Esv(IntEnum):
    """ECHONET Lite service codes."""

    SETI = 0x60
    SETC = 0x61
    GET = 0x62
    INF_REQ = 0x63
    SETGET = 0x6E
    SET_RES = 0x71
    GET_RES = 0x72
    INF = 0x73
    INFC = 0x74
    INFC_RES = 0x7A
    SETGET_RES = 0x7E
    SETI_SNA = 0x50
    SETC_SNA = 0x51
    GET_SNA = 0x52
    INF_SNA = 0x53
    SETGET_SNA = 0x5E


_SETGET = {Esv.SETGET, Esv.SETGET_RES, Esv.SETGET_SNA}
RESPONSES = frozenset({Esv.SET_RES, Esv.GET_RES, Esv.INFC_RES, Esv.SETGET_RES, Esv.SETI_SNA,
                       Esv.SETC_SNA, Esv.GET_SNA, Esv.INF_SNA, Esv.SETGET_SNA})
NOTIFICATIONS = frozenset({Esv.INF, Esv.INFC})


@dataclass(frozen=True, slots=True, kw_only=True)
class Eoj:
    """An ECHONET object: class group and class code (``class_code``, e.g. 0x0279) and instance.

    Instance 0x00 addresses every instance of the class; never assume a device uses 0x01.
    """

    class_code: int
    instance: int

    def __post_init__(self) -> None:
        if not 0 <= self.class_code <= 0xFFFF or not 0 <= self.instance <= 0xFF:
            raise ValueError(f"EOJ out of range: class 0x{self.class_code:X}, "
                             f"instance 0x{self.instance:X}")

    @classmethod
    def parse(cls, data: bytes) -> Eoj:
        """Decode three bytes (class group, class, instance)."""
        if len(data) != 3:
            raise DeviceProtocolError(f"EOJ needs 3 bytes, got {len(data)}")
        return cls(class_code=int.from_bytes(data[:2], "big"), instance=data[2])

    def to_bytes(self) -> bytes:
        """Encode as three bytes."""
        return self.class_code.to_bytes(2, "big") + bytes([self.instance])

    def __str__(self) -> str:
        return f"0x{self.class_code:04X}{self.instance:02X}"


NODE_PROFILE = Eoj(class_code=0x0EF0, instance=0x01)
NODE_PROFILE_ANY = Eoj(class_code=0x0EF0, instance=0x00)
CONTROLLER = Eoj(class_code=0x05FF, instance=0x01)


@dataclass(frozen=True, slots=True, kw_only=True)
class Property:
    """One EPC with its data (EDT); an empty ``edt`` (PDC 0) in a Get or in an SNA reply."""

    epc: int
    edt: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.epc <= 0xFF or len(self.edt) > 0xFF:
            raise ValueError(f"property 0x{self.epc:X}: EPC must be one byte and EDT ≤ 255 bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One ECHONET Lite message. ``properties_get`` is used only by the SetGet services."""

    tid: int
    seoj: Eoj
    deoj: Eoj
    esv: Esv
    properties: tuple[Property, ...] = ()
    properties_get: tuple[Property, ...] = ()

    def values(self) -> dict[int, bytes]:
        """EPC -> EDT of ``properties`` (last wins if an EPC repeats)."""
        return {p.epc: p.edt for p in self.properties}


def _encode_list(props: tuple[Property, ...]) -> bytes:
    if len(props) > 0xFF:
        raise ValueError(f"at most 255 properties per frame, got {len(props)}")
    out = bytearray([len(props)])
    for prop in props:
        out += bytes([prop.epc, len(prop.edt)]) + prop.edt
    return bytes(out)


def encode(frame: Frame) -> bytes:
    """The bytes of ``frame`` on the wire."""
    if not 0 <= frame.tid <= 0xFFFF:
        raise ValueError(f"TID must be 0..65535, got {frame.tid}")
    out = (bytes([EHD1, EHD2_FORMAT1]) + frame.tid.to_bytes(2, "big") + frame.seoj.to_bytes()
           + frame.deoj.to_bytes() + bytes([frame.esv]) + _encode_list(frame.properties))
    if frame.esv in _SETGET:
        out += _encode_list(frame.properties_get)
    return out


def _decode_list(data: bytes, offset: int) -> tuple[tuple[Property, ...], int]:
    if offset >= len(data):
        raise DeviceProtocolError(f"frame ends at byte {offset} where OPC was expected")
    count = data[offset]
    offset += 1
    props: list[Property] = []
    for index in range(count):
        if offset + 2 > len(data):
            raise DeviceProtocolError(f"frame ends inside property {index + 1} of {count} "
                                      f"(byte {offset}, EPC/PDC expected)")
        epc, pdc = data[offset], data[offset + 1]
        end = offset + 2 + pdc
        if end > len(data):
            raise DeviceProtocolError(f"property 0x{epc:02X} declares PDC {pdc} but only "
                                      f"{len(data) - offset - 2} bytes remain")
        props.append(Property(epc=epc, edt=bytes(data[offset + 2:end])))
        offset = end
    return tuple(props), offset


def decode(data: bytes) -> Frame:
    """Parse one datagram; raises :class:`DeviceProtocolError` on anything malformed."""
    if len(data) < HEADER_LEN:
        raise DeviceProtocolError(f"ECHONET Lite frame too short: {len(data)} bytes, "
                                  f"need at least {HEADER_LEN}")
    if len(data) > MAX_FRAME:
        raise DeviceProtocolError(f"ECHONET Lite frame too long: {len(data)} bytes")
    if data[0] != EHD1 or data[1] != EHD2_FORMAT1:
        raise DeviceProtocolError(f"not an ECHONET Lite format-1 frame: EHD 0x{data[0]:02X} "
                                  f"0x{data[1]:02X} (expected 0x10 0x81)")
    try:
        esv = Esv(data[10])
    except ValueError:
        raise DeviceProtocolError(f"unknown ESV 0x{data[10]:02X}") from None
    props, offset = _decode_list(data, 11)
    props_get: tuple[Property, ...] = ()
    if esv in _SETGET:
        props_get, offset = _decode_list(data, offset)
    if offset != len(data):
        raise DeviceProtocolError(f"{len(data) - offset} unexpected bytes after the last "
                                  f"property (ESV 0x{esv:02X})")
    return Frame(tid=int.from_bytes(data[2:4], "big"), seoj=Eoj.parse(bytes(data[4:7])),
                 deoj=Eoj.parse(bytes(data[7:10])), esv=esv, properties=props,
                 properties_get=props_get)


def decode_property_map(edt: bytes) -> frozenset[int]:
    """Decode a property map (0x9D/0x9E/0x9F).

    Fewer than 16 properties: the count, then the EPCs. 16 or more: the count, then a 16-byte
    bitmap where bit ``b`` of byte ``i`` stands for EPC ``0x80 + i + 0x10 * b``.
    """
    if not edt:
        raise DeviceProtocolError("empty property map")
    count = edt[0]
    if count < 16:
        if len(edt) != 1 + count:
            raise DeviceProtocolError(f"property map lists {count} EPCs but has "
                                      f"{len(edt) - 1} bytes after the count")
        epcs = frozenset(edt[1:])
        if len(epcs) != count or any(epc < 0x80 for epc in epcs):
            raise DeviceProtocolError("property map lists duplicate or invalid (< 0x80) EPCs")
        return epcs
    if len(edt) != 17:
        raise DeviceProtocolError(f"bitmap property map must be 17 bytes, got {len(edt)}")
    found = frozenset(0x80 + i + 0x10 * bit for i in range(16) for bit in range(8)
                      if edt[1 + i] & (1 << bit))
    if len(found) != count:
        raise DeviceProtocolError(f"bitmap property map says {count} EPCs but sets "
                                  f"{len(found)} bits")
    return found


def encode_property_map(epcs: Iterable[int]) -> bytes:
    """Encode a property map in the form the specification requires for its size."""
    unique = sorted(set(epcs))
    if any(not 0x80 <= epc <= 0xFF for epc in unique):
        raise ValueError("property map EPCs must be 0x80..0xFF")
    if len(unique) < 16:
        return bytes([len(unique), *unique])
    bitmap = bytearray(16)
    for epc in unique:
        bitmap[(epc - 0x80) & 0x0F] |= 1 << ((epc - 0x80) >> 4)
    return bytes([len(unique)]) + bytes(bitmap)


def decode_instance_list(edt: bytes) -> tuple[Eoj, ...]:
    """Decode an instance list (node profile 0xD5 announcement or 0xD6 self-node list)."""
    if not edt:
        raise DeviceProtocolError("empty instance list")
    count = edt[0]
    if len(edt) != 1 + 3 * count:
        raise DeviceProtocolError(f"instance list says {count} objects but has "
                                  f"{len(edt) - 1} bytes (need {3 * count})")
    return tuple(Eoj.parse(bytes(edt[1 + 3 * i:4 + 3 * i])) for i in range(count))


def encode_instance_list(eojs: Iterable[Eoj]) -> bytes:
    """Encode an instance list (up to 84 objects fit in one property)."""
    items = list(eojs)
    if len(items) > 84:
        raise ValueError(f"an instance list holds at most 84 objects, got {len(items)}")
    return bytes([len(items)]) + b"".join(e.to_bytes() for e in items)
