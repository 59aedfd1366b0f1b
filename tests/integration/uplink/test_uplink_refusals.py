"""Publisher against a real mosquitto whose ACL refuses one purpose: MQTT v5 PUBACK codes.

mosquitto 2 answers a v5 client's QoS 1 publish on a denied topic with PUBACK 0x87 (Not
authorized) and keeps the connection; a 3.1.1 client gets a plain PUBACK it cannot tell apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.host.metrics import Metrics
from agent.store.outbox import Outbox, OutboxConfig
from agent.uplink.acks import REFUSED_METRIC
from agent.uplink.publisher import Publisher
from tests.integration.uplink_helpers import (
    PASSWORDS,
    Fleet,
    accepted_seqs,
    broker_config,
    data_topic,
    wait_until,
)
from tests.support.mosquitto import ACL, RECEIVER_USER, Mosquitto

pytestmark = pytest.mark.mosquitto

# A broker ACL that lists the gateway's purposes one by one and forgot "improvement".
ONLY_SERVICE = f"""user {RECEIVER_USER}
topic read hems/v1/#

pattern write hems/v1/%u/service/#
"""
REFUSED = {"purpose": "improvement", "kind": "data", "reason": "0x87"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "broker", PASSWORDS)
    mosquitto.write_acl(ONLY_SERVICE)
    with mosquitto:
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


def _denied(broker: Mosquitto) -> int:
    return broker.log_text().count("Denied PUBLISH from s-0001-client")


def _start(publisher: Publisher, outbox: Outbox, running: list[asyncio.Task[None]]) -> None:
    outbox.on_commit = publisher.notify
    running.append(asyncio.create_task(publisher.run()))
    running.append(asyncio.create_task(outbox.run_flusher()))


async def test_a_refused_purpose_stays_queued_while_others_flow_then_drains_once(
        tmp_path: Path, broker: Mosquitto, running: list[asyncio.Task[None]],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.uplink.acks")
    fleet = Fleet()
    receiver, out = fleet.receiver(tmp_path / "seen.db")
    running.append(asyncio.create_task(  # unshared: survives the broker restart below
        receiver.run(broker_config(broker, RECEIVER_USER, "rx-1"), None)))
    await wait_until(lambda: "rx-1" in broker.log_text() and "SUBSCRIBE" in broker.log_text(),
                     "receiver subscribed")
    # The refused purpose ranks first, so its held envelopes head every batch the outbox
    # hands out: the publisher must read past them for service to go out.
    outbox = Outbox(tmp_path / "outbox.db",
                    OutboxConfig(flush_interval=0.1, priorities={"improvement": 10}))
    metrics = Metrics()
    publisher = Publisher(broker_config(broker, "s-0001"), outbox, batch=5, metrics=metrics)
    for seq in range(20):
        outbox.enqueue(fleet.seal("s-0001", seq, purpose="improvement"), kind="data",
                       topic=data_topic("s-0001", "improvement"), purpose="improvement",
                       recipient="company", tier="30min")
    for seq in range(20, 40):
        outbox.enqueue(fleet.seal("s-0001", seq), topic=data_topic("s-0001"), kind="data",
                       purpose="service", recipient="company", tier="30min")
    outbox.flush()
    _start(publisher, outbox, running)

    # Service arrives, and the refused purpose is tried again (one probe at a time) while
    # every one of its envelopes stays queued.
    await wait_until(lambda: receiver.accepted >= 20 and metrics.get(REFUSED_METRIC, **REFUSED)
                     >= 8, "service received and improvement retried")
    assert sorted(accepted_seqs(out)) == [("s-0001", seq) for seq in range(20, 40)]
    assert outbox.stats().depth == 20
    assert publisher.refusals.held == {data_topic("s-0001", "improvement")}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once per purpose and reason, not per retry
    assert "refused purpose improvement (data messages): 0x87 Not authorized" in warnings[0]
    assert "check the broker ACL" in warnings[0]
    assert "hems/v1/<site>/improvement/data" in warnings[0]
    assert "s-0001" not in caplog.text

    broker.write_acl(ACL)  # the operator fixes the ACL
    broker.restart()
    await wait_until(lambda: outbox.stats().depth == 0 and receiver.accepted >= 40,
                     "held envelopes drained after the fix")
    assert sorted(accepted_seqs(out)) == [("s-0001", seq) for seq in range(40)]
    assert not receiver.rejected  # each arrived once: refused publishes were never delivered
    assert not publisher.refusals.held
    assert metrics.get(REFUSED_METRIC, **REFUSED) == _denied(broker)  # every refusal counted
    assert publisher.refusals.counts == {("improvement", "data", "0x87"): _denied(broker)}
    assert sum("accepts purpose improvement (data messages) again" in r.getMessage()
               for r in caplog.records) == 1


async def test_mqtt_311_cannot_see_a_refusal(tmp_path: Path, broker: Mosquitto,
                                             running: list[asyncio.Task[None]]) -> None:
    # Unchanged 3.1.1 behaviour, and the reason v5 is the default: the PUBACK of a denied
    # publish looks like any other, so the envelope leaves the outbox (docs/broker.md).
    fleet = Fleet()
    outbox = Outbox(tmp_path / "outbox.db", OutboxConfig(flush_interval=0.1))
    metrics = Metrics()
    config = replace(broker_config(broker, "s-0001"), protocol="3.1.1")
    publisher = Publisher(config, outbox, metrics=metrics)
    for seq in range(3):
        outbox.enqueue(fleet.seal("s-0001", seq, purpose="improvement"), kind="data",
                       topic=data_topic("s-0001", "improvement"), purpose="improvement",
                       recipient="company", tier="30min")
    outbox.flush()
    _start(publisher, outbox, running)
    await wait_until(lambda: outbox.stats().depth == 0, "outbox emptied")
    assert _denied(broker) == 3
    assert not publisher.refusals.counts
    assert metrics.get(REFUSED_METRIC, **REFUSED) == 0


async def test_no_matching_subscribers_is_a_success(tmp_path: Path, broker: Mosquitto,
                                                    running: list[asyncio.Task[None]]) -> None:
    fleet = Fleet()
    outbox = Outbox(tmp_path / "outbox.db", OutboxConfig(flush_interval=0.1))
    publisher = Publisher(broker_config(broker, "s-0001"), outbox)
    for seq in range(3):  # nobody subscribes: mosquitto answers 0x10 No matching subscribers
        outbox.enqueue(fleet.seal("s-0001", seq), topic=data_topic("s-0001"), kind="data",
                       purpose="service", recipient="company", tier="30min")
    outbox.flush()
    _start(publisher, outbox, running)
    await wait_until(lambda: outbox.stats().depth == 0, "outbox emptied")
    assert broker.log_text().count("Sending PUBACK to s-0001-client (m") == 3
    assert broker.log_text().count(", rc16)") == 3
    assert publisher.published == 3
    assert not publisher.refusals.counts
