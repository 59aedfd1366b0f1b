"""Shared set-up for the uplink and receiver integration tests (keys, envelopes, clients)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore
from agent.uplink.session import BrokerConfig
from agent.wire import envelope, keys
from agent.wire.topics import topic_for
from tests.support.bodies import release_body
from tests.support.mosquitto import RECEIVER_USER, Mosquitto

PASSWORDS = {"s-0001": "pw-one", "s-0002": "pw-two", RECEIVER_USER: "pw-receiver"}
WINDOW = 1767225600


@dataclass
class Fleet:
    """Device keys for two sites and one recipient key for the company."""

    devices: dict[str, ed25519.Ed25519PrivateKey] = field(default_factory=lambda: {
        site: ed25519.Ed25519PrivateKey.generate() for site in ("s-0001", "s-0002")})
    recipient: keys.RecipientPrivateKey = field(default_factory=keys.generate_recipient_key)

    def seal(self, site: str, seq: int, purpose: str = "service", tier: str = "30min",
             points: tuple[str, ...] = ("pv.energy",), span: int = 1800,
             recipient: keys.RecipientPrivateKey | None = None) -> bytes:
        recipient = recipient or self.recipient
        device = self.devices[site]
        header = envelope.Header(
            site=site, purpose=purpose, tier=tier, kind="data",
            recipient_key=recipient.key_id, kem=recipient.kem,
            device_key=keys.device_key_id(device.public_key()), catalogue="test",
            consent_id="c-1", consent_hash="ab" * 32, seq=seq,
            window_start=WINDOW + seq * span, window_end=WINDOW + (seq + 1) * span,
            created=1767227401000)
        body = release_body(header, points, float(seq))
        return envelope.seal(header, body, recipient=recipient.public, device_key=device)

    def receiver(self, db: Path) -> tuple[Receiver, io.StringIO]:
        out = io.StringIO()
        receiver = Receiver(
            device_keys={s: k.public_key() for s, k in self.devices.items()},
            recipient_keys={self.recipient.key_id: self.recipient}, rules=CatalogueRules(),
            replay=ReplayStore(db), output=out)
        return receiver, out


def broker_config(broker: Mosquitto, user: str, client_id: str | None = None) -> BrokerConfig:
    return BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=broker.ca,
                        client_id=client_id or f"{user}-client", username=user,
                        password=PASSWORDS[user], timeout=2.0, backoff_initial=0.05,
                        backoff_max=0.5, refusal_backoff_initial=0.05,
                        refusal_backoff_max=0.5)


def data_topic(site: str, purpose: str = "service") -> str:
    return topic_for(site, purpose, "data")


def accepted_seqs(out: io.StringIO) -> list[tuple[str, int]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return [(line["header"]["site"], line["header"]["seq"]) for line in lines]


async def wait_until(condition: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    """Poll ``condition``; a deadline only so a broken build fails instead of hanging."""
    async with asyncio.timeout(deadline):
        # Conditions include a broker's log file: there is no event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert condition(), what
