"""What decoding needs from a transport: read a block of holding registers.

Discovery and decoding (SunSpec, register profiles) are written against this protocol, so they
can be tested with recorded register images and run over TCP or RTU alike.
"""

from __future__ import annotations

from typing import Protocol


class RegisterReader(Protocol):
    """Reads holding registers (function 0x03) from one unit on one link.

    Implementations raise :class:`drivers.errors.DeviceUnreachable` on timeouts and lost links
    and :class:`drivers.errors.DeviceProtocolError` on exception responses; they never retry.
    """

    async def read_holding(self, address: int, count: int, *, unit: int) -> list[int]:
        """Return ``count`` (1..125) 16-bit registers starting at ``address``."""
        ...
