"""``hems-agent check-config FILE``: validate a configuration without starting anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.config import DEFAULT_PATH, load_config
from agent.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_PATH,
                        help=f"configuration file (default {DEFAULT_PATH})")


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"hems-agent: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: OK ({len(config.devices)} devices, {len(config.recipients)} recipients)")
    return 0
