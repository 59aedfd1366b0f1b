"""``hems-agent``: the installer's and operator's command line.

Each subcommand lives in its own module and is imported only when used, so ``hems-agent run``
never loads what ``scan`` or ``demo`` need.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help). The module provides ``add_arguments(parser)`` and
# ``main(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "scan": ("agent.scan_cli", "find SunSpec / profiled Modbus devices and read them once"),
    "demo": ("agent.demo", "run simulated devices and show live canonical readings"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hems-agent",
        description="Home energy gateway agent: reads devices, applies the household's "
        "consent on the device, uploads only what each purpose allows.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args._module.main(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
