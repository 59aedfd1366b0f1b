"""docs/purposes.md is generated from the catalogue and must be up to date; policy stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

from policy.catalogue import load_catalogue
from policy.docs import render

ROOT = Path(__file__).resolve().parents[3]


def test_committed_purposes_page_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "purposes.md").read_text(encoding="utf-8")
    assert committed == render(load_catalogue()), (
        "docs/purposes.md is stale: run `python -m policy.docs > docs/purposes.md`")


def test_page_shows_every_purpose_in_both_languages() -> None:
    page = render(load_catalogue())
    for purpose in load_catalogue().purposes.values():
        assert page.count(f"`{purpose.id}`") >= 2
        assert purpose.title.ja in page and purpose.title.en in page
    assert "水道の情報 (収集しません)" in page and "Water (not collected)" in page


def _imported_roots(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_policy_is_synchronous_and_offline() -> None:
    offenders = [f"{path.name} imports {bad}"
                 for path in sorted((ROOT / "policy").rglob("*.py"))
                 for bad in sorted(_imported_roots(path) & {"asyncio", "socket", "ssl",
                                                            "http", "urllib", "threading"})]
    assert offenders == []
