"""What ``hems-agent run`` loads at start: code a configuration may never use stays out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.mosquitto import make_tls

# The modules the daemon imports before it has read a configuration.
RUN_PATH = ("agent.daemon.cli", "agent.config_checks", "agent.daemon.daemon")


def _loaded_after(*modules: str, then: str = "") -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for name in {list(modules)!r}:\n"
            "    importlib.import_module(name)\n"
            f"{then}\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return set(json.loads(done.stdout))


def test_echonet_and_broute_drivers_load_only_for_such_a_source() -> None:
    loaded = _loaded_after(*RUN_PATH)
    assert "agent.daemon.daemon" in loaded
    assert sorted(name for name in loaded if name.startswith((
        "agent.sources.echonet", "drivers.echonet", "drivers.broute"))) == []


def test_the_start_up_check_of_certificates_leaves_x509_unloaded(tmp_path: Path) -> None:
    ca, certificate, key = make_tls(tmp_path)
    check = ("from pathlib import Path\n"
             "from agent.config_checks import load_ca, _certificate, _key_of\n"
             f"load_ca(Path({str(ca)!r})); _certificate(Path({str(certificate)!r}))\n"
             f"_key_of(Path({str(certificate)!r}), Path({str(key)!r}))")
    loaded = _loaded_after(*RUN_PATH, then=check)
    assert "agent.config_checks" in loaded
    assert sorted(name for name in loaded if name.startswith("cryptography.x509")) == []
