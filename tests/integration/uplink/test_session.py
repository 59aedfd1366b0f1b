"""The MQTT edge (agent/uplink/session.py) against a real mosquitto: broker failures surface as
UplinkError (never an aiomqtt or paho error), a refused login as ConnectRefused, and received
messages carry their retain flag and, on a manual-ack session, an ack() the broker waits for."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import UplinkError
from agent.uplink.session import ConnectRefused, Message, Session, connect, tls_context
from tests.conftest import free_port
from tests.integration.uplink_helpers import PASSWORDS, broker_config, data_topic
from tests.support.mosquitto import RECEIVER_USER, Mosquitto

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", PASSWORDS) as mosquitto:
        yield mosquitto


async def _next(session: Session) -> Message:
    async with asyncio.timeout(10):  # a guard against a hang, not a measurement
        return await anext(session.messages)


async def test_a_closed_port_is_an_uplink_error_not_a_refusal(broker: Mosquitto) -> None:
    config = dataclasses.replace(broker_config(broker, "s-0001"), port=free_port())
    with pytest.raises(UplinkError, match="cannot connect to the broker") as caught:
        async with connect(config, tls_context(config)):
            pass
    assert not isinstance(caught.value, ConnectRefused)
    assert caught.value.__cause__ is not None  # raised from the library's error


async def test_a_wrong_password_is_a_connect_refused(broker: Mosquitto) -> None:
    config = dataclasses.replace(broker_config(broker, "s-0001"), password="wrong")
    with pytest.raises(ConnectRefused, match=r"refused the login.*Not authorized"):
        async with connect(config, tls_context(config)):
            pass


async def test_publish_subscribe_and_messages_after_the_broker_stops_raise_uplink_error(
        broker: Mosquitto) -> None:
    gateway = broker_config(broker, "s-0001")
    watcher = broker_config(broker, RECEIVER_USER, "watcher")
    async with connect(gateway, tls_context(gateway)) as sender, \
            connect(watcher, tls_context(watcher)) as reader:
        assert await reader.subscribe("hems/v1/#") == [1]
        assert await sender.publish(data_topic("s-0001"), b"one") == (0x00, "Success")
        assert (await _next(reader)).payload == b"one"
        broker.stop()
        with pytest.raises(UplinkError, match="connection lost"):
            await _next(reader)
        with pytest.raises(UplinkError, match="publish not acknowledged"):
            await sender.publish(data_topic("s-0001"), b"two", wait=2)
        with pytest.raises(UplinkError, match="subscribe failed"):
            await sender.subscribe("hems/v1/s-0001/control/#")


async def test_a_message_not_acked_on_a_manual_ack_session_comes_again(
        broker: Mosquitto) -> None:
    gateway = broker_config(broker, "s-0001")
    receiver = broker_config(broker, RECEIVER_USER, "rx-manual")
    async with connect(receiver, tls_context(receiver), manual_ack=True) as session:
        await session.subscribe("hems/v1/+/+/+")
    async with connect(gateway, tls_context(gateway)) as sender:
        await sender.publish(data_topic("s-0001"), b"acked")
        await sender.publish(data_topic("s-0001"), b"not acked", retain=True)
    async with connect(receiver, tls_context(receiver), manual_ack=True) as session:
        first, second = await _next(session), await _next(session)
        assert (first.payload, second.payload) == (b"acked", b"not acked")
        assert (first.topic, first.retain) == (data_topic("s-0001"), False)
        first.ack()
    async with connect(receiver, tls_context(receiver), manual_ack=True) as session:
        again = await _next(session)
        assert again.payload == b"not acked"
        again.ack()
    watcher = broker_config(broker, RECEIVER_USER, "late-watcher")
    async with connect(watcher, tls_context(watcher)) as late:
        await late.subscribe(data_topic("s-0001"))
        retained = await _next(late)
        assert (retained.payload, retained.retain) == (b"not acked", True)
