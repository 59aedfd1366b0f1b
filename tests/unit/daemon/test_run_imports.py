"""What ``hems-agent run`` loads at start: code a configuration may never use stays out."""

from __future__ import annotations

import json
import subprocess
import sys

# The modules the daemon imports before it has read a configuration.
RUN_PATH = ("agent.daemon.cli", "agent.config_checks", "agent.daemon.daemon")


def _loaded_after(*modules: str) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for name in {list(modules)!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return set(json.loads(done.stdout))


def test_echonet_and_broute_drivers_load_only_for_such_a_source() -> None:
    loaded = _loaded_after(*RUN_PATH)
    assert "agent.daemon.daemon" in loaded
    assert sorted(name for name in loaded if name.startswith((
        "agent.sources.echonet", "drivers.echonet", "drivers.broute"))) == []
