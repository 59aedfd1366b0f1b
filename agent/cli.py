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
    "run": ("agent.daemon.cli", "run the agent (the systemd service runs this)"),
    "check-config": (
        "agent.installer.check_config",
        "validate a configuration file without starting",
    ),
    "scan": (
        "agent.installer.scan.cli",
        "find SunSpec / profiled Modbus devices and read them once",
    ),
    "demo": ("agent.demo.cli", "run everything with simulated devices: agent, broker, page, cloud"),
    "provision": (
        "agent.installer.provision.plan",
        "set up this gateway: keys, broker, devices, consent",
    ),
    "doctor": (
        "agent.installer.doctor.run",
        "check a provisioned gateway and explain each failure's fix",
    ),
    "report": ("agent.installer.report", "print the commissioning report (text, JSON or HTML)"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hems-agent")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the parser, importing only the module of the subcommand being run."""
    parser = argparse.ArgumentParser(
        prog="hems-agent",
        description="Home energy gateway agent: reads devices, applies the household's "
        "consent on the device, uploads only what each purpose allows.",
    )
    parser.add_argument("--version", action="version", version=f"hems-agent {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments).parse_args(arguments)
    try:
        code: int = args._module.main(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
