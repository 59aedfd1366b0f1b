"""Publisher against a real mosquitto (TLS, passwords, ACL): restarts lose nothing."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.errors import UplinkError
from agent.store.outbox import Outbox, OutboxConfig
from agent.store.outbox_types import OutboxItem
from agent.uplink.publisher import Publisher
from agent.uplink.session import BrokerConfig, Session, connect, tls_context
from tests.integration.uplink_helpers import (
    PASSWORDS,
    Fleet,
    accepted_seqs,
    broker_config,
    data_topic,
    wait_until,
)
from tests.support.mosquitto import RECEIVER_USER, Mosquitto

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", PASSWORDS) as mosquitto:
        yield mosquitto


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_every_envelope_arrives_exactly_once_across_broker_restarts(
        tmp_path: Path, broker: Mosquitto, running: list[asyncio.Task[None]]) -> None:
    fleet = Fleet()
    receiver, out = fleet.receiver(tmp_path / "seen.db")
    # Unshared: mosquitto 2.0.11 loses shared subscriptions over a restart (docs/broker.md).
    running.append(asyncio.create_task(
        receiver.run(broker_config(broker, RECEIVER_USER, "rx-1"), None)))
    await wait_until(lambda: "rx-1" in broker.log_text() and "SUBSCRIBE" in broker.log_text(),
                     "receiver subscribed")
    outbox = Outbox(tmp_path / "outbox.db", OutboxConfig(flush_interval=0.1))
    publisher = Publisher(broker_config(broker, "s-0001"), outbox, batch=10)
    outbox.on_commit = publisher.notify
    running.append(asyncio.create_task(publisher.run()))
    running.append(asyncio.create_task(outbox.run_flusher()))

    def enqueue(seqs: range) -> None:
        for seq in seqs:
            outbox.enqueue(fleet.seal("s-0001", seq), topic=data_topic("s-0001"),
                           purpose="service", recipient="company", tier="30min", kind="data")
        outbox.flush()

    enqueue(range(0, 40))
    await wait_until(lambda: receiver.accepted >= 10, "first envelopes received")
    broker.stop()  # mid-stream: publishes are in flight, some acked, some not
    enqueue(range(40, 60))
    broker.start()
    enqueue(range(60, 80))
    await wait_until(lambda: receiver.accepted >= 80 and outbox.stats().depth == 0,
                     "everything sent before the hard kill")
    # SIGKILL loses whatever mosquitto accepted since its last autosave (docs/broker.md), so
    # kill it once its database holds the receiver's session, with envelopes still to come.
    await wait_until(lambda: _saved_after_subscribe(broker), "broker saved the session")
    broker.kill()
    enqueue(range(80, 100))
    broker.start()
    await wait_until(lambda: outbox.stats().depth == 0, "outbox drained", deadline=90)
    await wait_until(lambda: receiver.accepted >= 100, "all envelopes received", deadline=30)
    assert sorted(accepted_seqs(out)) == [("s-0001", seq) for seq in range(100)]
    assert set(receiver.rejected) <= {"replay"}  # duplicates of unknown-outcome publishes
    assert publisher.reconnects >= 2


def _saved_after_subscribe(broker: Mosquitto) -> bool:
    log = broker.log_text()
    return "Saving in-memory database" in log[log.rfind("rx-1 1 hems/v1/"):]


async def test_a_gateway_cannot_publish_into_another_sites_topics(
        tmp_path: Path, broker: Mosquitto, running: list[asyncio.Task[None]]) -> None:
    fleet = Fleet()
    receiver, out = fleet.receiver(tmp_path / "seen.db")
    running.append(asyncio.create_task(
        receiver.run(broker_config(broker, RECEIVER_USER, "rx-1"), "g1")))
    await wait_until(lambda: "SUBSCRIBE" in broker.log_text(), "receiver subscribed")
    config = broker_config(broker, "s-0001")
    async with connect(config, tls_context(config)) as client:
        # s-0001 holds s-0002's device key here: only the broker's ACL can stop it.
        await client.publish(data_topic("s-0002"), fleet.seal("s-0002", 1), qos=1)
        await client.publish(data_topic("s-0001"), fleet.seal("s-0001", 2), qos=1)
    # Messages from one client arrive in order: once the second is in, the first never will.
    await wait_until(lambda: receiver.accepted == 1, "own-site envelope received")
    assert accepted_seqs(out) == [("s-0001", 2)]
    assert "Denied PUBLISH from s-0001-client" in broker.log_text()


async def test_a_wrong_password_is_refused(broker: Mosquitto) -> None:
    bad = BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=broker.ca, client_id="x",
                       username="s-0001", password="wrong", timeout=2.0)
    with pytest.raises(UplinkError, match=r"cannot connect.*Not authorized"):
        async with connect(bad, tls_context(bad)):
            pass


# paho leaks the socket of a failed TLS handshake (it never closes it); that is not ours.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_broker_certificate_from_another_ca_is_refused(tmp_path: Path,
                                                               broker: Mosquitto) -> None:
    other_ca = Mosquitto(tmp_path / "other", {}).ca  # a CA the broker's certificate is not from
    pinned = BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=other_ca, client_id="y",
                          username="s-0001", password=PASSWORDS["s-0001"], timeout=2.0)
    with pytest.raises(UplinkError, match="CERTIFICATE_VERIFY_FAILED"):
        async with connect(pinned, tls_context(pinned)):
            pass
    gc.collect()


async def test_mqtt_311_publishes_too(tmp_path: Path, broker: Mosquitto,
                                      running: list[asyncio.Task[None]]) -> None:
    fleet = Fleet()
    receiver, out = fleet.receiver(tmp_path / "seen.db")
    running.append(asyncio.create_task(
        receiver.run(broker_config(broker, RECEIVER_USER, "rx-1"), "g1")))
    await wait_until(lambda: "SUBSCRIBE" in broker.log_text(), "receiver subscribed")
    base = broker_config(broker, "s-0001")
    config = BrokerConfig(host=base.host, port=base.port, ca_file=base.ca_file,
                          client_id="old-gw", username="s-0001", password=base.password,
                          protocol="3.1.1", timeout=2.0)
    async with connect(config, tls_context(config)) as client:
        assert isinstance(client, Session)
        await client.publish(data_topic("s-0001"), fleet.seal("s-0001", 5), qos=1)
    await wait_until(lambda: receiver.accepted == 1, "envelope received")
    assert accepted_seqs(out) == [("s-0001", 5)]


async def test_a_shared_subscription_splits_the_stream_between_receivers(
        tmp_path: Path, broker: Mosquitto, running: list[asyncio.Task[None]]) -> None:
    fleet = Fleet()
    pairs = [fleet.receiver(tmp_path / f"seen-{i}.db") for i in range(2)]
    for i, (receiver, _) in enumerate(pairs):
        running.append(asyncio.create_task(
            receiver.run(broker_config(broker, RECEIVER_USER, f"rx-{i}"), "g1")))
        await wait_until(lambda i=i: f"rx-{i} 1 $share/g1/" in broker.log_text(),
                         "receiver subscribed")
    outbox = Outbox(tmp_path / "outbox.db", OutboxConfig(flush_interval=0.1))
    publisher = Publisher(broker_config(broker, "s-0001"), outbox, batch=10)
    outbox.on_commit = publisher.notify
    running.append(asyncio.create_task(publisher.run()))
    running.append(asyncio.create_task(outbox.run_flusher()))
    for seq in range(40):
        outbox.enqueue(fleet.seal("s-0001", seq), topic=data_topic("s-0001"),
                       purpose="service", recipient="company", tier="30min", kind="data")
    outbox.flush()
    await wait_until(lambda: sum(r.accepted for r, _ in pairs) >= 40, "all envelopes received")
    got = [accepted_seqs(out) for _, out in pairs]
    assert sorted(got[0] + got[1]) == [("s-0001", seq) for seq in range(40)]
    assert got[0] and got[1]  # both members of the group did part of the work


async def test_an_idle_publisher_with_nothing_queued_waits_for_a_commit(
        tmp_path: Path, broker: Mosquitto, running: list[asyncio.Task[None]]) -> None:
    fleet = Fleet()
    receiver, _ = fleet.receiver(tmp_path / "seen.db")
    running.append(asyncio.create_task(
        receiver.run(broker_config(broker, RECEIVER_USER, "rx-idle"), None)))
    await wait_until(lambda: "rx-idle" in broker.log_text() and "SUBSCRIBE" in broker.log_text(),
                     "receiver subscribed")
    outbox = Outbox(tmp_path / "outbox.db", OutboxConfig(flush_interval=0.1))
    publisher = Publisher(broker_config(broker, "s-0001"), outbox, batch=10, idle_wait=0.01,
                          empty_wait=3600.0)
    outbox.on_commit = publisher.notify
    looks = 0
    next_batch = outbox.next_batch

    def counted(limit: int = 50) -> list[OutboxItem]:
        nonlocal looks
        looks += 1
        return next_batch(limit)

    outbox.next_batch = counted  # type: ignore[method-assign]
    running.append(asyncio.create_task(publisher.run()))
    running.append(asyncio.create_task(outbox.run_flusher()))
    await publisher.connected.wait()
    await asyncio.sleep(0.5)  # fifty idle_waits: with nothing queued, no need to look again
    assert looks <= 2
    outbox.enqueue(fleet.seal("s-0001", 0), topic=data_topic("s-0001"), purpose="service",
                   recipient="company", tier="30min", kind="data")
    outbox.flush()  # the commit wakes it at once, long before empty_wait
    await wait_until(lambda: receiver.accepted == 1, "the committed envelope received",
                     deadline=30)
