"""``hems-agent check-config FILE``: validate a configuration without starting anything.

It runs the checks ``hems-agent run`` makes before it starts (:func:`agent.config_checks.
load_checked`, the same function), so an upgrade can gate on it: the file parses and validates,
every key, certificate and secret file it names is there, private where it must be and loads,
and the state directory can be used. Exit status 0: run will start on it; 2: it will not, and
each problem is printed on one line naming the file and the field.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.config.model import DEFAULT_PATH
from agent.config_checks import device_count, load_checked
from agent.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_PATH,
                        help=f"configuration file (default {DEFAULT_PATH})")


def main(args: argparse.Namespace) -> int:
    try:
        config = load_checked(args.file)
    except ConfigError as exc:
        print(f"hems-agent: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: OK ({device_count(config)}, {len(config.recipients)} recipients)")
    return 0
