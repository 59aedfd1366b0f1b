"""Profile of the real daemon at 10 devices: py-spy samples over a window, summed by function.

``python -m bench.peer.profile [SECONDS]`` runs the harness's daemon subject (page on, login and
consent change first) inside ``unshare -n`` with ``--profile``, then prints the functions with
the most samples: *self* (the function was running) and *total* (it was on the stack; only the
project's own functions and its libraries', not the event loop's frames that hold every sample).
py-spy leaves out samples of a thread that is idle (waiting in the kernel), so the samples are
the daemon's busy time; ``EpollSelector.select`` in them is the loop's epoll call returning.
Needs py-spy in the venv (``pip install py-spy``) and root.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.table import print_table

ROOT = Path(__file__).resolve().parents[2]
RATE = 200  # samples per second


def summarise(raw: Path, top: int = 20, rate: int = RATE) -> None:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f.rsplit(":", 1)[0] for f in stack.split(";")]  # drop the line number
        n = int(count)
        busy += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    print(f"{busy} samples of a busy daemon ({busy / rate:.2f} s at {rate} per second)\n")
    print_table(["function (self)", "samples", "share"],
                [[f, n, f"{n / busy:.1%}"] for f, n in own.most_common(top)])
    print()
    inner = [(f, n) for f, n in total.most_common() if n < 0.9 * busy
             and "asyncio/" not in f and "(<string>" not in f]
    print_table(["function (total, loop frames left out)", "samples", "share"],
                [[f, n, f"{n / busy:.1%}"] for f, n in inner[:top]])


def main() -> int:
    seconds = sys.argv[1] if len(sys.argv) > 1 else "60"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "daemon.txt"
        harness = [sys.executable, "-m", "bench.peer.harness", "--subject", "daemon",
                   "--devices", "10", "--seconds", seconds, "--profile", str(out),
                   "--profile-rate", str(RATE)]
        inner = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in harness)
        command = ["unshare", "-n", "sh", "-c", inner] if shutil.which("unshare") else harness
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr)
        if out.exists():
            summarise(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
