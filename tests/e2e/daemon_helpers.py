"""Shared rig of the whole-daemon tests: the `hems-agent run` subprocess, the receiver, the page.

The daemon runs as a real subprocess (its output read continuously so its pipe never fills),
against simulators in the test's own loop, a real mosquitto and an in-process receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2

from agent.cloud.receiver import CatalogueRules, Receiver, ReplayStore, load_device_registry
from agent.uplink.session import BrokerConfig
from agent.web.security import hash_pairing_code
from drivers.sim.server import Site
from tests.support.mosquitto import RECEIVER_USER, Mosquitto
from tests.support.site import SiteFiles, broker_users

PAIRING_CODE = "4921-7730"


@dataclass
class Cloud:
    """The backend's view: every envelope the receiver accepted, as decoded JSON."""

    receiver: Receiver
    out: io.StringIO

    def envelopes(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def data(self) -> list[dict[str, Any]]:
        return [e for e in self.envelopes() if e["header"]["kind"] == "data"]

    def of_kind(self, kind: str, purpose: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.envelopes() if e["header"]["kind"] == kind
                and (purpose is None or e["header"]["purpose"] == purpose)]


@contextlib.asynccontextmanager
async def cloud(files: SiteFiles, broker: Mosquitto, db: Path, *, backoff_max: float = 60.0,
                raw: list[tuple[str, bytes]] | None = None) -> AsyncIterator[Cloud]:
    """A receiver holding every recipient's key, subscribed without sharing (so its persistent
    subscription survives a broker restart, see docs/broker.md). ``backoff_max`` bounds its
    reconnect delay (the proofs stop brokers for long stretches); ``raw`` records every
    payload it is handed."""
    out = io.StringIO()
    receiver = Receiver(device_keys=load_device_registry(files.device_registry),
                        recipient_keys={k.key_id: k for k in files.recipient_keys.values()},
                        rules=CatalogueRules(), replay=ReplayStore(db), output=out)
    if raw is not None:
        handle, record = receiver.handle, raw

        def recording(topic: str, payload: bytes) -> Any:
            record.append((topic, payload))
            return handle(topic, payload)

        receiver.handle = recording  # type: ignore[method-assign]
    config = BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=broker.ca,
                          client_id=f"receiver-{files.site_id}", username=RECEIVER_USER,
                          password=broker_users(files.site_id)[RECEIVER_USER], timeout=2.0,
                          backoff_max=backoff_max)
    task = asyncio.create_task(receiver.run(config, None))
    try:
        yield Cloud(receiver, out)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        receiver.replay.close()


def sim_devices(site: Site, *, poll: float = 0.5) -> list[dict[str, object]]:
    """The three simulated devices of ``site`` as ``[[devices]]`` entries."""
    return [{"name": name, "host": "127.0.0.1", "port": server.port, "unit": 1,
             "poll_interval": poll, "timeout": 1.0}
            for name, server in (("inverter", site.inverter), ("battery", site.battery),
                                 ("meter", site.meter))]


def set_metrics_listen(files: SiteFiles, port: int) -> None:
    """Serve metrics on ``port`` (make_site writes ``metrics_listen = ""``)."""
    text = files.config.read_text(encoding="utf-8")
    files.config.write_text(text.replace('metrics_listen = ""',
                                         f'metrics_listen = "127.0.0.1:{port}"', 1),
                            encoding="utf-8")


def page_toml(directory: Path, port: int, code: str = PAIRING_CODE) -> str:
    """A ``[web]`` section on loopback ``port`` with a pairing hash file (mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pairing.hash"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(hash_pairing_code(code) + "\n")
    return f'\n[web]\nlisten = "127.0.0.1:{port}"\npairing_hash_file = "{path}"\n'


@dataclass
class DaemonProcess:
    """One `hems-agent run` subprocess and everything it printed so far."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, files: SiteFiles, *, speed: float | None, start: datetime | None,
                    env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                    preexec: Callable[[], None] | None = None) -> DaemonProcess:
        """Start it; ``speed`` and ``start`` None run it on real time. ``preexec`` runs in the
        child before it executes (e.g. to set resource limits)."""
        simulated = [] if speed is None or start is None else [
            "--time-speed", str(speed), "--time-start", start.isoformat()]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.cli", "run", "--config", str(files.config),
            *simulated, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning", **(env or {})},
            preexec_fn=preexec)
        daemon = cls(proc)
        daemon._reader = asyncio.create_task(daemon._read())
        return daemon

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    async def wait_line(self, text: str, limit: float = 30.0) -> None:
        """Wait until a line containing ``text`` was printed (fails if the process ends)."""
        await wait_for(lambda: self.saw(text) or self.proc.returncode is not None,
                       f"{text!r} from the daemon", limit)
        if not self.saw(text):
            raise AssertionError(f"daemon exited ({self.proc.returncode}) before {text!r}:\n"
                                 + self.output())

    async def wait(self, limit: float = 30.0) -> int:
        """Wait for the process to end and for its output to be read; its exit status."""
        code = await asyncio.wait_for(self.proc.wait(), limit)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code

    async def terminate(self, limit: float = 30.0) -> int:
        """SIGTERM and wait; the exit status."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(limit)

    async def kill(self) -> int:
        if self.proc.returncode is None:
            self.proc.kill()
        return await self.wait()


async def wait_for(condition: Callable[[], object], what: str, limit: float = 60.0,
                   step: float = 0.1) -> None:
    """Poll ``condition`` until it is true; an AssertionError naming ``what`` after ``limit``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(step)


async def metric(port: int, name: str, **labels: str) -> float:
    """One value from the daemon's /metrics (0 when the series does not exist yet)."""
    async with httpx2.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == series:
            return float(value)
    return 0.0


def minimiser_snapshot(files: SiteFiles) -> dict[str, Any] | None:
    """The daemon's saved minimiser state (state/minimiser-state.json), None before the first."""
    path = files.state_dir / "minimiser-state.json"
    try:
        found: dict[str, Any] = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return found


def _release_log_lines(files: SiteFiles) -> list[dict[str, Any]]:
    path = files.state_dir / "release-log.jsonl"
    if not path.exists():
        return []
    lines = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(ValueError):  # a torn last line, as after SIGKILL
            lines.append(json.loads(line))
    return lines


def sent_seqs(files: SiteFiles) -> set[int]:
    """Sequence numbers of data envelopes the release log marks sent (broker acknowledged)."""
    return {s for e in _release_log_lines(files) if e.get("event") == "sent" for s in e["seqs"]}


def _withdrawn_reasons(files: SiteFiles) -> dict[int, str]:
    """Why the outbox removed releases it never saw acknowledged: withdrawn unsent, or
    possibly sent (published, then removed before the PUBACK: the broker may deliver it)."""
    lines, sent = _release_log_lines(files), sent_seqs(files)
    return {s: e["reason"] for e in lines if e.get("event") in {"withdrawn", "possibly_sent"}
            for s in e["seqs"] if s not in sent}


def release_log(files: SiteFiles, *, with_withdrawn: bool = False) -> list[dict[str, Any]]:
    """The releases in state/release-log.jsonl that were sent or are still queued; with
    ``with_withdrawn`` also those removed unacknowledged (withdrawn or possibly sent)."""
    withdrawn = {} if with_withdrawn else _withdrawn_reasons(files)
    return [e for e in _release_log_lines(files)
            if "event" not in e and e.get("seq") not in withdrawn]


def withdrawn_releases(files: SiteFiles, reason: str) -> list[dict[str, Any]]:
    """The releases the release log marks removed unacknowledged (withdrawn unsent or
    possibly sent) for ``reason``."""
    withdrawn = _withdrawn_reasons(files)
    return [e for e in _release_log_lines(files)
            if "event" not in e and withdrawn.get(e.get("seq", -1)) == reason]


class Page:
    """The household page over real HTTP, as a browser would use it (cookie, CSRF, Origin)."""

    def __init__(self, port: int) -> None:
        self.origin = f"http://127.0.0.1:{port}"
        self.client = httpx2.AsyncClient(base_url=self.origin, timeout=10.0)
        self.csrf = ""

    async def __aenter__(self) -> Page:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def login(self, code: str = PAIRING_CODE) -> None:
        token = _csrf_of((await self.client.get("/login")).text)
        reply = await self.client.post("/login", data={"csrf": token, "code": code},
                                       headers={"origin": self.origin})
        assert reply.status_code == 303, reply.text
        home = await self.client.get("/")
        assert home.status_code == 200, home.text
        self.csrf = _csrf_of(home.text)

    async def grant(self, purpose: str, recipient: str, tier: str,
                    hours: int | None = None) -> httpx2.Response:
        """POST /grant as the purpose card's form does; the page after the redirect."""
        form = {"csrf": self.csrf, "purpose": purpose, "recipient": recipient, "tier": tier}
        if hours is not None:
            form["hours"] = str(hours)
        reply = await self.client.post("/grant", data=form, headers={"origin": self.origin})
        assert reply.status_code == 303, f"{reply.status_code}: {reply.text}"
        return await self.client.get(reply.headers["location"])


def _csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)
