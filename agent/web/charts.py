"""Line charts of one day as server-rendered SVG: path data and axis ticks, no script.

The template draws what :func:`day_chart` returns inside an ``<svg viewBox>`` that scales to
the screen; each line also differs by its dash, not by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 360, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 28


@dataclass(frozen=True, kw_only=True)
class Line:
    label: str
    css: str  # class name: colour and dash in page.css
    d: str  # SVG path data ("" when the series has no value)


@dataclass(frozen=True, kw_only=True)
class Chart:
    id: str
    title: str
    desc: str  # what the chart shows, in words, for screen readers
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    lines: tuple[Line, ...]
    y_ticks: tuple[tuple[float, str], ...]  # y in the view box, label
    x_ticks: tuple[tuple[float, str], ...]  # x in the view box, label (hours)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 × 10^n at or above ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= value))


def day_chart(*, id: str, title: str, desc: str,
              series: Sequence[tuple[str, str, Sequence[float | None]]],
              top_value: float | None = None, unit: str = "") -> Chart:
    """A chart of ``series`` (label, css class, one value per slot of the day) from 0 up to
    ``top_value`` (default: a round number above the largest value); hours along the bottom."""
    values = [v for _, _, s in series for v in s if v is not None]
    top = top_value if top_value is not None else nice_ceiling(max(values, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y(v: float) -> float:
        return TOP + plot_h * (1 - min(max(v, 0.0), top) / top)

    lines = []
    for label, css, points in series:
        slots = max(len(points), 1)
        parts: list[str] = []
        pen_up = True
        for i, v in enumerate(points):
            if v is None:
                pen_up = True
                continue
            x = LEFT + plot_w * (i + 0.5) / slots
            parts.append(f"{'M' if pen_up else 'L'}{x:.1f},{y(v):.1f}")
            pen_up = False
        lines.append(Line(label=label, css=css, d=" ".join(parts)))
    steps = 4 if f"{top:.0e}"[0] == "2" else 5  # round numbers: 0.5 steps up to 2, else 1s
    y_ticks = tuple((y(top * k / steps), f"{_number(top * k / steps)}{unit}")
                    for k in range(steps + 1))
    x_ticks = tuple((LEFT + plot_w * h / 24, f"{h}") for h in (0, 6, 12, 18, 24))
    return Chart(id=id, title=title, desc=desc, width=WIDTH, height=HEIGHT, left=LEFT,
                 right=WIDTH - RIGHT, top=TOP, bottom=HEIGHT - BOTTOM, lines=tuple(lines),
                 y_ticks=y_ticks, x_ticks=x_ticks)


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


# Bar charts per day: larger type than the line charts, so that labels stay at 16 px or more
# at phone width (the view box is drawn about 0.9 times its size in a 390 px screen).
BAR_LEFT, BAR_BOTTOM, BAR_FONT = 64, 30, 18


@dataclass(frozen=True, kw_only=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str  # class name: the colour of its series in page.css
    title: str  # what it stands for, with its number (a tooltip and for screen readers)


@dataclass(frozen=True, kw_only=True)
class BarChart:
    id: str
    title: str
    desc: str
    width: int
    height: int
    left: int
    right: int
    bottom: int
    font: int
    bars: tuple[Bar, ...]
    y_ticks: tuple[tuple[float, str], ...]
    x_ticks: tuple[tuple[float, str], ...]  # x of each column's middle, its label
    legend: tuple[tuple[str, str], ...]  # label, css class


def bar_chart(*, id: str, title: str, desc: str, columns: Sequence[str],
              stacks: Sequence[tuple[str, str, Sequence[int]]]) -> BarChart:
    """One column per entry of ``columns`` (a day), each the stack of ``stacks`` (label, css
    class, one count per column) from the bottom up; from 0 to a round number above the
    tallest column."""
    totals = [sum(s[i] for _, _, s in stacks) for i in range(len(columns))]
    top = nice_ceiling(max(totals, default=0))
    plot_w = WIDTH - BAR_LEFT - RIGHT
    plot_h = HEIGHT - TOP - BAR_BOTTOM
    slot = plot_w / max(len(columns), 1)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - min(max(v, 0.0), top) / top)

    bars = []
    for i, column in enumerate(columns):
        base = 0
        for label, css, counts in stacks:
            n = counts[i]
            if n > 0:
                bars.append(Bar(x=BAR_LEFT + slot * i + slot * 0.15, y=y(base + n),
                                width=slot * 0.7, height=y(base) - y(base + n), css=css,
                                title=f"{column}: {label} {n:,}"))
            base += n
    y_ticks = tuple((y(v), f"{int(v):,}") for v in (0.0, top / 2, top) if v == int(v))
    x_ticks = tuple((BAR_LEFT + slot * (i + 0.5), c) for i, c in enumerate(columns))
    return BarChart(id=id, title=title, desc=desc, width=WIDTH, height=HEIGHT, left=BAR_LEFT,
                    right=WIDTH - RIGHT, bottom=HEIGHT - BAR_BOTTOM, font=BAR_FONT,
                    bars=tuple(bars), y_ticks=y_ticks, x_ticks=x_ticks,
                    legend=tuple((label, css) for label, css, _ in stacks))
