"""The drivers package's exceptions: one root, subclasses that tell the caller what to do next.

Library errors (pymodbus, pyserial, socket) are translated once, at the transport edge, with
``raise ... from exc``; nothing from those libraries leaves ``drivers``.
"""

from __future__ import annotations


class DriverError(Exception):
    """Root of every error raised by ``drivers``."""


class DeviceUnreachable(DriverError):
    """The device did not answer (refused, timed out, line down). Retry later with backoff."""


class DeviceProtocolError(DriverError):
    """The device answered, but not as expected: an exception code, a short or garbled frame.

    Retrying the same request is unlikely to help; report it and carry on with other points.
    """

    def __init__(self, message: str, *, exception_code: int | None = None) -> None:
        super().__init__(message)
        self.exception_code = exception_code


class DiscoveryError(DriverError):
    """No supported device was found where one was expected (no SunSpec marker, broken chain)."""


class ProfileError(DriverError):
    """A register profile file is invalid. The message names the file and the field."""
