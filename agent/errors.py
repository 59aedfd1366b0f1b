"""The agent package's exceptions: one root, subclasses say what the caller does next."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent package raises on purpose."""


class KeyFileError(AgentError):
    """A key file is missing, malformed, of the wrong type or readable by others: stop."""


class EnvelopeError(AgentError):
    """An envelope cannot be built or is malformed, tampered, replayed or not for us: drop it."""


class TopicError(AgentError):
    """A site id, purpose or kind is not allowed in an MQTT topic: a configuration bug, stop."""


class OutboxError(AgentError):
    """The durable outbox failed (disk full, corrupt database): the daemon treats it as fatal."""


class UplinkError(AgentError):
    """The broker connection failed or an upload was not acknowledged: retry with backoff."""


class ReceiverError(AgentError):
    """The reference receiver cannot start (bad key directory, bad options): stop."""


class ConfigError(AgentError):
    """The configuration is invalid; the message names the file, the field and the problem: stop."""
