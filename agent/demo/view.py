"""The demo's live screen: what the agent sends and what the cloud receives, per purpose.

The reference receiver (:class:`agent.cloud.receiver.Receiver`) opens every envelope as a backend
would; :class:`CloudView` counts what it accepted per purpose (envelopes, the last window, its
tier, points, bytes on the wire) and appends each opened envelope to ``received.jsonl``, so a
newcomer can read exactly what a recipient gets. The screen is for the person running the demo:
nothing here goes to the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO
from zoneinfo import ZoneInfo

from agent.cloud.receiver import Receiver, Verdict
from agent.daemon.state import State

REDRAW = "\x1b[H\x1b[2J"  # cursor home, clear screen
JST = ZoneInfo("Asia/Tokyo")


@dataclass
class PurposeStats:
    """What the cloud has accepted for one purpose."""

    envelopes: int = 0
    bytes: int = 0
    tier: str = ""
    window: tuple[int, int] | None = None
    points: int = 0
    """Distinct points in the last envelope."""


@dataclass(kw_only=True)
class Screen:
    """The fixed lines at the top: where the page is and how to log in."""

    page_url: str
    pairing_code: str
    broker: str
    files: str
    speed: float


class _Recorder(io.StringIO):
    """The receiver's output: each accepted envelope, one JSON line, counted and kept."""

    def __init__(self, view: CloudView, path: Path) -> None:
        super().__init__()
        self._view = view
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def write(self, text: str) -> int:
        self._file.write(text)
        for line in text.splitlines():
            if line.strip():
                self._view.record(json.loads(line))
        return len(text)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        super().close()


class CloudView:
    """Counts the receiver's accepted envelopes and draws the screen every ``refresh`` s."""

    def __init__(self, screen: Screen, cloud_dir: Path, *, out: TextIO, refresh: float) -> None:
        cloud_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.screen = screen
        self.out = out
        self.refresh = refresh
        self.received = cloud_dir / "received.jsonl"
        self.output = _Recorder(self, self.received)
        self.purposes: dict[str, PurposeStats] = {}
        self.notices: Counter[str] = Counter()
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.size = 0
        """Bytes on the wire of the message being handled (set by :class:`ViewReceiver`)."""
        self._agent = "starting"
        self._grants: dict[str, str] = {}
        self._order: list[str] = []

    def record(self, opened: Mapping[str, Any]) -> None:
        """One accepted envelope (the receiver's JSON line, parsed)."""
        header, body = opened["header"], opened["body"]
        if header["kind"] != "data":
            self.notices[header["kind"]] += 1
            return
        stats = self.purposes.setdefault(header["purpose"], PurposeStats())
        stats.envelopes += 1
        stats.bytes += self.size
        stats.tier = header["tier"]
        stats.window = (header["window_start"], header["window_end"])
        stats.points = len({r.get("point") for r in body.get("records", [])})

    async def show(self, state: State, stop: asyncio.Event) -> None:
        """A daemon side task: redraw until ``stop``."""
        self._order = [p.id for p in state.catalogue.spec.purposes]
        while not stop.is_set():
            self._sample(state)
            self.draw()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.refresh)

    def _sample(self, state: State) -> None:
        stats = state.outbox.stats()
        up = "connected" if state.publisher.connected.is_set() else "connecting"
        self._agent = (f"uplink {up}, {state.publisher.published} envelopes published, "
                       f"outbox {stats.depth} queued")
        grants: dict[str, str] = {}
        for (purpose, _recipient), grant in state.ledger.grants(self.now()).items():
            grants[purpose] = str(grant.tier)
        self._grants = grants

    def draw(self, *, final: bool = False) -> None:
        redraw = self.out.isatty() and not final
        self.out.write((REDRAW if redraw else "") + self.render(final=final) + "\n")
        self.out.flush()

    def render(self, *, final: bool = False) -> str:
        """The whole screen as text; the ``final`` one, after everything stopped, has no hints."""
        s = self.screen
        stamp = self.now().astimezone(JST).strftime("%Y-%m-%d %H:%M JST")
        lines = [
            f"hems-agent demo   simulated {stamp}, speed x{s.speed:g}",
            f"  household page  {s.page_url}   pairing code {s.pairing_code}",
            f"  broker          {s.broker}",
            f"  demo files      {s.files}",
            f"  agent           {self._agent}",
            "",
            "what the cloud receives, per purpose (opened by the reference receiver)",
            f"  {'purpose':<18} {'consent':<8} {'envelopes':>9}  {'last window (JST)':<27} "
            f"{'tier':<6} {'points':>6} {'bytes':>9}",
        ]
        names = self._order + sorted(set(self.purposes) - set(self._order))
        for name in names:
            lines.append(self._row(name))
        notices = ", ".join(f"{kind} {n}" for kind, n in sorted(self.notices.items()))
        lines.append(f"  notices: {notices or '-'}")
        if final:
            return "\n".join(lines) + "\n"
        lines += ["", f"Opened envelopes are appended to {self.received}.",
                  "Log in to the page with the pairing code, switch a purpose on or off,",
                  "and watch this table change. Ctrl-C stops everything."]
        return "\n".join(lines) + "\n"

    def _row(self, name: str) -> str:
        granted = self._grants.get(name, "off")
        stats = self.purposes.get(name)
        if stats is None:
            return f"  {name:<18} {granted:<8} {0:>9}"
        return (f"  {name:<18} {granted:<8} {stats.envelopes:>9}  {_window(stats.window):<27} "
                f"{stats.tier:<6} {stats.points:>6} {stats.bytes:>9,}")

    def close(self) -> None:
        self.output.close()


def _window(window: tuple[int, int] | None) -> str:
    if window is None:
        return "-"
    start, end = (datetime.fromtimestamp(t, JST) for t in window)
    return f"{start:%m-%d %H:%M} - {end:%m-%d %H:%M}"


class ViewReceiver(Receiver):
    """The reference receiver, telling the view the wire size of each message it handles."""

    def __init__(self, view: CloudView, **kwargs: Any) -> None:
        super().__init__(output=view.output, **kwargs)
        self.view = view

    def handle(self, topic: str, payload: bytes) -> Verdict:
        self.view.size = len(payload)
        return super().handle(topic, payload)
