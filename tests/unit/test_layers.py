"""Imports point one way: agent -> drivers, policy; drivers and policy never import agent or
each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"drivers": {"agent", "policy"}, "policy": {"agent", "drivers"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upwards_or_sideways(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {bad}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for bad in sorted(_imports(path) & FORBIDDEN[package])
    ]
    assert offenders == []


def test_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import agent.cli\nfrom policy import ledger\n", encoding="utf-8")
    assert _imports(sample) == {"agent", "policy"}
