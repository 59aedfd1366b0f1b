"""Fuzz properties of the SK line parsers and the B-route meter's line handling, written once
and instantiated twice: a few hundred examples in ``make test``
(tests/unit/drivers/test_broute_lines.py) and many thousands in ``make proof``
(tests/proof/test_fuzz_broute.py).

Properties: every parser returns or raises :class:`DeviceProtocolError` (never ValueError,
IndexError, ...), with a message that names what is wrong and never repeats an address; the
meter's line handler never raises, and a datagram becomes a pushed reading only if it came from
the joined meter's address and MAC over the secured link.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.broute.dialects import BP35C2
from drivers.broute.meter import BrouteMeter, BrouteSettings
from drivers.broute.sk import (
    Pan,
    SkModule,
    ipv6,
    parse_epandesc,
    parse_erxudp,
    parse_event,
)
from drivers.echonet.codec import Eoj, Esv, Frame, Property, encode
from drivers.errors import DeviceProtocolError
from drivers.sim.echonet_emulator import fixed_time
from tests.support.fake_sk_module import METER_IP, METER_MAC, OTHER_IP, OTHER_MAC, OUR_IP

Test = Callable[..., None]
HEX = "0123456789ABCDEFabcdef"
_ADDRESS = re.compile(r"[0-9A-Fa-f]{1,4}(:[0-9A-Fa-f]{1,4}){7}|[0-9A-Fa-f]{16}")

TOKEN = st.one_of(
    st.sampled_from([METER_IP, OTHER_IP, OUR_IP, METER_MAC, OTHER_MAC, "0E1A", "02CC", "0",
                     "1", "2", "00", "25", "29", "0x0E1A", "+E1A", "E_1A", "-1", "٣٣٣٣",
                     "FE80::1", "FE80:0000", "GGGG", ""]),
    st.text(HEX, min_size=1, max_size=40),
    st.builds(lambda digit, n: digit * n, st.sampled_from(HEX),  # e.g. a 3,600-digit length
              st.integers(min_value=1000, max_value=6000)),
    st.text(max_size=30),
)
LINE = st.one_of(
    st.text(max_size=200),
    st.tuples(st.sampled_from(["ERXUDP", "EVENT", "EPANDESC", "OK", "FAIL", "SKLL64"]),
              st.lists(TOKEN, max_size=12)).map(lambda t: " ".join([t[0], *t[1]])),
)
FIELDS = st.dictionaries(st.sampled_from(["Channel", "Channel Page", "Pan ID", "Addr", "LQI"]),
                         TOKEN, max_size=5)
PUSHED = Frame(tid=1, seoj=Eoj(class_code=0x0288, instance=1),
               deoj=Eoj(class_code=0x05FF, instance=1), esv=Esv.INF,
               properties=(Property(epc=0xEA, edt=fixed_time(
                   datetime(2026, 5, 20, 5, 30, tzinfo=UTC), 7829367)),))


def _documented(call: Callable[[], object], text: str) -> None:
    try:
        call()
    except DeviceProtocolError as exc:
        message = str(exc)
        assert message, "an error must say what is wrong"
        for address in _ADDRESS.finditer(text):
            assert address.group() not in message, "an error repeated an address"


def check_sk_line(line: str) -> None:
    """Each SK line parser returns or raises DeviceProtocolError, naming no address."""
    _documented(lambda: parse_erxudp(line), line)
    _documented(lambda: parse_erxudp(line, BP35C2), line)
    _documented(lambda: parse_event(line), line)
    _documented(lambda: ipv6(line, "SKLL64 answer"), line)


def check_epandesc(fields: dict[str, str]) -> None:
    """EPANDESC fields give a Pan or DeviceProtocolError."""
    _documented(lambda: parse_epandesc(fields), " ".join(fields.values()))


def _meter() -> BrouteMeter:
    settings = BrouteSettings(device="/nonexistent", route_b_id="0" * 32, password="x" * 12)
    meter = BrouteMeter(settings, name="meter", module=SkModule(settings.device),
                        pan=Pan(channel=0x21, pan_id=0x8888, mac=METER_MAC))
    meter.address = METER_IP  # as SKLL64 gave it; the session is not opened
    return meter


def check_meter_line(line: str) -> None:
    """The meter's handler of unsolicited lines never raises and never yields a reading from
    a random line."""
    meter = _meter()
    assert meter.module.on_line is not None
    meter.module.on_line(line)
    assert meter._pushed == []  # nothing a random line says becomes a reading


def check_meter_sender(sender: str, mac: str, secured: bool, cut: int | None) -> None:
    """A valid push becomes a reading only from the meter's address and MAC, secured, whole."""
    data = encode(PUSHED).hex().upper()
    line = f"ERXUDP {sender} {OUR_IP} 0E1A 0E1A {mac} {int(secured)} {len(data) // 2:04X} {data}"
    whole = cut is None or cut >= len(line)
    meter = _meter()
    assert meter.module.on_line is not None
    meter.module.on_line(line[:cut])
    genuine = whole and (sender, mac, secured) == (METER_IP, METER_MAC, True)
    assert len(meter._pushed) == int(genuine)
    assert meter.stats.refused == int(whole and not genuine)


def check_meter_push(epc: int, edt: bytes) -> None:
    """Whatever the meter itself pushes, the handler never raises; a bad value is no reading."""
    frame = Frame(tid=1, seoj=PUSHED.seoj, deoj=PUSHED.deoj, esv=Esv.INF,
                  properties=(Property(epc=epc, edt=edt),))
    data = encode(frame).hex().upper()
    meter = _meter()
    assert meter.module.on_line is not None
    meter.module.on_line(f"ERXUDP {METER_IP} {OUR_IP} 0E1A 0E1A {METER_MAC} 1 "
                         f"{len(data) // 2:04X} {data}")
    assert len(meter._pushed) <= 1


def cases(examples: int) -> dict[str, Test]:
    """The fuzz tests with ``examples`` examples each."""
    budget = settings(max_examples=examples, deadline=5000, derandomize=examples < 1000,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

    @budget
    @given(LINE)
    def sk_lines(line: str) -> None:
        check_sk_line(line)

    @budget
    @given(FIELDS)
    def epandesc(fields: dict[str, str]) -> None:
        check_epandesc(fields)

    @budget
    @given(LINE)
    def meter_lines(line: str) -> None:
        check_meter_line(line)

    @budget
    @given(st.sampled_from([METER_IP, OTHER_IP, METER_IP.lower()]),
           st.sampled_from([METER_MAC, OTHER_MAC, METER_MAC.lower()]), st.booleans(),
           st.none() | st.integers(min_value=0, max_value=200))
    def meter_senders(sender: str, mac: str, secured: bool, cut: int | None) -> None:
        check_meter_sender(sender.upper(), mac.upper(), secured, cut)

    @budget
    @given(st.sampled_from([0xEA, 0xEB, 0xE7, 0xE2]), st.one_of(
        st.binary(max_size=20),
        st.tuples(st.integers(0, 0xFFFF), st.binary(min_size=9, max_size=9)).map(
            lambda t: t[0].to_bytes(2, "big") + t[1]),
        st.tuples(st.integers(0, 3), st.integers(0, 13), st.integers(0, 32),
                  st.integers(0, 25), st.binary(min_size=6, max_size=6)).map(
            lambda t: bytes([0, t[0], t[1], t[2], t[3]]) + t[4])))
    def meter_pushes(epc: int, edt: bytes) -> None:
        check_meter_push(epc, edt)

    return {"sk_lines": sk_lines, "epandesc": epandesc, "meter_lines": meter_lines,
            "meter_senders": meter_senders, "meter_pushes": meter_pushes}
