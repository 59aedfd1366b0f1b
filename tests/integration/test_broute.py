"""B-route end to end against a fake SK-command module on a pty: join, read, expire, re-join."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.broute.meter import BrouteMeter, BrouteSettings, read_secret
from drivers.broute.sk import parse_erxudp, redact
from drivers.echonet.codec import decode, decode_property_map
from drivers.errors import DeviceUnreachable, DriverError
from drivers.models import Quality, Reading
from tests.support.fake_sk_module import FakeSkModule

RBID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "SECRETPASS12"


def _settings(fake: FakeSkModule, password: str = PASSWORD) -> BrouteSettings:
    return BrouteSettings(device=fake.path, route_b_id=RBID, password=password,
                          scan_attempts=2, scan_timeout=2.0, join_timeout=2.0,
                          request_timeout=0.5, retries=1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSkModule]:
    async with FakeSkModule(RBID, PASSWORD) as module:
        yield module


def _by_point(readings: list[Reading]) -> dict[str, Reading]:
    return {r.point: r for r in readings}


async def test_join_and_read_the_meter(fake: FakeSkModule,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with BrouteMeter(_settings(fake), name="meter") as meter:
        readings = _by_point(await meter.poll(0.0))
        history = await meter.read_history()
    assert fake.commands[:3] == ["SKSREG", "ROPT", "SKSETPWD"]
    assert "SKSCAN" in fake.commands and fake.joins == 1
    assert readings["grid.power"].value == 632.0
    assert readings["grid.energy_import"].value == 6513900.0
    assert meter.identity.manufacturer == "0xFFFFFE"
    assert len(history) == 48 and history[1].value == 6509200.0
    assert [r.quality for r in history[40:]] == [Quality.MISSING] * 8
    assert history[0].ts.hour == 15  # 00:00 JST
    assert PASSWORD not in caplog.text and RBID not in caplog.text


async def test_pushed_fixed_time_value(fake: FakeSkModule) -> None:
    async with BrouteMeter(_settings(fake), name="meter") as meter:
        await meter.poll(0.0)
        fake.push([0xEA])
        await meter.get([0xE7])  # any exchange drains the line
        pushed = await meter.poll(1.0)
    assert [(r.point, r.value, r.ts.isoformat()) for r in pushed] == [
        ("grid.energy_import", 6513900.0, "2026-05-20T05:00:00+00:00")]


async def test_session_expiry_rejoins_and_reads_again(fake: FakeSkModule) -> None:
    async with BrouteMeter(_settings(fake), name="meter") as meter:
        await meter.poll(0.0)
        fake.expire()
        fake.meter.values[0xE7] = (-150).to_bytes(4, "big", signed=True)
        readings = _by_point(await meter.poll(100.0))
    assert fake.joins == 2 and meter.joins == 2
    assert readings["grid.power"].value == -150.0  # exporting


async def test_a_silent_meter_is_unreachable(fake: FakeSkModule) -> None:
    async with BrouteMeter(_settings(fake), name="meter") as meter:
        fake.silent = True
        with pytest.raises(DeviceUnreachable, match="no reply in 2 attempt"):
            await meter.poll(0.0)


async def test_wrong_password_fails_the_join(fake: FakeSkModule) -> None:
    with pytest.raises(DeviceUnreachable, match="EVENT 24"):
        async with BrouteMeter(_settings(fake, password="WRONGPASS123"), name="meter"):
            pass


async def test_no_beacon_gives_up_after_the_configured_scans() -> None:
    async with FakeSkModule(RBID, PASSWORD, beacon=False) as quiet:
        with pytest.raises(DeviceUnreachable, match="no smart meter beacon after 2 scans"):
            async with BrouteMeter(_settings(quiet), name="meter"):
                pass
        assert quiet.commands.count("SKSCAN") == 2


def test_secrets_come_from_owner_only_files(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n", encoding="ascii")
    secret.chmod(0o600)
    assert read_secret(secret, "B-route password") == PASSWORD
    secret.chmod(0o644)
    with pytest.raises(DriverError, match=r"readable by others.*chmod 600") as info:
        read_secret(secret, "B-route password")
    assert PASSWORD not in str(info.value)
    assert redact(f"SKSETPWD C {PASSWORD}") == "SKSETPWD ***"
    assert PASSWORD not in repr(BrouteSettings(device="/dev/x", route_b_id=RBID,
                                               password=PASSWORD))


def test_recorded_erxudp_line() -> None:
    # futomi/node-echonet-lite README.md, "data-serial event": a BP35A1 ERXUDP line.
    line = ("ERXUDP FE80:0000:0000:0000:0000:0000:0000:0000 FE80:0000:0000:0000:0000:0000:"
            "0000:0001 0E1A 0E1A 001C64000334809F 1 0012 1081001A02880105FF0172019E040381E5ED")
    rx = parse_erxudp(line)
    assert (rx.rport, rx.lport, rx.mac) == (3610, 3610, "001C64000334809F")
    assert decode_property_map(decode(rx.data).values()[0x9E]) == {0x81, 0xE5, 0xED}
