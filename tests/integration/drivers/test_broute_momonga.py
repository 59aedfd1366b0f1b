"""The fake SK module checked against an independent client: momonga (a B-route library with
its own BP35A1 and BP35C2 code) opens a session through the fake's pty, joins and reads the
meter's power, once per dialect. momonga sends ``ROPT`` ended by CR alone and waits for
``OK 01`` ended by CR alone, tells the dialects apart by SKINFO, resets with SKRESET and
sends each dialect's SKSCAN and SKSENDTO forms: a fake that lacks any of this fails here."""

from __future__ import annotations

import asyncio

from momonga import Momonga

from tests.support.fake_sk_module import FakeSkModule

RBID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "SECRETPASS12"


def _session(path: str) -> tuple[int | None, str]:
    mo = Momonga(RBID, PASSWORD, path, scan_retries=1, join_retries=1)
    mo.internal_xmit_interval = 0  # its pause between requests, for a real meter's sake
    with mo:
        return mo.get_instantaneous_power(), mo.session_manager.skw.device_type.name


async def test_momonga_joins_and_reads_through_the_fake_in_each_dialect() -> None:
    async with (FakeSkModule(RBID, PASSWORD, dialect="bp35a1") as a1,
                FakeSkModule(RBID, PASSWORD, dialect="bp35c2") as c2):
        async with asyncio.timeout(60):  # momonga's own waits are minutes long
            results = await asyncio.gather(asyncio.to_thread(_session, a1.path),
                                           asyncio.to_thread(_session, c2.path))
    assert results == [(632, "BP35A1"), (632, "BP35C2")]
    for fake in (a1, c2):
        assert fake.joins == 1 and fake.resets == 1
        assert fake.failed == []
    assert "SKSCAN 2 FFFFFFFF 6" in a1.lines and "SKSCAN 2 FFFFFFFF 6 0" in c2.lines
    sent = [line.split()[-2:] for line in c2.lines if line.startswith("SKSENDTO")]
    assert sent and all(side == "0" for side, _length in sent)  # BP35C2: SIDE before length
