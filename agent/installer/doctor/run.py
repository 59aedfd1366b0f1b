"""``hems-agent doctor``: check a provisioned gateway and say, for each failure, how to fix it.

Checks, in order: the configuration is valid; secrets are private and every key file loads
(:mod:`agent.installer.doctor.config`); the clock is synchronised (:mod:`agent.host.health`);
each device (Modbus, ECHONET Lite, the B-route smart meter) answers with sane values
(:mod:`agent.installer.doctor.devices`, :mod:`agent.installer.doctor.echonet`); the broker is
reachable, its TLS certificate chains to the pinned CA, the credentials are accepted, a publish
on the site's own topic is acknowledged and one on another site's topic is refused
(:mod:`agent.installer.doctor.uplink`); the outbox is healthy; the consent ledger's hash chain
is intact (:mod:`agent.installer.doctor.state`);
the systemd watchdog is configured. Exit code 0 only when none fails. Every network step has a
deadline, so an unplugged gateway is diagnosed in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from pathlib import Path

from agent.config.model import DEFAULT_PATH
from agent.host.check import Check, Status, failed
from agent.host.health import clock_check, watchdog_check
from agent.installer.doctor.config import config_checks
from agent.installer.doctor.devices import device_checks
from agent.installer.doctor.echonet import probe_all
from agent.installer.doctor.state import ledger_check, outbox_check
from agent.installer.doctor.uplink import UplinkResult, uplink_test


async def run_checks(path: Path, *, unit_file: Path | None = None,
                     deadline: float = 3.0) -> list[Check]:
    """Every check, in order; the network ones run concurrently, each with its deadline."""
    config, checks = config_checks(path)
    if config is None:
        return checks
    checks.append(clock_check(config))
    secrets_ok = checks[-2].status is Status.PASS
    probes, uplink = await asyncio.gather(
        probe_all(config),
        uplink_test(config, deadline=deadline) if secrets_ok else _no_uplink())
    checks += device_checks(probes)
    checks += uplink.checks
    checks += [outbox_check(config), ledger_check(config), watchdog_check(unit_file)]
    return checks


async def _no_uplink() -> UplinkResult:
    return UplinkResult(checks=[failed("broker", "not tested: the secrets above are not usable",
                                       "fix the secrets first")])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH,
                        help=f"configuration file (default {DEFAULT_PATH})")
    parser.add_argument("--unit-file", type=Path, help="the systemd unit to check")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds allowed per network step (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def main(args: argparse.Namespace) -> int:
    checks = asyncio.run(run_checks(args.config, unit_file=args.unit_file,
                                    deadline=args.timeout))
    ok = all(c.status is not Status.FAIL for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]},
                         ensure_ascii=False, indent=2))
    else:
        for c in checks:
            print(f"{c.status.upper():<4}  {c.name}: {c.detail}")
            if c.fix:
                print(f"      fix: {c.fix}")
        failures = sum(c.status is Status.FAIL for c in checks)
        print("all checks passed" if ok else f"{failures} check(s) failed")
    return 0 if ok else 1
