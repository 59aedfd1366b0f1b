"""MQTT topic names: ``hems/v1/{site_id}/{purpose}/{kind}``.

Site ids and purposes come from configuration and the catalogue; they are checked here so no
wildcard (``+``, ``#``), separator (``/``) or control character can reach a topic name, where it
would let a gateway address another site's topics or subscribe wider than it should.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import TopicError

PREFIX = "hems/v1"
KINDS: frozenset[str] = frozenset({"data", "consent", "event", "deletion"})
# Lower-case letters, digits, '_' and '-', starting with a letter or digit: no MQTT specials,
# no '$' (reserved for broker topics), bounded length.
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def check_segment(value: str, what: str) -> str:
    """Return ``value`` if it is a safe topic segment, else raise TopicError naming ``what``."""
    if not isinstance(value, str) or _SEGMENT.fullmatch(value) is None:
        raise TopicError(
            f"{what} {value!r} is not a valid topic segment: use 1-64 characters from "
            "a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return value


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is one of :data:`KINDS`, else raise TopicError."""
    if kind not in KINDS:
        raise TopicError(f"kind {kind!r} is not one of {sorted(KINDS)}")
    return kind


@dataclass(frozen=True, slots=True, kw_only=True)
class Topic:
    """A parsed uplink topic."""

    site_id: str
    purpose: str
    kind: str

    def __post_init__(self) -> None:
        check_segment(self.site_id, "site id")
        check_segment(self.purpose, "purpose")
        check_kind(self.kind)

    def __str__(self) -> str:
        return f"{PREFIX}/{self.site_id}/{self.purpose}/{self.kind}"


def topic_for(site_id: str, purpose: str, kind: str) -> str:
    """The topic a gateway publishes a ``kind`` message of ``purpose`` on."""
    return str(Topic(site_id=site_id, purpose=purpose, kind=kind))


def control_topic(site_id: str) -> str:
    """Where an operator publishes a command for ``site_id`` (no uplink filter matches it)."""
    return f"{PREFIX}/{site_id}/control"


def parse_topic(name: str) -> Topic:
    """Parse a received topic name; raise TopicError if it is not an uplink topic."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX:
        raise TopicError(f"topic {name!r} is not of the form {PREFIX}/<site>/<purpose>/<kind>")
    return Topic(site_id=parts[2], purpose=parts[3], kind=parts[4])


def shared_subscription(group: str) -> str:
    """The MQTT v5 shared subscription that splits every site's uplink among a group."""
    check_segment(group, "subscription group")
    return f"$share/{group}/{PREFIX}/+/+/+"
