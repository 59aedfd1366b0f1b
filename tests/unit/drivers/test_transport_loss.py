"""A read that the link's loss interrupts: what the read gives, and that the reading task is
left with no cancellation pending, whichever comes first in the loop."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus.exceptions import ConnectionException

from drivers.transport import Bus


async def _read_while(event: str) -> tuple[object, int]:
    bus = Bus.tcp("127.0.0.1", 9, name="inverter")  # never connected: the request is ours
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def request() -> str:  # awaits its answer as pymodbus does
        return await asyncio.wait_for(answer, 10)

    reading = asyncio.create_task(bus._unless_lost(request()))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the request is waiting for its answer
    if event in ("answer", "both"):
        answer.set_result("pdu")
    if event in ("loss", "both"):
        bus._link.connection(False)  # the connection goes down
    try:
        outcome: object = await reading
    except ConnectionException as exc:
        outcome = exc
    return outcome, reading.cancelling()


async def test_an_answer_is_returned() -> None:
    assert await _read_while("answer") == ("pdu", 0)


async def test_the_loss_fails_the_read_at_once() -> None:
    outcome, cancelling = await _read_while("loss")
    assert isinstance(outcome, ConnectionException) and cancelling == 0


async def test_an_answer_that_comes_with_the_loss_leaves_nothing_to_cancel() -> None:
    outcome, cancelling = await _read_while("both")
    # Python 3.11's wait_for keeps an answer that came with the cancellation; later ones
    # raise it: either way the read ends and no cancellation is left pending on the task
    assert outcome == "pdu" or isinstance(outcome, ConnectionException)
    assert cancelling == 0


async def test_an_outer_cancellation_still_cancels() -> None:
    bus = Bus.tcp("127.0.0.1", 9, name="inverter")
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    reading = asyncio.create_task(bus._unless_lost(never))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    reading.cancel()
    bus._link.connection(False)  # and the link goes down in the same turn
    with pytest.raises(asyncio.CancelledError):
        await reading
