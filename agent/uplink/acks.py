"""PUBACK reason codes (MQTT v5) and the topics the broker refuses.

A v5 broker answers a QoS 1 publish it will not take (its ACL denies the topic, a quota, a
payload check) with a PUBACK carrying a failure reason code (0x80 or above). paho passes that
code to ``on_publish`` but aiomqtt 2.5 drops it, so a refused envelope would look delivered and
leave the outbox. :class:`AckCodes` wraps the callback aiomqtt installs on its paho client and
records the code per message id; :class:`Refusals` keeps a refused topic's envelopes in the
outbox and retries it alone, with a growing, bounded delay, while other topics keep flowing.

MQTT 3.1.1 has no reason codes: paho reports every PUBACK as 0x00 and nothing here changes.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiomqtt
from paho.mqtt.client import CallbackOnPublish_v2
from paho.mqtt.reasoncodes import ReasonCode

from agent.host.metrics import Metrics
from agent.store.outbox import OutboxItem

log = logging.getLogger(__name__)

SUCCESS = 0x00
FAILURE = 0x80  # reason codes from here on say the broker did not take the message
REFUSED_METRIC = "hems_publish_refused_total"

# What to check for the refusals a broker is likely to send; others point at its log.
_HINTS = {
    0x87: "check the broker ACL lets this gateway's user write {topic}",
    0x97: "the broker's quota for this client is used up; check its limits",
    0x99: "the broker checks payload formats; envelopes are binary, turn that check off",
    0x95: "the broker's maximum message size is below this envelope; raise it",
    0x90: "the broker does not accept the topic name {topic}",
}

# The message id of the publish the current task is making (one list per publish call).
_MID: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("mid", default=None)


class AckCodes:
    """The reason code of every PUBACK one aiomqtt client receives, per message id.

    aiomqtt maps a mid to an ``asyncio.Event`` in its paho ``on_publish`` callback and returns
    nothing from ``publish``. Two wrappers on its paho client fill the gap: ``publish`` notes the
    mid paho chose (in a context variable, so concurrent publishes, each in its own task, never
    mix them up) and ``on_publish`` stores the code before aiomqtt wakes the waiting publish.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._codes: dict[int, tuple[int, str]] = {}
        paho = client._client
        inner_publish = paho.publish
        if paho.on_publish is None:
            raise RuntimeError("aiomqtt installed no on_publish callback; cannot read PUBACKs")
        # aiomqtt creates its paho client with CallbackAPIVersion.VERSION2 (five arguments).
        inner_on_publish = cast(CallbackOnPublish_v2, paho.on_publish)

        def publish(*args: Any, **kwargs: Any) -> Any:
            info = inner_publish(*args, **kwargs)
            # A code left over from an earlier use of this mid (a publish that timed out and
            # was answered late) must not answer this one. Its PUBACK cannot have arrived yet:
            # paho reads the socket only from the event loop, never inside publish().
            self._codes.pop(info.mid, None)
            holder = _MID.get()
            if holder is not None:
                holder.append(info.mid)
            return info

        def on_publish(paho_client: Any, userdata: Any, mid: int, reason_code: ReasonCode,
                       properties: Any) -> None:
            # paho re-raises what a callback raises; this only stores two plain values.
            self._codes[mid] = (int(reason_code.value), str(reason_code.getName()))
            inner_on_publish(paho_client, userdata, mid, reason_code, properties)

        paho.publish = publish  # type: ignore[method-assign]
        paho.on_publish = on_publish

    async def publish(self, client: aiomqtt.Client, topic: str, payload: bytes,
                      ack_wait: float) -> tuple[int, str] | None:
        """Publish at QoS 1: the PUBACK's (reason code, name), or None if no PUBACK came
        (connection lost, timed out: the outcome is unknown, send it again)."""
        holder: list[int] = []
        token = _MID.set(holder)
        try:
            await client.publish(topic, payload, qos=1, timeout=ack_wait)
        except aiomqtt.MqttError:
            return None
        finally:
            _MID.reset(token)
        # aiomqtt returned, so its on_publish ran, and ours stored the code just before it.
        # (Were aiomqtt to stop calling these wrappers, every PUBACK would read as a success,
        # the old behaviour: tests/integration/test_uplink_refusals.py would fail.)
        accepted = (SUCCESS, "Success")
        return self._codes.pop(holder[0], accepted) if holder else accepted


def refusal_delay(attempt: int, initial: float, maximum: float,
                  rng: Callable[[], float]) -> float:
    """Doubling delay capped at ``maximum``, half of it fixed and half random."""
    ceiling = min(maximum, initial * 2 ** min(attempt, 30))
    return float(ceiling / 2 + rng() * ceiling / 2)


@dataclass(slots=True)
class _Hold:
    purpose: str
    kind: str
    code: int
    name: str
    attempts: int
    until: float
    refused: int


def topic_hint(purpose: str, kind: str) -> str:
    """The topic of ``purpose`` and ``kind`` without the site id (kept out of the logs)."""
    return f"hems/v1/<site>/{purpose}/{kind}"


class Refusals:
    """Topics whose publishes the broker refused: held back, retried one envelope at a time.

    A refusal is per topic (an ACL denies a topic), so one refused purpose must not stop the
    others. Each refused topic waits ``initial`` seconds, doubling up to ``maximum``; when the
    wait is over one envelope of it goes out as a probe. The first accepted publish lifts the
    hold and the rest drain. Envelopes are never deleted here: only an accepting PUBACK, in the
    publisher, acknowledges them.
    """

    def __init__(self, *, initial: float, maximum: float, rng: Callable[[], float],
                 metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._initial, self._maximum, self._rng, self._clock = initial, maximum, rng, clock
        self._metrics = metrics
        self._holds: dict[str, _Hold] = {}
        self.counts: dict[tuple[str, str, str], int] = {}
        """Refused publishes since start, per (purpose, kind, reason code as ``0x87``)."""
        if metrics is not None:
            metrics.describe(REFUSED_METRIC, "counter",
                             "Publishes the broker refused with an MQTT v5 reason code; the "
                             "envelopes stay queued (per purpose, kind and reason)")

    @property
    def held(self) -> frozenset[str]:
        """Topics held back now."""
        return frozenset(self._holds)

    def select(self, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """``items`` without those of held topics, except one probe per hold that is due."""
        now = self._clock()
        probes: set[str] = set()
        chosen = []
        for item in items:
            hold = self._holds.get(item.topic)
            if hold is None:
                chosen.append(item)
            elif hold.until <= now and item.topic not in probes:
                probes.add(item.topic)
                chosen.append(item)
        return chosen

    def wait(self, idle: float) -> float:
        """How long an idle publisher may sleep: ``idle``, or less if a hold ends sooner."""
        now = self._clock()
        # A hold already due whose topic has nothing queued must not make the loop spin.
        ahead = [hold.until - now for hold in self._holds.values() if hold.until > now]
        return min([idle, *ahead])

    def record(self, items: Sequence[OutboxItem],
               codes: Sequence[tuple[int, str] | None]) -> None:
        """Note one batch's PUBACKs: accepted topics are released, refused ones held."""
        refused: dict[str, tuple[OutboxItem, int, str, int]] = {}
        for item, code in zip(items, codes, strict=True):
            if code is None:
                continue
            if code[0] < FAILURE:
                self._release(item.topic)
                continue
            key = (item.purpose, item.kind, f"0x{code[0]:02x}")
            self.counts[key] = self.counts.get(key, 0) + 1
            if self._metrics is not None:
                self._metrics.inc(REFUSED_METRIC, purpose=key[0], kind=key[1], reason=key[2])
            count = refused[item.topic][3] + 1 if item.topic in refused else 1
            refused[item.topic] = (item, code[0], code[1], count)
        for topic, (first, value, name, count) in refused.items():
            self._hold(topic, first, value, name, count)

    def _hold(self, topic: str, item: OutboxItem, code: int, name: str, count: int) -> None:
        hold = self._holds.get(topic)
        attempts = 0 if hold is None else hold.attempts + 1
        delay = refusal_delay(attempts, self._initial, self._maximum, self._rng)
        fresh = hold is None or hold.code != code
        self._holds[topic] = _Hold(purpose=item.purpose, kind=item.kind, code=code, name=name,
                                   attempts=attempts, until=self._clock() + delay,
                                   refused=count + (0 if hold is None else hold.refused))
        if fresh:  # once per (topic, reason); retries are logged at debug level
            hint = _HINTS.get(code, "see the broker's log").format(
                topic=topic_hint(item.purpose, item.kind))
            log.warning("broker refused purpose %s (%s messages): 0x%02x %s; its envelopes "
                        "stay queued and are retried alone, first in %.0f s — %s",
                        item.purpose, item.kind, code, name, delay, hint)
        else:
            log.debug("broker still refuses purpose %s (%s messages): 0x%02x %s; next try "
                      "in %.0f s", item.purpose, item.kind, code, name, delay)

    def _release(self, topic: str) -> None:
        hold = self._holds.pop(topic, None)
        if hold is not None:
            log.info("broker accepts purpose %s (%s messages) again after %d refused "
                        "publishes; its queued envelopes go out now",
                        hold.purpose, hold.kind, hold.refused)
