"""Structured logs for journald and terminals: one logfmt line per event.

Messages carry purposes, device names (as configured) and counts; never serial numbers,
addresses, pairing codes or measured values at INFO. Libraries that would log device data are
kept out where they are wrapped: pymodbus (which dumps received frames in hex) and asyncio's
tracebacks from inside it, by ``drivers.framing.contain_library_logs``.
"""

from __future__ import annotations

import logging
import os
import sys


class LogfmtFormatter(logging.Formatter):
    """``level=warning logger=agent.sources.modbus msg="device meter: ..."``."""

    def __init__(self, *, timestamps: bool) -> None:
        super().__init__()
        self._timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message} | {self.formatException(record.exc_info)}"
        quoted = message.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        prefix = ""
        if self._timestamps:
            prefix = f"time={self.formatTime(record, '%Y-%m-%dT%H:%M:%S%z')} "
        return f'{prefix}level={record.levelname.lower()} logger={record.name} msg="{quoted}"'


def setup_logging(level: str = "info") -> None:
    """Log to stdout; under systemd (JOURNAL_STREAM set) journald adds the timestamps."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(LogfmtFormatter(timestamps="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter (connection retries with addresses) stays below WARNING. pymodbus is not
    # listed: drivers.transport cuts its logger off entirely, and a level set here must not
    # undo that.
    for noisy in ("aiomqtt", "paho", "uvicorn", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
