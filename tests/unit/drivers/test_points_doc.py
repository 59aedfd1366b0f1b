"""docs/points.md lists every canonical point of drivers.points, with its kind and unit.

The table between the markers is generated; after changing drivers/points.py, regenerate it with
``.venv/bin/python -m tests.unit.drivers.test_points_doc > /tmp/table.md`` and paste it in.
"""

from __future__ import annotations

from pathlib import Path

from drivers.points import MPPT_QUANTITIES, POINTS, PointSpec

DOC = Path(__file__).resolve().parents[3] / "docs" / "points.md"
BEGIN, END = "<!-- points:begin -->", "<!-- points:end -->"


def points_table() -> str:
    """The generated Markdown table: every point, then the indexed MPPT points."""
    specs: list[PointSpec] = [*POINTS.values(), *MPPT_QUANTITIES.values()]
    rows = [f"| `{s.name}` | {s.kind.value} | {s.unit or '—'} | {s.description} |"
            for s in specs]
    return "\n".join(["| point | kind | unit | description |", "|---|---|---|---|", *rows])


def documented_table() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"{DOC} lost its table markers"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_every_point_is_documented_with_kind_and_unit() -> None:
    table = documented_table()
    missing = [name for name in [*POINTS, *(s.name for s in MPPT_QUANTITIES.values())]
               if f"| `{name}` |" not in table]
    assert missing == [], f"add to {DOC.name} (regenerate: python -m {__name__})"
    assert table == points_table(), f"{DOC.name} is out of date (python -m {__name__})"


if __name__ == "__main__":
    print(points_table())
