"""Which frame answers which request (drivers.echonet.client.answers), without I/O."""

from __future__ import annotations

import pytest

from drivers.echonet.client import REPLIES, EchonetClient, answers
from drivers.echonet.codec import Eoj, Esv, Frame, Property

METER = Eoj(class_code=0x0288, instance=0x01)
ANY_PROFILE = Eoj(class_code=0x0EF0, instance=0x00)
CONTROLLER = Eoj(class_code=0x05FF, instance=0x01)


def _frame(esv: Esv, *, tid: int = 7, seoj: Eoj = CONTROLLER, deoj: Eoj = METER) -> Frame:
    return Frame(tid=tid, seoj=seoj, deoj=deoj, esv=esv, properties=(Property(epc=0xE7),))


@pytest.mark.parametrize(("request_esv", "reply_esv", "taken"), [
    (Esv.GET, Esv.GET_RES, True), (Esv.GET, Esv.GET_SNA, True),
    (Esv.GET, Esv.SET_RES, False), (Esv.GET, Esv.INF, False), (Esv.GET, Esv.GET, False),
    (Esv.GET, Esv.SETGET_RES, False), (Esv.SETC, Esv.SET_RES, True),
    (Esv.SETC, Esv.SETC_SNA, True), (Esv.SETC, Esv.GET_RES, False),
    (Esv.SETI, Esv.SETI_SNA, True), (Esv.SETI, Esv.SET_RES, False),
    (Esv.INF_REQ, Esv.INF, True), (Esv.INF_REQ, Esv.INF_SNA, True),
    (Esv.SETGET, Esv.SETGET_RES, True), (Esv.SETGET, Esv.SETGET_SNA, True),
])
def test_the_reply_esv_must_answer_the_request_esv(request_esv: Esv, reply_esv: Esv,
                                                   taken: bool) -> None:
    request = _frame(request_esv)
    assert answers(request, _frame(reply_esv, seoj=METER, deoj=CONTROLLER)) is taken


def test_tid_and_object_must_match() -> None:
    request = _frame(Esv.GET)
    assert answers(request, _frame(Esv.GET_RES, seoj=METER))
    assert not answers(request, _frame(Esv.GET_RES, tid=8, seoj=METER))
    assert not answers(request, _frame(Esv.GET_RES, seoj=Eoj(class_code=0x0288, instance=2)))
    assert not answers(request, _frame(Esv.GET_RES, seoj=Eoj(class_code=0x0287, instance=1)))
    # Instance 0x00 asks every instance of the class: any instance answers, no other class.
    wide = _frame(Esv.GET, deoj=ANY_PROFILE)
    assert answers(wide, _frame(Esv.GET_RES, seoj=Eoj(class_code=0x0EF0, instance=0x01)))
    assert not answers(wide, _frame(Esv.GET_RES, seoj=METER))


async def test_only_requests_can_be_sent() -> None:
    assert set(REPLIES) == {Esv.SETI, Esv.SETC, Esv.GET, Esv.INF_REQ, Esv.SETGET}
    client = EchonetClient()
    with pytest.raises(ValueError, match="ESV 0x73 is not a request"):
        await client.request("192.0.2.1", METER, Esv.INF, [])
    with pytest.raises(ValueError, match="ESV 0x72 is not a request"):
        await client.multicast(METER, Esv.GET_RES, [], wait=0.0)
