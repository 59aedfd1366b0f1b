"""A fleet on one machine: N simulated gateways publishing sealed envelopes to one mosquitto
(TLS, one username per site, ``pattern write hems/v1/%u/#``), and M ``hems-receiver``
processes in one shared subscription group.

Each simulated gateway has its own Ed25519 device key and its own MQTT connection, and seals
service releases (30-minute windows of allowed points) with :func:`agent.wire.envelope.seal` to the
company's key, exactly as a gateway does. Envelopes are sealed before the clock starts: what is
timed is the broker and the receivers (verify, decrypt, dedupe, purpose check, JSON line out).
Used by bench/bench_fleet.py and tests/proof/test_fleet.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.wire import envelope, keys
from agent.wire.topics import topic_for
from policy.release import Record, Release
from policy.tiers import Tier

RECEIVER = "receiver"
ACL = f"user {RECEIVER}\ntopic read hems/v1/#\n\npattern write hems/v1/%u/#\n"
POINTS = ("pv.energy", "grid.energy_import", "grid.energy_export", "load.power", "pv.power")
WINDOW_0 = 1767225600  # 2026-01-01T00:00Z


def password_line(user: str, password: str) -> str:
    """A mosquitto 2 password-file line (PBKDF2-SHA512, 101 iterations, as mosquitto_passwd
    writes it): computed here, since 1,000 runs of mosquitto_passwd take a while."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(kw_only=True)
class Fleet:
    """The files of one fleet run and its broker."""

    directory: Path
    sites: list[str]
    envelopes: dict[str, list[bytes]]  # site -> sealed envelopes, in seq order
    port: int
    ca: Path
    broker: subprocess.Popen[bytes] | None = None

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.envelopes.values())


def build(directory: Path, n_sites: int, per_site: int) -> Fleet:
    """Keys, registry, password file, ACL, broker config and every site's envelopes."""
    from tests.support.mosquitto import make_tls

    directory.mkdir(parents=True, exist_ok=True)
    company = keys.generate_recipient_key()
    keys.write_private_file(directory / "company.key", keys.recipient_private_pem(company))
    keys.write_private_file(directory / "receiver.pass", b"pw-receiver")
    sites = [f"s-{n:05d}" for n in range(n_sites)]
    registry, envelopes, lines = {}, {}, [password_line(RECEIVER, "pw-receiver")]
    for site in sites:
        device = ed25519.Ed25519PrivateKey.generate()
        registry[site] = keys.device_public_pem(device.public_key()).decode()
        envelopes[site] = [_seal(site, device, company.public, seq) for seq in range(per_site)]
        lines.append(password_line(site, f"pw-{site}"))
    (directory / "devices.json").write_text(json.dumps(registry), encoding="utf-8")
    (directory / "passwd").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "acl").write_text(ACL, encoding="utf-8")
    ca, cert, key = make_tls(directory)
    port = _free_port()
    (directory / "mosquitto.conf").write_text(
        f"per_listener_settings false\nallow_anonymous false\n"
        f"password_file {directory / 'passwd'}\nacl_file {directory / 'acl'}\n"
        f"persistence false\nmax_queued_messages 100000\n"
        f"log_dest file {directory / 'mosquitto.log'}\nlog_type error\nlog_type warning\n"
        f"log_type subscribe\nlistener {port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
        f"user {_user()}\n", encoding="utf-8")
    return Fleet(directory=directory, sites=sites, envelopes=envelopes, port=port, ca=ca)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _seal(site: str, device: ed25519.Ed25519PrivateKey, recipient: keys.RecipientPublicKey,
          seq: int) -> bytes:
    start = WINDOW_0 + 1800 * seq
    header = envelope.Header(
        site=site, purpose="service", tier="30min", kind="data", recipient_key=recipient.key_id,
        device_key=keys.device_key_id(device.public_key()), catalogue="2026.1",
        consent_id="cr-1", consent_hash="ab" * 32, seq=seq, window_start=start,
        window_end=start + 1800, created=(start + 1805) * 1000)
    records = tuple(Record(device="inverter", point=p, kind="power", unit="W",
                           values={"mean": 1000.0 + i + seq, "max": 2000.0 + i}, coverage=1.0,
                           good=30, bad=0) for i, p in enumerate(POINTS))
    body = Release(purpose="service", recipient="company", tier=Tier.HALF_HOUR,
                   start=datetime.fromtimestamp(start, UTC),
                   end=datetime.fromtimestamp(start + 1800, UTC), records=records, missing=(),
                   consent_record_id="cr-1", consent_record_hash="ab" * 32,
                   catalogue_version="2026.1").to_dict()
    return envelope.seal(header, body, recipient=recipient, device_key=device)


def start_broker(fleet: Fleet) -> None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    fleet.broker = subprocess.Popen([binary, "-c", str(fleet.directory / "mosquitto.conf")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", fleet.port),
                                                                    0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def start_receivers(fleet: Fleet, count: int) -> list[subprocess.Popen[bytes]]:
    exe = Path(sys.executable).with_name("hems-receiver")
    procs = []
    for n in range(count):
        procs.append(subprocess.Popen(
            [str(exe), "--broker", f"mqtts://127.0.0.1:{fleet.port}", "--ca", str(fleet.ca),
             "--username", RECEIVER, "--password-file", str(fleet.directory / "receiver.pass"),
             "--device-keys", str(fleet.directory / "devices.json"),
             "--recipient-key", str(fleet.directory / "company.key"),
             "--group", "fleet", "--client-id", f"fleet-receiver-{n}",
             "--replay-db", str(fleet.directory / f"seen-{n}.db"),
             "--output", str(fleet.directory / f"accepted-{n}.jsonl"), "--log-level", "ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 30
    log = fleet.directory / "mosquitto.log"
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if sum(f"fleet-receiver-{n} " in text for n in range(count)) >= count:
            return procs
        time.sleep(0.1)
    stop(procs)
    raise RuntimeError("the receivers did not subscribe within 30 s")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def accepted_lines(directory: Path, receivers: int) -> list[str]:
    """Every JSON line the receivers of a run in ``directory`` wrote."""
    lines: list[str] = []
    for n in range(receivers):
        path = directory / f"accepted-{n}.jsonl"
        if path.exists():
            lines += path.read_text(encoding="utf-8").splitlines()
    return lines


def accepted_count(fleet: Fleet, receivers: int) -> int:
    total = 0
    for n in range(receivers):
        path = fleet.directory / f"accepted-{n}.jsonl"
        with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))
    return total


async def _gateway(fleet: Fleet, site: str, context: ssl.SSLContext, go: asyncio.Event,
                   connected: list[int], limit: asyncio.Semaphore) -> None:
    async with limit:
        client = aiomqtt.Client("127.0.0.1", fleet.port, identifier=f"hems-{site}",
                                username=site, password=f"pw-{site}", tls_context=context,
                                timeout=30)
        await client.__aenter__()
    connected[0] += 1
    try:
        await go.wait()
        topic = topic_for(site, "service", "data")
        for payload in fleet.envelopes[site]:
            await client.publish(topic, payload, qos=1)
    finally:
        await client.__aexit__(None, None, None)


async def publish_and_wait(fleet: Fleet, receivers: int,
                           limit_s: float) -> tuple[float, float]:
    """Connect every gateway, then publish all at once; seconds until every envelope is
    acknowledged by the broker, and until every one is accepted by a receiver."""
    context = ssl.create_default_context(cafile=str(fleet.ca))
    go, connected, limit = asyncio.Event(), [0], asyncio.Semaphore(50)
    tasks = [asyncio.create_task(_gateway(fleet, s, context, go, connected, limit))
             for s in fleet.sites]
    while connected[0] < len(fleet.sites):
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise RuntimeError(f"a gateway could not connect: {failed[0].exception()}")
        await asyncio.sleep(0.05)
    started = time.monotonic()
    go.set()
    published = asyncio.ensure_future(asyncio.gather(*tasks))
    acked = None
    while accepted_count(fleet, receivers) < fleet.total:
        if time.monotonic() - started > limit_s:
            break
        if acked is None and published.done():
            acked = time.monotonic() - started
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    await published
    return (acked if acked is not None else elapsed), elapsed


def run(directory: Path, *, n_sites: int, receivers: int, per_site: int,
        timeout: float = 300.0) -> dict[str, float]:
    """One measured run; the broker and receivers are stopped afterwards."""
    fleet = build(directory, n_sites, per_site)
    start_broker(fleet)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = start_receivers(fleet, receivers)
        acked, elapsed = asyncio.run(publish_and_wait(fleet, receivers, timeout))
    finally:
        stop(procs)
        if fleet.broker is not None:
            stop([fleet.broker])
    accepted = accepted_count(fleet, receivers)
    return {"sent": fleet.total, "accepted": accepted, "seconds": elapsed,
            "published_s": acked, "rate": accepted / elapsed if elapsed else 0.0}
