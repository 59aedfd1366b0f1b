"""Refused topics (MQTT v5 PUBACK failure codes): held, retried alone, bounded back-off."""

from __future__ import annotations

import logging

import pytest

from agent.host.metrics import Metrics
from agent.store.outbox import OutboxItem
from agent.uplink.acks import REFUSED_METRIC, Refusals, refusal_delay

DENIED = "hems/v1/s-0001/improvement/data"
OPEN = "hems/v1/s-0001/service/data"
NOT_AUTHORIZED = (0x87, "Not authorized")
QUOTA = (0x97, "Quota exceeded")
OK = (0x00, "Success")
NO_SUBSCRIBERS = (0x10, "No matching subscribers")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def item(i: int, topic: str = DENIED) -> OutboxItem:
    purpose = topic.split("/")[3]
    return OutboxItem(id=i, topic=topic, purpose=purpose, kind="data", created=0.0,
                      payload=b"x")


def refusals(clock: Clock, metrics: Metrics | None = None) -> Refusals:
    # rng 1.0: each delay is its ceiling, 1, 2, 4, 8, then 8 again.
    return Refusals(initial=1.0, maximum=8.0, rng=lambda: 1.0, metrics=metrics, clock=clock)


def test_delays_double_up_to_the_maximum_with_half_of_each_random() -> None:
    assert [refusal_delay(a, 1.0, 8.0, lambda: 1.0) for a in range(6)] == [1, 2, 4, 8, 8, 8]
    assert refusal_delay(3, 1.0, 8.0, lambda: 0.0) == 4.0
    assert refusal_delay(10_000, 1.0, 8.0, lambda: 1.0) == 8.0


def test_success_codes_release_and_failure_codes_hold() -> None:
    clock = Clock()
    r = refusals(clock)
    r.record([item(1, OPEN), item(2, OPEN)], [OK, NO_SUBSCRIBERS])
    assert not r.held
    r.record([item(3), item(4, OPEN), item(5)], [NOT_AUTHORIZED, None, NOT_AUTHORIZED])
    assert r.held == {DENIED}
    assert r.counts == {("improvement", "data", "0x87"): 2}


def test_held_topics_are_left_out_until_due_then_one_probe_goes() -> None:
    clock = Clock()
    r = refusals(clock)
    r.record([item(1)], [NOT_AUTHORIZED])
    batch = [item(2), item(3, OPEN), item(4), item(5, OPEN)]
    assert [i.id for i in r.select(batch)] == [3, 5]
    clock.now += 1.0
    assert [i.id for i in r.select(batch)] == [2, 3, 5]


def test_each_refused_batch_doubles_the_wait_up_to_the_maximum() -> None:
    clock = Clock()
    r = refusals(clock)
    waits = []
    for n in range(6):
        r.record([item(n), item(n + 100)], [NOT_AUTHORIZED, NOT_AUTHORIZED])  # one step each
        waits.append(r.wait(idle=100.0))
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 8, 8, 8]


def test_an_accepted_probe_lifts_the_hold_and_a_later_refusal_starts_over() -> None:
    clock = Clock()
    r = refusals(clock)
    for _ in range(3):
        r.record([item(1)], [NOT_AUTHORIZED])
    r.record([item(2)], [OK])
    assert not r.held
    r.record([item(3)], [NOT_AUTHORIZED])
    assert r.wait(idle=100.0) == 1.0


def test_the_idle_wait_is_shortened_by_a_hold_but_a_due_one_never_spins() -> None:
    clock = Clock()
    r = refusals(clock)
    assert r.wait(idle=1.0) == 1.0
    r.record([item(1)], [NOT_AUTHORIZED])  # ends in 1 s
    clock.now += 0.75
    assert r.wait(idle=1.0) == pytest.approx(0.25)
    clock.now += 5.0  # due, but nothing of that topic is queued any more
    assert r.wait(idle=1.0) == 1.0


def test_logged_once_per_topic_and_reason_with_a_hint_and_no_site_id(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.uplink.acks")
    clock = Clock()
    r = refusals(clock)
    for _ in range(4):
        r.record([item(1)], [NOT_AUTHORIZED])
    r.record([item(1)], [QUOTA])  # another reason: said once more
    r.record([item(1)], [QUOTA])
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "purpose improvement (data messages): 0x87 Not authorized" in warnings[0]
    assert "check the broker ACL lets this gateway's user write " \
           "hems/v1/<site>/improvement/data" in warnings[0]
    assert "0x97 Quota exceeded" in warnings[1]
    assert "s-0001" not in caplog.text
    r.record([item(2)], [OK])
    assert "accepts purpose improvement (data messages) again after 6 refused" in caplog.text


def test_refusals_are_counted_in_the_metric_per_purpose_kind_and_reason() -> None:
    metrics = Metrics()
    r = refusals(Clock(), metrics)
    r.record([item(1), item(2), item(3, OPEN)], [NOT_AUTHORIZED, QUOTA, OK])
    assert metrics.get(REFUSED_METRIC, purpose="improvement", kind="data", reason="0x87") == 1
    assert metrics.get(REFUSED_METRIC, purpose="improvement", kind="data", reason="0x97") == 1
    assert metrics.get(REFUSED_METRIC, purpose="service", kind="data", reason="0x87") == 0
    assert "# TYPE hems_publish_refused_total counter" in metrics.render()
