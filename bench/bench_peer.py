"""Side by side with the ThingsBoard IoT Gateway, in the same run, on the same simulated SunSpec
inverters (points of model 103 every second, 1 and 10 devices).

Each configuration runs in bench/peer/harness.py inside ``unshare -n`` (loopback only), which
starts the simulators, a plain-TCP mosquitto with a ThingsBoard stand-in, and the subject:

- ours: discovery → mapping → ModbusDevice.poll with the planner → policy feed/flush →
  envelope sealing → outbox commit (bench/peer/ours.py);
- thingsboard-gateway from PyPI, in its own venv (.bench-venvs/tb, created here), configured
  with one key per point, and with the model's registers as one range split by
  ``maxRegistersPerRequest`` (16, its default, and 125, the Modbus maximum).

``BENCH_PEER_SECONDS`` sets the measured window per peer configuration (default 30; ours is
measured for twice that, at least a minute, so that its once-a-minute releases are counted).
If the peer cannot be installed or run, the table says why and our side is still printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.table import print_table

ROOT = Path(__file__).resolve().parents[1]
TB_VENV = ROOT / ".bench-venvs" / "tb"
# The gateway's Modbus connector pins pymodbus 3.9.2 and would pip-install it at load time.
TB_PACKAGES = ["thingsboard-gateway", "pymodbus==3.9.2", "pyserial", "pyserial-asyncio"]
CONFIGS: list[tuple[str, list[str]]] = [
    ("ours", ["--subject", "ours"]),
    ("thingsboard-gateway, one key per point", ["--subject", "tb", "--layout", "per-point"]),
    ("thingsboard-gateway, range, 16 per request",
     ["--subject", "tb", "--layout", "range", "--max-registers", "16"]),
    ("thingsboard-gateway, range, 125 per request",
     ["--subject", "tb", "--layout", "range", "--max-registers", "125"]),
]
DEVICES = (1, 10)


def ensure_peer() -> str | None:
    """Create the peer's venv if needed; None when ready, else what failed."""
    python = TB_VENV / "bin" / "python"
    check = [str(python), "-c", "import thingsboard_gateway, pymodbus; "
             "assert pymodbus.__version__ == '3.9.2'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return None
    steps = [[sys.executable, "-m", "venv", str(TB_VENV)],
             [str(python), "-m", "pip", "install", "-q", *TB_PACKAGES]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            return f"{' '.join(step[:4])}... failed: {(done.stderr or done.stdout)[-300:]}"
    return None


def run(args: list[str], devices: int, seconds: float) -> dict[str, Any]:
    harness = [sys.executable, "-m", "bench.peer.harness", *args, "--devices", str(devices),
               "--seconds", str(seconds), "--tb-python", str(TB_VENV / "bin" / "python")]
    inner = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in harness)
    command = ["unshare", "-n", "sh", "-c", inner] if shutil.which("unshare") else harness
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=seconds + 150)
    lines = done.stdout.strip().splitlines()
    if not lines:
        return {"error": f"harness printed nothing (exit {done.returncode}): "
                         f"{done.stderr[-300:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def row(label: str, devices: int, r: dict[str, Any]) -> list[object]:
    if "error" in r:
        return [label, devices, "failed: " + r["error"][:120], "", "", "", "", ""]
    minutes = r["seconds"] / 60
    if not devices:  # idle: nothing to poll
        return [label, 0, "-", "-", f"{r['cpu'] / minutes:.2f}", "-", f"{r['rss_mb']:.0f}",
                f"{r['messages'] / minutes:.1f}"]
    per_k = r["cpu"] / r["readings"] * 1000 if r["readings"] else float("nan")
    return [label, devices, f"{r['requests'] / r['seconds'] / devices:.1f}",
            f"{r['readings'] / r['seconds'] / devices:.1f}", f"{r['cpu'] / minutes:.2f}",
            f"{per_k:.4f}", f"{r['rss_mb']:.0f}", f"{r['messages'] / minutes:.1f}"]


def ratios(results: dict[tuple[str, int], dict[str, Any]]) -> list[list[object]]:
    rows: list[list[object]] = []
    for devices in DEVICES:
        ours = results.get(("ours", devices), {})
        for label, _ in CONFIGS[1:]:
            peer = results.get((label, devices), {})
            if "error" in ours or "error" in peer or not ours or not peer:
                continue
            cpu = (peer["cpu"] / peer["readings"]) / (ours["cpu"] / ours["readings"]) \
                if ours["cpu"] and ours["readings"] and peer["readings"] else float("nan")
            req = (peer["requests"] / peer["seconds"]) / (ours["requests"] / ours["seconds"])
            rows.append([label, devices, f"{cpu:.1f}x", f"{req:.1f}x"])
    return rows


def main() -> None:
    seconds = float(os.environ.get("BENCH_PEER_SECONDS", "30"))
    problem = ensure_peer()
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for label, args in CONFIGS:
        for devices in DEVICES:
            if problem and label != "ours":
                results[(label, devices)] = {"error": problem}
                continue
            # ours releases once a minute: measure at least a whole minute to see them
            window = max(seconds * 2, 60.0) if label == "ours" else seconds
            try:
                results[(label, devices)] = run(args, devices, window)
            except (subprocess.SubprocessError, OSError, ValueError) as exc:
                results[(label, devices)] = {"error": f"{type(exc).__name__}: {exc}"}
    idle = "thingsboard-gateway, no devices"
    results[(idle, 0)] = {"error": problem} if problem else run(["--subject", "tb"], 0, seconds)
    print(f"Measured over {seconds:.0f} s per peer configuration ({max(seconds * 2, 60):.0f} s "
          "for ours) after start-up; model 103 every second per device; CPU = user + system "
          "of the subject process (/proc/<pid>/stat).\n")
    print_table(["subject", "devices", "requests/device/s", "readings/device/s",
                 "CPU s/min", "CPU s/1,000 readings", "RSS MB", "messages/min"],
                [*(row(label, d, results[(label, d)]) for label, _ in CONFIGS for d in DEVICES),
                 row(idle, 0, results[(idle, 0)])])
    print("\nPeer ÷ ours (CPU per reading; Modbus requests per second):\n")
    print_table(["peer configuration", "devices", "CPU per reading", "requests"],
                ratios(results))


if __name__ == "__main__":
    main()
