"""``make bench``: run every benchmark module in turn and print its tables.

``python -m bench NAME ...`` runs only the named modules (``planner`` for ``bench_planner``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def _modules(selected: list[str]) -> list[str]:
    names = sorted(
        info.name
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if info.name.startswith("bench_")
    )
    if selected:
        names = [n for n in names if n.removeprefix("bench_") in selected or n in selected]
    return names


def main() -> int:
    for name in _modules(sys.argv[1:]):
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        print(f"\n## {name.removeprefix('bench_')}\n", flush=True)
        module.main()
        print(f"\n({name} took {time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
