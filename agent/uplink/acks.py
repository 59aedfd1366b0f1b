"""PUBACK reason codes (MQTT v5) and the topics the broker refuses.

A v5 broker answers a QoS 1 publish it will not take (its ACL denies the topic, a quota, a
payload check) with a PUBACK carrying a failure reason code (0x80 or above); a refused
envelope must not look delivered and leave the outbox. :class:`agent.uplink.session.Session`
reads the code of each PUBACK (aiomqtt alone drops it); this module says what a code means:
:func:`publish_code` gives it, :class:`Refusals` keeps a refused topic's envelopes in the
outbox and retries it alone, with a growing, bounded delay, while other topics keep flowing.

MQTT 3.1.1 has no reason codes: every PUBACK reads 0x00 and nothing here changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.errors import UplinkError
from agent.host.metrics import Metrics
from agent.store.outbox import OutboxItem
from agent.uplink.session import Session

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


async def publish_code(session: Session, topic: str, payload: bytes,
                       ack_wait: float) -> tuple[int, str] | None:
    """Publish at QoS 1: the PUBACK's (reason code, name), or None if no PUBACK came
    (connection lost, timed out: the outcome is unknown, send it again)."""
    try:
        return await session.publish(topic, payload, qos=1, wait=ack_wait)
    except UplinkError:
        return None


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
