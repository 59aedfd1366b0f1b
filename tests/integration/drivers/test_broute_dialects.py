"""The B-route driver against the fake module in each SK dialect and line ending: it detects
the dialect (SKINFO), sends that dialect's SKSCAN and SKSENDTO (the fake answers the other
dialect's form with FAIL ER06, as a module does), reads its ERXUDP and EVENT lines, and takes
``[broute] module`` over detection."""

from __future__ import annotations

import pytest

from drivers.broute.meter import BrouteMeter, BrouteSettings
from drivers.errors import DeviceProtocolError
from tests.support.fake_sk_module import FakeSkModule

RBID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "SECRETPASS12"


def _settings(fake: FakeSkModule, module: str = "auto") -> BrouteSettings:
    return BrouteSettings(device=fake.path, route_b_id=RBID, password=PASSWORD, module=module,
                          scan_attempts=1, scan_timeout=2.0, join_timeout=2.0,
                          request_timeout=0.5, retries=1)


@pytest.mark.parametrize(("dialect", "line_end"), [
    ("bp35a1", "\r\n"), ("bp35c2", "\r\n"), ("bp35a1", "\r"), ("bp35c2", "\n")])
async def test_each_dialect_joins_reads_and_rejoins(dialect: str, line_end: str) -> None:
    fake = FakeSkModule(RBID, PASSWORD, dialect=dialect, line_end=line_end)
    async with fake, BrouteMeter(_settings(fake), name="meter") as meter:
        first = {r.point: r.value for r in await meter.poll(0.0)}
        fake.expire()  # EVENT 29, with the side on a BP35C2
        fake.meter.values[0xE7] = (-150).to_bytes(4, "big", signed=True)
        again = {r.point: r.value for r in await meter.poll(100.0)}
    assert meter.dialect.name == dialect and fake.failed == []
    assert first["grid.power"] == 632.0 and again["grid.power"] == -150.0
    assert fake.joins == 2 and meter.stats.garbled == 0
    scan = next(line for line in fake.lines if line.startswith("SKSCAN"))
    sendto = next(line for line in fake.lines if line.startswith("SKSENDTO"))
    assert len(scan.split()) == {"bp35a1": 4, "bp35c2": 5}[dialect]
    assert len(sendto.split()) == {"bp35a1": 6, "bp35c2": 7}[dialect]


async def test_the_module_setting_is_used_without_asking() -> None:
    fake = FakeSkModule(RBID, PASSWORD, dialect="bp35c2", skinfo=False)
    async with fake, BrouteMeter(_settings(fake, module="bp35c2"), name="meter") as meter:
        readings = await meter.poll(0.0)
    assert readings and "SKINFO" not in fake.commands and fake.failed == []


async def test_a_module_without_skinfo_names_the_setting() -> None:
    async with FakeSkModule(RBID, PASSWORD, dialect="bp35c2", skinfo=False) as fake:
        with pytest.raises(DeviceProtocolError, match=r"FAIL ER04.*set \[broute\] module"):
            async with BrouteMeter(_settings(fake), name="meter"):
                pass


def test_an_unknown_module_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'bp35c3' is not auto or one of bp35a1, bp35c2"):
        BrouteSettings(device="/dev/x", route_b_id=RBID, password=PASSWORD, module="bp35c3")
