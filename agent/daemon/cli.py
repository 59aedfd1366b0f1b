"""``hems-agent run [--config FILE]``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import datetime
from pathlib import Path

from agent.config.model import DEFAULT_PATH

log = logging.getLogger("agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH,
                        help=f"configuration file (default {DEFAULT_PATH})")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    sim = parser.add_argument_group("simulated time (demos and tests against simulators only)")
    sim.add_argument("--time-speed", type=float, default=1.0, metavar="N",
                     help="stamp readings N times faster than real time")
    sim.add_argument("--time-start", type=_aware, metavar="ISO",
                     help="simulated start time, e.g. 2026-06-01T23:50+09:00")


def _aware(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a UTC offset, e.g. +09:00: {text!r}")
    return value


def main(args: argparse.Namespace) -> int:
    # lazy: the daemon with aiomqtt, cryptography and sqlite (+17.8 MB, 203 modules) loads for
    # `run` only, not when hems-agent builds its parser for another subcommand
    from agent.config_checks import load_checked
    from agent.daemon.daemon import Daemon, DaemonOptions
    from agent.errors import AgentError, ConfigError, OutboxError
    from agent.host import memory
    from agent.logs import setup_logging
    from policy.errors import PolicyError

    memory.single_arena()  # before any thread: 0.2 MB less RSS than an arena per worker thread
    setup_logging(args.log_level)
    try:  # the same checks as check-config, so what it passes this starts on
        config = load_checked(args.config)
    except ConfigError as exc:
        print(f"hems-agent: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    try:
        options = DaemonOptions(speed=args.time_speed, start=args.time_start)
        return asyncio.run(Daemon(config, options).run())
    except Exception as exc:  # reported once, with its cause; the exit status says the rest
        cause = first_leaf(exc)
        if isinstance(cause, OutboxError):
            log.critical("outbox storage failed: %s", cause)
        elif isinstance(cause, TimeoutError):
            log.critical("cannot run: a task did not start or stop in time")
        elif isinstance(cause, AgentError | PolicyError | OSError):
            log.critical("cannot run: %s", cause or type(cause).__name__)
        else:
            log.critical("unexpected failure", exc_info=cause)
        return 1


def first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
