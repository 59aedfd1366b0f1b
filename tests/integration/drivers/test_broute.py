"""B-route end to end against a fake SK-command module on a pty: join, read, expire, re-join."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.broute.meter import BrouteMeter, BrouteSettings, read_secret
from drivers.broute.sk import parse_erxudp, redact
from drivers.echonet.codec import Eoj, Esv, decode, decode_property_map
from drivers.errors import DeviceUnreachable, DriverError
from drivers.models import Quality, Reading
from drivers.sim.echonet_emulator import fixed_time
from tests.support.fake_sk_module import (
    METER_IP,
    METER_MAC,
    OTHER_IP,
    OTHER_MAC,
    FakeSkModule,
    Forgery,
)

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
    assert fake.commands[:5] == ["SKSREG", "SKVER", "SKINFO", "ROPT", "SKSETPWD"]
    assert "SKSCAN" in fake.commands and fake.joins == 1
    assert readings["grid.power"].value == 632.0
    assert readings["grid.energy_import"].value == 6513900.0
    assert meter.identity.manufacturer == "0xFFFFFE"
    assert len(history) == 48 and history[1].value == 6509200.0
    assert [r.quality for r in history[40:]] == [Quality.MISSING] * 8
    assert history[0].ts.hour == 15  # 00:00 JST
    assert PASSWORD not in caplog.text and RBID not in caplog.text
    assert METER_IP not in caplog.text and METER_MAC not in caplog.text


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
    assert redact(f"SKJOIN {METER_IP}") == "SKJOIN <addr>"
    assert redact(f"SKLL64 {METER_MAC}") == "SKLL64 <addr>"
    assert PASSWORD not in repr(BrouteSettings(device="/dev/x", route_b_id=RBID,
                                               password=PASSWORD))


def test_recorded_erxudp_line() -> None:
    # futomi/node-echonet-lite README.md, "data-serial event": a BP35A1 ERXUDP line.
    line = ("ERXUDP FE80:0000:0000:0000:0000:0000:0000:0000 FE80:0000:0000:0000:0000:0000:"
            "0000:0001 0E1A 0E1A 001C64000334809F 1 0012 1081001A02880105FF0172019E040381E5ED")
    rx = parse_erxudp(line)
    assert (rx.rport, rx.lport, rx.mac) == (3610, 3610, "001C64000334809F")
    assert decode_property_map(decode(rx.data).values()[0x9E]) == {0x81, 0xE5, 0xED}


# What a forger would like the agent to read: 9999 W, 782936.7 kWh, a coefficient of 100.
FORGED = {0xE7: (9999).to_bytes(4, "big", signed=True), 0xE0: (7829367).to_bytes(4, "big"),
          0xD3: (100).to_bytes(4, "big")}
GENUINE = {"grid.power": 632.0, "grid.energy_import": 6513900.0}


def _values(readings: list[Reading]) -> dict[str, float | str | None]:
    return {r.point: r.value for r in readings if r.point in GENUINE}


async def test_frames_not_from_the_joined_meter_over_the_secured_link_are_dropped(
        fake: FakeSkModule, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.forgeries = [
        Forgery(sender=OTHER_IP, mac=OTHER_MAC, secured=False, values=FORGED),
        Forgery(sender=OTHER_IP, mac=OTHER_MAC, values=FORGED),  # a neighbour's meter
        Forgery(secured=False, values=FORGED),  # the meter's address, outside the session
        Forgery(mac=OTHER_MAC, values=FORGED),
        Forgery(sender=OTHER_IP, values=FORGED)]
    async with BrouteMeter(_settings(fake), name="meter") as meter:
        readings = await meter.poll(0.0)
        at = datetime(2026, 5, 20, 5, 30, tzinfo=UTC)
        fake.push([0xEA], values={0xEA: fixed_time(at, 7829367)}, sender=OTHER_IP,
                  mac=OTHER_MAC, secured=False)
        fake.push([0xEA], values={0xEA: fixed_time(at, 7829367)}, secured=False)
        await meter.get([0xE7])  # any exchange drains the line
        pushed = await meter.poll(1.0)
    assert _values(readings) == GENUINE
    assert meter.context.coefficient == 1
    assert pushed == []
    assert meter.stats.refused == 5 * 3 + 2  # five per Get (context, poll, drain), two pushes
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "meter: dropped an ECHONET Lite datagram that was not from the joined meter or not "
        "secured (further ones are only counted)"]
    for secret in (OTHER_IP, OTHER_MAC, METER_IP, METER_MAC, "782936", "9999"):
        assert secret not in caplog.text


async def test_a_reply_with_the_wrong_esv_or_object_is_refused(fake: FakeSkModule) -> None:
    fake.forgeries = [
        Forgery(esv=Esv.SET_RES, values=FORGED),  # right TID, but not an answer to a Get
        Forgery(esv=Esv.INF_SNA, values=FORGED),
        Forgery(seoj=Eoj(class_code=0x0288, instance=0x02), values=FORGED),
        Forgery(seoj=Eoj(class_code=0x0EF0, instance=0x01), values=FORGED)]
    async with BrouteMeter(_settings(fake), name="meter") as meter:
        readings = await meter.poll(0.0)
    assert _values(readings) == GENUINE
    assert meter.context.coefficient == 1
    assert meter.stats.mismatched == 4 * 2  # four per Get (context, poll)
    assert meter.stats.refused == 0


async def test_garbled_lines_from_the_module_do_not_break_the_session(
        fake: FakeSkModule) -> None:
    async with BrouteMeter(_settings(fake), name="meter") as meter:
        huge = "F" * 3600  # its decimal form is longer than Python's 4300-digit limit
        fake.line(f"ERXUDP {METER_IP} {METER_IP} 0E1A 0E1A {METER_MAC} 1 {huge} 00")
        fake.line(f"ERXUDP {METER_IP} {METER_IP} 0E1A 0E1A {METER_MAC} 1 0004 10810")
        fake.line("EVENT 29")
        fake.line(f"EVENT ZZ {METER_IP}")
        readings = await meter.poll(0.0)
    assert _values(readings) == GENUINE
    assert meter.stats.garbled == 4
    assert fake.joins == 1  # the malformed EVENT 29 did not end the session
