"""No growth: the real daemon's memory over hours of simulated time.

    python -m bench.growth [--hours 2] [--speed 10] [--devices 10] [--out DIR]

Runs ``hems-agent run`` (the venv's console script) as bench/peer/real.py does: a configuration
provisioned as the tests provision one (tests/support/site.py ``make_site``), a TLS mosquitto
with passwords and ACL (tests/support/mosquitto.py), the household page and metrics on, the
factory grants, ``devices`` simulated SunSpec inverters (``drivers.sim.SimulatorServer``, one
port each). It logs in to the page once and makes one consent change, so the page stack is
loaded, then samples the daemon every ``--every`` real seconds until ``--hours`` of simulated
time have passed.

Simulated time: the daemon runs with ``--time-speed N --time-start ISO``, which speeds up its
stamps, windows, ticks and snapshots, but not polling: devices are polled at their real
``poll_interval`` (agent/host/clock.py ``SimulatedClock``). So each inverter is configured with
``poll_interval = 1 / N`` real seconds: one poll a simulated second, the rate of a real home
polled every second. The simulators' home runs at the same speed from the same start. The run
checks that readings flow at that rate (``hems_readings_total`` on /metrics against 17 points
an inverter a simulated second).

Each sample: real and simulated time since spawn, RSS, VmHWM and private memory (bench/peer/
measure.py), the daemon's CPU seconds, readings, releases, published envelopes and the outbox
(depth, bytes) from /metrics. Written to ``OUT/growth.csv``; ``OUT/growth.json`` holds the
summary: a least-squares line of RSS against simulated hours over the samples after the
warm-up (``--warmup-min`` simulated minutes), its slope in MB a simulated hour, RSS first/last/
max. ``OUT/growth.svg`` (or ``--svg``) plots RSS and the fitted line.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.peer.measure import cpu_seconds, memory_mb
from bench.peer.real import _drain, _free_port, _metrics, _ready, _stop, _until, spawn
from drivers.sim.devices import DeviceKind
from drivers.sim.server import SimHome, SimulatedDevice, SimulatorServer

SITE = "s-bench-growth"
POINTS = 17  # points due every poll of one simulated inverter (model 103 with 160)
JST = timezone(timedelta(hours=9))  # the provisioned site's timezone (Asia/Tokyo)


@dataclass
class Sample:
    real_s: float
    sim_h: float
    rss_mb: float
    hwm_mb: float
    private_mb: float
    cpu_s: float
    readings: float
    releases: float
    published: float
    outbox_depth: float
    outbox_bytes: float


@dataclass
class Fit:
    slope: float  # MB a simulated hour
    intercept: float
    points: int


def fit(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """Least-squares line y = slope x + intercept."""
    n = len(xs)
    if n < 2:
        raise ValueError("a line needs two samples")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("the samples span no time")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return Fit(slope=slope, intercept=my - slope * mx, points=n)


def default_start() -> datetime:
    """09:00 today at the site (daylight, so the inverters' values move)."""
    today = datetime.now(JST).date()
    return datetime(today.year, today.month, today.day, 9, 0, tzinfo=JST)


def _command(config: Path, speed: float, start: datetime) -> list[str]:
    script = Path(sys.executable).with_name("hems-agent")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]
    return [*head, "run", "--config", str(config), "--log-level", "warning",
            "--time-speed", f"{speed:g}", "--time-start", start.isoformat()]


async def _sample(pid: int, port: int, origin: float, speed: float) -> Sample:
    real = time.monotonic() - origin
    found = await _metrics(port)
    memory = memory_mb(pid)
    return Sample(real_s=real, sim_h=real * speed / 3600, rss_mb=memory["rss_mb"],
                  hwm_mb=memory["hwm_mb"], private_mb=memory["private_mb"],
                  cpu_s=cpu_seconds(pid), readings=found.get("hems_readings_total", 0.0),
                  releases=found.get("hems_releases_total", 0.0),
                  published=found.get("hems_published_total", 0.0),
                  outbox_depth=found.get("hems_outbox_depth", 0.0),
                  outbox_bytes=found.get("hems_outbox_bytes", 0.0))


async def _run_daemon(args: argparse.Namespace, work: Path,
                      servers: list[SimulatorServer]) -> dict[str, Any]:
    from tests.e2e.daemon_helpers import Page, page_toml, set_metrics_listen
    from tests.support.mosquitto import Mosquitto
    from tests.support.site import broker_users, make_site

    broker = Mosquitto(work / "broker", broker_users(SITE))
    broker.start()
    proc: subprocess.Popen[bytes] | None = None
    drain: asyncio.Task[None] | None = None
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    samples: list[Sample] = []
    try:
        poll = args.poll / args.speed  # real seconds: one poll every `args.poll` simulated s
        devices: list[dict[str, object]] = [
            {"name": f"inverter-{n}", "host": "127.0.0.1", "port": s.port, "unit": 1,
             "poll_interval": poll, "timeout": 1.0} for n, s in enumerate(servers)]
        page_port, metrics_port = _free_port(), _free_port()
        files = make_site(work / "site", broker, site_id=SITE, devices=devices,
                          extra=page_toml(work / "site", page_port))
        set_metrics_listen(files, metrics_port)
        notify.bind(str(work / "notify"))
        notify.setblocking(False)
        origin = time.monotonic()
        proc = spawn(_command(files.config, args.speed, args.start), work / "daemon.log",
                     env={**os.environ, "NOTIFY_SOCKET": str(work / "notify")})
        await _ready(notify, proc, args.startup)
        drain = asyncio.create_task(_drain(notify))

        async def flowing() -> bool:
            return (await _metrics(metrics_port)).get("hems_readings_total", 0.0) > 0

        await _until(flowing, proc, args.startup, "readings")
        async with Page(page_port) as page:  # a household login and a consent change
            await page.login()
            await page.grant("improvement", "company", "off")
        consent = (await _metrics(metrics_port)).get("hems_consent_changes_total", 0.0)
        end = args.hours * 3600 / args.speed
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}")
            sample = await _sample(proc.pid, metrics_port, origin, args.speed)
            samples.append(sample)
            if args.progress:
                print(f"{sample.real_s:7.1f} s real  {sample.sim_h:5.2f} h sim  "
                      f"RSS {sample.rss_mb:6.2f} MB  readings {sample.readings:9.0f}  "
                      f"published {sample.published:4.0f}", file=sys.stderr, flush=True)
            if sample.real_s >= end:
                break
            await asyncio.sleep(min(args.every, max(0.0, end - sample.real_s)))
        state = work / "site" / "state"
        on_disk = {p.name: p.stat().st_size for p in sorted(state.glob("outbox*")) if p.is_file()}
        return {"samples": samples, "consent_changes": consent, "outbox_files": on_disk,
                "poll_interval_s": poll}
    finally:
        if drain is not None:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
        if proc is not None:
            await _stop(proc)
        notify.close()
        broker.stop()


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    home = SimHome(start=args.start, speed=args.speed)
    servers = [SimulatorServer([SimulatedDevice(DeviceKind.INVERTER, home)], seed=n)
               for n in range(args.devices)]
    for server in servers:
        await server.start()
    try:
        return await _run_daemon(args, work, servers)
    finally:
        for server in servers:
            await server.stop()


def summarise(samples: Sequence[Sample], *, warmup_h: float, speed: float,
              devices: int, poll: float = 1.0) -> dict[str, Any]:
    """The fitted line after the warm-up, memory figures and the reading rate."""
    kept = [s for s in samples if s.sim_h >= warmup_h]
    line = fit([s.sim_h for s in kept], [s.rss_mb for s in kept])
    first, last = kept[0], kept[-1]
    sim_s = (last.sim_h - first.sim_h) * 3600
    rate = (last.readings - first.readings) / sim_s
    expected = POINTS * devices / poll
    half = [s for s in kept if s.sim_h >= (first.sim_h + last.sim_h) / 2]
    return {
        "speed": speed, "devices": devices, "warmup_h": warmup_h,
        "sim_h": samples[-1].sim_h, "real_s": samples[-1].real_s, "samples": len(samples),
        "fit_samples": line.points, "slope_mb_per_h": line.slope,
        "intercept_mb": line.intercept,
        "slope_second_half_mb_per_h": fit([s.sim_h for s in half],
                                          [s.rss_mb for s in half]).slope,
        "rss_first_mb": samples[0].rss_mb, "rss_after_warmup_mb": first.rss_mb,
        "rss_last_mb": samples[-1].rss_mb, "rss_max_mb": max(s.rss_mb for s in samples),
        "rss_max_after_warmup_mb": max(s.rss_mb for s in kept),
        "hwm_last_mb": samples[-1].hwm_mb,
        "private_after_warmup_mb": first.private_mb, "private_last_mb": samples[-1].private_mb,
        "readings_per_sim_s": rate, "readings_per_real_s": rate * speed,
        "readings_expected_per_sim_s": expected, "keeps_up": rate / expected,
        "readings": samples[-1].readings, "releases": samples[-1].releases,
        "published": samples[-1].published, "outbox_depth_last": samples[-1].outbox_depth,
        "outbox_depth_max": max(s.outbox_depth for s in samples),
        "outbox_bytes_last": samples[-1].outbox_bytes,
        "outbox_bytes_max": max(s.outbox_bytes for s in samples),
        "cpu_s_per_real_min": (last.cpu_s - first.cpu_s) / (last.real_s - first.real_s) * 60,
    }


def write_csv(path: Path, samples: Sequence[Sample]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([f.name for f in fields(Sample)])
        for s in samples:
            writer.writerow([f"{v:.4f}" if isinstance(v, float) else v
                             for v in asdict(s).values()])


def read_csv(path: Path) -> list[Sample]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [Sample(**{k: float(v) for k, v in row.items()}) for row in csv.DictReader(fh)]


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def svg(samples: Sequence[Sample], summary: dict[str, Any], title: str) -> str:
    """RSS over simulated hours, the warm-up shaded, the fitted line dashed: plain SVG."""
    width, height, left, right, top, bottom = 720, 360, 64, 20, 40, 48
    x_max = max(s.sim_h for s in samples)
    rss = [s.rss_mb for s in samples]
    fitted = [summary["intercept_mb"] + summary["slope_mb_per_h"] * x for x in (0.0, x_max)]
    y_low = math.floor(min([*rss, *fitted]) - 1)
    y_high = math.ceil(max([*rss, *fitted]) + 1)

    def px(x: float) -> float:
        return left + (width - left - right) * x / x_max

    def py(y: float) -> float:
        return top + (height - top - bottom) * (y_high - y) / (y_high - y_low)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>']
    warm = summary["warmup_h"]
    out.append(f'<rect x="{px(0):.1f}" y="{top}" width="{px(warm) - px(0):.1f}" '
               f'height="{height - top - bottom}" fill="#eeeeee"/>')
    out.append(f'<text x="{px(warm) + 4:.1f}" y="{top + 14}" fill="#777">'
               f'&#8592; warm-up ({warm * 60:g} min)</text>')
    for x in _ticks(0, x_max):
        out.append(f'<line x1="{px(x):.1f}" y1="{height - bottom}" x2="{px(x):.1f}" '
                   f'y2="{height - bottom + 5}" stroke="black"/>')
        out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 18}" '
                   f'text-anchor="middle">{x:g}</text>')
    for y in _ticks(y_low, y_high):
        out.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{width - right}" y2="{py(y):.1f}" '
                   f'stroke="#dddddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    out.append(f'<polyline fill="none" stroke="black" points="{left},{top} {left},'
               f'{height - bottom} {width - right},{height - bottom}"/>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 12}" '
               f'text-anchor="middle">simulated hours</text>')
    out.append(f'<text x="16" y="{(top + height - bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(top + height - bottom) / 2})">RSS (MB)</text>')
    points = " ".join(f"{px(s.sim_h):.1f},{py(s.rss_mb):.1f}" for s in samples)
    out.append(f'<polyline fill="none" stroke="#1f5fbf" stroke-width="1.5" points="{points}"/>')
    at_warm = summary["intercept_mb"] + summary["slope_mb_per_h"] * warm
    out.append(f'<line x1="{px(warm):.1f}" y1="{py(at_warm):.1f}" x2="{px(x_max):.1f}" '
               f'y2="{py(fitted[1]):.1f}" stroke="#d04020" stroke-width="1.5" '
               f'stroke-dasharray="6 4"/>')
    legend = f'RSS (sampled), line fitted after warm-up: {summary["slope_mb_per_h"]:+.3f} MB/h'
    out.append(f'<line x1="{left + 10}" y1="{height - bottom - 12}" x2="{left + 30}" '
               f'y2="{height - bottom - 12}" stroke="#1f5fbf" stroke-width="1.5"/>')
    out.append(f'<line x1="{left + 30}" y1="{height - bottom - 12}" x2="{left + 50}" '
               f'y2="{height - bottom - 12}" stroke="#d04020" stroke-width="1.5" '
               f'stroke-dasharray="6 4"/>')
    out.append(f'<text x="{left + 56}" y="{height - bottom - 8}">{legend}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One run; writes the CSV, the summary and the plot into ``args.out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC)
        load_before = os.getloadavg()
        try:
            result = asyncio.run(measure(args, work))
        except Exception:
            log = work / "daemon.log"
            if log.exists():
                print(log.read_text(errors="replace")[-2000:], file=sys.stderr)
            raise
    samples: list[Sample] = result.pop("samples")
    write_csv(args.out / "growth.csv", samples)
    summary = summarise(samples, warmup_h=args.warmup_min / 60, speed=args.speed,
                        devices=args.devices, poll=args.poll)
    summary |= result | {
        "started_utc": started.isoformat(timespec="seconds"),
        "ended_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "sim_start": args.start.isoformat(), "poll_sim_s": args.poll, "load_before": load_before,
        "load_after": os.getloadavg(), "cpus": os.cpu_count(),
        "command": " ".join(sys.argv)}
    (args.out / "growth.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (args.svg or args.out / "growth.svg").write_text(svg(samples, summary, _title(summary)),
                                                     encoding="utf-8")
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, default=2.0, help="simulated hours (default 2)")
    p.add_argument("--speed", type=float, default=10.0,
                   help="simulated seconds a real second (default 10)")
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--poll", type=float, default=1.0,
                   help="simulated seconds between polls of a device (default 1)")
    p.add_argument("--every", type=float, default=3.0, help="real seconds between samples")
    p.add_argument("--warmup-min", type=float, default=10.0,
                   help="simulated minutes left out of the fit (default 10)")
    p.add_argument("--start", type=datetime.fromisoformat, default=default_start(),
                   help="simulated start (default 09:00 today, +09:00)")
    p.add_argument("--startup", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=Path("growth-out"))
    p.add_argument("--svg", type=Path, help="the plot here instead of OUT/growth.svg")
    p.add_argument("--keep", type=Path, help="keep the work directory (site, logs) here")
    p.add_argument("--progress", action="store_true", help="print each sample")
    p.add_argument("--replot", action="store_true",
                   help="run nothing: plot OUT/growth.csv of an earlier run again")
    return p


def _title(summary: dict[str, Any]) -> str:
    poll = summary.get("poll_sim_s", 1.0)
    every = "second" if poll == 1 else f"{poll:g} s"
    return (f"hems-agent run, {summary['devices']} inverters polled every simulated {every}, "
            f"clock x{summary['speed']:g}")


def replot(args: argparse.Namespace) -> dict[str, Any]:
    """The plot of an earlier run again, from ``args.out``'s CSV and summary."""
    summary: dict[str, Any] = json.loads((args.out / "growth.json").read_text(encoding="utf-8"))
    (args.svg or args.out / "growth.svg").write_text(
        svg(read_csv(args.out / "growth.csv"), summary, _title(summary)), encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    summary = replot(args) if args.replot else run(args)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
