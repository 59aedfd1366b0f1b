"""The real daemon side by side with the ThingsBoard IoT Gateway 3.8.5 and a bare pymodbus
client, in the same run, on the same simulated SunSpec model-103 inverters polled every second,
at 1 and 10 devices.

Each measurement runs in bench/peer/harness.py inside ``unshare -n`` (loopback only), which
starts the simulators and one subject:

- ``hems-agent run`` itself with a configuration provisioned by the bench (page on, factory
  grants, TLS broker; bench/peer/real.py); before the window the bench logs in to the page and
  makes one consent change over HTTP, and it times spawn to READY=1 on a NOTIFY_SOCKET;
- a bare pymodbus client reading the same register blocks every second (the floor for Python);
- thingsboard-gateway from PyPI in its own venv (.bench-venvs/tb, created here) with the
  model's registers as one range read 125 at a time (its cheapest layout per reading in earlier
  runs; ``BENCH_PEER_TB_LAYOUT=per-point`` reads one key per point instead).

Subjects run in turn, the whole set repeated (ABAB) ``BENCH_PEER_ROUNDS`` times (default 2);
``BENCH_PEER_SECONDS`` is the measured window of each (default 25). Then the daemon with no
devices for ``BENCH_PEER_IDLE_SECONDS`` (default 180: the idle daemon does a few things a
minute, so a longer window averages where they fall). Figures of a subject are summed over its
rounds (CPU per reading = all its CPU over all its readings); memory is the largest of its
rounds at the end of the window.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.table import print_table

ROOT = Path(__file__).resolve().parents[1]
TB_VENV = ROOT / ".bench-venvs" / "tb"
TB_VERSION = "3.8.5"
# The gateway's Modbus connector pins pymodbus 3.9.2 and would pip-install it at load time.
TB_PACKAGES = [f"thingsboard-gateway=={TB_VERSION}", "pymodbus==3.9.2", "pyserial",
               "pyserial-asyncio"]
DAEMON, BARE, TB = "hems-agent run", "bare pymodbus client", f"thingsboard-gateway {TB_VERSION}"
DEVICES = (1, 10)
# The goals of the performance review.
RSS_GOAL_MB = 50.0
VS_BARE_GOAL = 3.0
VS_TB_GOAL = 10.0
IDLE_GOAL = 0.03
READY_GOAL_S = 1.0


def subjects() -> list[tuple[str, list[str]]]:
    layout = os.environ.get("BENCH_PEER_TB_LAYOUT", "range")
    tb = ["--layout", "per-point"] if layout == "per-point" else \
        ["--layout", "range", "--max-registers", "125"]
    return [(DAEMON, ["--subject", "daemon"]), (BARE, ["--subject", "bare"]),
            (TB, ["--subject", "tb", *tb])]


def ensure_peer() -> str | None:
    """Create the peer's venv if needed; None when ready, else what failed."""
    python = TB_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m, pymodbus; "
             f"assert m.version('thingsboard-gateway') == '{TB_VERSION}'; "
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
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=seconds + 180)
    except (subprocess.SubprocessError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    lines = done.stdout.strip().splitlines()
    if not lines:
        return {"error": f"harness printed nothing (exit {done.returncode}): "
                         f"{done.stderr[-300:]}"}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        return {"error": f"harness output unreadable: {lines[-1][-200:]}"}
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Counters summed over the rounds, memory and READY the largest; errors kept."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[0]["error"] if runs else "not run"}
    total = {k: sum(r[k] for r in good) for k in ("cpu", "requests", "readings", "seconds")}
    total |= {k: max(r[k] for r in good) for k in ("rss_mb", "hwm_mb", "private_mb")}
    for key in ("ready_s", "rss_before_login_mb", "hwm_before_login_mb"):
        if all(key in r for r in good):
            total[key] = max(r[key] for r in good)
    per_reading = [r["cpu"] / r["readings"] * 1000 for r in good if r["readings"]]
    total["per_k_range"] = (min(per_reading), max(per_reading)) if per_reading else None
    total["rounds"] = len(good)
    total["failed"] = len(runs) - len(good)
    return total


def per_k(r: dict[str, Any]) -> float:
    return float(r["cpu"] / r["readings"] * 1000) if r.get("readings") else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def per_min(r: dict[str, Any]) -> float:
    return float(r["cpu"] / (r["seconds"] / 60))


def row(label: str, devices: int, r: dict[str, Any]) -> list[object]:
    if "error" in r:
        return [label, devices, "failed: " + str(r["error"])[:160], *[""] * 9]
    spread = r["per_k_range"]
    ready = f"{r['ready_s']:.2f}" if "ready_s" in r else "-"
    if not devices:
        return [label, 0, r["rounds"], "-", "-", f"{per_min(r):.3f}", "-", "-",
                f"{r['rss_mb']:.1f}",
                f"{r['hwm_mb']:.1f}", f"{r['private_mb']:.1f}", ready]
    return [label, devices, r["rounds"], f"{r['requests'] / r['seconds'] / devices:.1f}",
            f"{r['readings'] / r['seconds'] / devices:.1f}",
            f"{per_min(r):.2f}", f"{per_k(r):.4f}",
            f"{spread[0]:.4f}-{spread[1]:.4f}" if spread else "-", f"{r['rss_mb']:.1f}",
            f"{r['hwm_mb']:.1f}", f"{r['private_mb']:.1f}", ready]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def goals(results: dict[tuple[str, int], dict[str, Any]]) -> list[list[object]]:
    rows: list[list[object]] = []

    def have(*keys: tuple[str, int]) -> bool:
        return all(k in results and "error" not in results[k] for k in keys)

    if have((DAEMON, 10)):
        d = results[(DAEMON, 10)]
        rows.append(["RSS, 10 devices, page on, after login + consent change",
                     f"<= {RSS_GOAL_MB:.0f} MB", f"{d['rss_mb']:.1f} MB (peak {d['hwm_mb']:.1f},"
                     f" private {d['private_mb']:.1f})", verdict(d["rss_mb"] <= RSS_GOAL_MB)])
    for devices in DEVICES:
        if have((DAEMON, devices), (BARE, devices)):
            times = ratio(per_k(results[(DAEMON, devices)]), per_k(results[(BARE, devices)]))
            rows.append([f"CPU per reading, daemon / bare client, {devices} device(s)",
                         f"<= {VS_BARE_GOAL:.0f}x", f"{times:.1f}x",
                         verdict(times <= VS_BARE_GOAL)])
    for devices in DEVICES:
        if have((DAEMON, devices), (TB, devices)):
            d, t = results[(DAEMON, devices)], results[(TB, devices)]
            times, minute = ratio(per_k(t), per_k(d)), ratio(per_min(t), per_min(d))
            rows.append([f"CPU per reading, thingsboard / daemon, {devices} device(s)",
                         f">= {VS_TB_GOAL:.0f}x", f"{times:.1f}x (per minute {minute:.1f}x)",
                         verdict(times >= VS_TB_GOAL)])
    if have((DAEMON, 0)):
        idle = per_min(results[(DAEMON, 0)])
        rows.append(["CPU, daemon idle (no devices, page on)", f"<= {IDLE_GOAL} s/min",
                     f"{idle:.3f} s/min", verdict(idle <= IDLE_GOAL)])
    ready = [r["ready_s"] for (label, _), r in results.items()
             if label == DAEMON and "ready_s" in r]
    if ready:
        rows.append(["spawn to READY=1, slowest daemon run", f"<= {READY_GOAL_S:.0f} s",
                     f"{max(ready):.2f} s", verdict(max(ready) <= READY_GOAL_S)])
    return rows


def main() -> None:
    seconds = float(os.environ.get("BENCH_PEER_SECONDS", "25"))
    idle_seconds = float(os.environ.get("BENCH_PEER_IDLE_SECONDS", "180"))
    rounds = int(os.environ.get("BENCH_PEER_ROUNDS", "2"))
    began, load = time.monotonic(), os.getloadavg()
    problem = ensure_peer()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for devices in DEVICES:
            for label, args in subjects():
                found = {"error": problem} if problem and label == TB else \
                    run(args, devices, seconds)
                runs.setdefault((label, devices), []).append(found)
    runs[(DAEMON, 0)] = [run(["--subject", "daemon"], 0, idle_seconds)]
    results = {key: combine(found) for key, found in runs.items()}
    end_load = os.getloadavg()
    coarse = sum(r.get("cpu_source") == "stat" for found in runs.values() for r in found)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} at the start, {end_load[0]:.1f} at the end; {rounds} rounds of "
          f"{seconds:.0f} s per subject and size, subjects in turn (ABAB); idle {idle_seconds:.0f}"
          f" s; whole bench {time.monotonic() - began:.0f} s. CPU = run time of the subject "
          "process's threads (schedstat, ns; clock ticks of /proc/<pid>/stat in the "
          f"{coarse} runs where a thread ended in the window); memory at the end of the "
          "window (largest of the rounds).\n")
    print_table(["subject", "devices", "rounds", "requests/device/s", "readings/device/s",
                 "CPU s/min",
                 "CPU s/1,000 readings", "per round", "RSS MB", "VmHWM MB", "private MB",
                 "READY s"],
                [row(label, d, results[(label, d)]) for d in DEVICES
                 for label, _ in subjects()] + [row(f"{DAEMON}, no devices", 0,
                                                    results[(DAEMON, 0)])])
    for devices in DEVICES:
        d = results.get((DAEMON, devices), {})
        if "hwm_before_login_mb" in d:
            print(f"\n{DAEMON}, {devices} device(s), before the login: RSS "
                  f"{d['rss_before_login_mb']:.1f} MB, VmHWM {d['hwm_before_login_mb']:.1f} MB.",
                  end="")
    print("\n\nGoals:\n")
    print_table(["goal", "target", "measured", ""], goals(results))
    failed = {f"{label} x{d}": [r["error"] for r in found if "error" in r]
              for (label, d), found in runs.items() if any("error" in r for r in found)}
    if failed:
        print("\nFailed runs:", json.dumps(failed)[:2000])


if __name__ == "__main__":
    main()
