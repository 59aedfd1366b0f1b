"""Reference receiver: rejects replayed, misaddressed, foreign and ill-fitting envelopes."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.cloud.receiver import ReplayStore, load_device_registry
from agent.uplink.session import connect, tls_context
from agent.wire import envelope, keys
from tests.conftest import free_port
from tests.integration.uplink_helpers import (
    PASSWORDS,
    WINDOW,
    Fleet,
    accepted_seqs,
    broker_config,
    data_topic,
    wait_until,
)
from tests.support.bodies import consent_body, deletion_body, event_body, release_body
from tests.support.mosquitto import RECEIVER_USER, Mosquitto, make_tls

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux


def test_replay_is_rejected_even_after_a_receiver_restart(tmp_path: Path) -> None:
    fleet = Fleet()
    receiver, out = fleet.receiver(tmp_path / "seen.db")
    data = fleet.seal("s-0001", 3)
    assert receiver.handle(data_topic("s-0001"), data).accepted
    assert "replay" in receiver.handle(data_topic("s-0001"), data).reason
    receiver.replay.close()
    again, _ = fleet.receiver(tmp_path / "seen.db")
    assert "replay" in again.handle(data_topic("s-0001"), fleet.seal("s-0001", 3)).reason
    assert again.handle(data_topic("s-0001"), fleet.seal("s-0001", 4)).accepted
    assert accepted_seqs(out) == [("s-0001", 3)]
    assert again.rejected == {"replay": 1}


@pytest.mark.parametrize(("make", "reason"), [
    (lambda f: (data_topic("s-0001"), f.seal("s-0001", 1,
                                             recipient=keys.generate_recipient_key())),
     "wrong recipient"),
    (lambda f: (data_topic("s-0002"), f.seal("s-0001", 1)), "topic mismatch"),
    (lambda f: (data_topic("s-0001", "improvement"), f.seal("s-0001", 1)), "topic mismatch"),
    (lambda f: ("hems/v1/s-0001/service", f.seal("s-0001", 1)), "not of the form"),
    (lambda f: (data_topic("s-0001"), f.seal("s-0001", 1, points=("water.flow",))),
     "point 'water.flow' is not allowed"),
    (lambda f: (data_topic("s-0001", "proposals"),
                f.seal("s-0001", 1, purpose="proposals", points=("inverter.events",),
                       tier="1d", span=86400)),
     "point 'inverter.events' is not allowed for purpose proposals"),
    (lambda f: (data_topic("s-0001"), f.seal("s-0001", 1, span=900)),
     "window length does not match tier 30min"),
    (lambda f: (data_topic("s-0001", "proposals"),
                f.seal("s-0001", 1, purpose="proposals", tier="30min")),
     "tier 30min is finer than purpose proposals allows"),
    (lambda f: (data_topic("s-0001", "survey"), f.seal("s-0001", 1, purpose="survey")),
     "carries no gateway data"),
    (lambda f: (data_topic("s-0001"), f.seal("s-0001", 1)[:-1]), "truncated"),
    (lambda f: (data_topic("s-0001"), b"\x00" * 2_000_000), "exceeds"),
])
def test_rejections_name_their_reason(tmp_path: Path, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet()
    receiver, out = fleet.receiver(tmp_path / "seen.db")
    topic, payload = make(fleet)
    verdict = receiver.handle(topic, payload)
    assert not verdict.accepted and reason in verdict.reason
    assert out.getvalue() == "" and sum(receiver.rejected.values()) == 1


def test_unknown_device_is_rejected(tmp_path: Path) -> None:
    fleet = Fleet()
    stranger = Fleet()
    receiver, _ = fleet.receiver(tmp_path / "seen.db")
    # Same site id, same recipient, but signed by a device the receiver never registered.
    stranger.recipient = fleet.recipient
    verdict = receiver.handle(data_topic("s-0001"), stranger.seal("s-0001", 1))
    assert "unknown device" in verdict.reason


def test_device_registry_from_json_and_directory(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    (tmp_path / "devices.json").write_text(json.dumps(
        {"s-0001": keys.device_public_pem(key).decode()}), encoding="utf-8")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "s-0002.pem").write_bytes(keys.device_public_pem(key))
    assert set(load_device_registry(tmp_path / "devices.json")) == {"s-0001"}
    assert set(load_device_registry(tmp_path / "dir")) == {"s-0002"}


@pytest.mark.mosquitto
async def test_hems_receiver_command_writes_json_lines(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", PASSWORDS)
    broker.start()
    fleet = Fleet()
    (tmp_path / "devices.json").write_text(json.dumps(
        {s: keys.device_public_pem(k.public_key()).decode() for s, k in fleet.devices.items()}),
        encoding="utf-8")
    keys.write_private_file(tmp_path / "company.key", keys.recipient_private_pem(fleet.recipient))
    keys.write_private_file(tmp_path / "receiver.pass", PASSWORDS[RECEIVER_USER].encode())
    out = tmp_path / "out.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cloud.receiver_cli", "--broker", f"mqtts://127.0.0.1:{broker.port}",
        "--ca", str(broker.ca), "--username", RECEIVER_USER, "--password-file",
        str(tmp_path / "receiver.pass"), "--device-keys", str(tmp_path / "devices.json"),
        "--recipient-key", str(tmp_path / "company.key"), "--replay-db",
        str(tmp_path / "seen.db"), "--output", str(out), "--client-id", "rx-cli",
        stderr=asyncio.subprocess.PIPE)
    try:
        await wait_until(lambda: "rx-cli 1 $share/hems/" in broker.log_text(), "subscribed")
        config = broker_config(broker, "s-0001")
        async with connect(config, tls_context(config)) as client:
            for seq in (1, 1, 2):  # a duplicate in the middle
                await client.publish(data_topic("s-0001"), fleet.seal("s-0001", seq), qos=1)
        await wait_until(lambda: out.exists() and out.read_text().count("\n") >= 2, "output")
        proc.send_signal(signal.SIGUSR1)  # writes its stacks to stderr and goes on
        await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            _, err = await proc.communicate()
        broker.stop()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["header"]["seq"], x["body"]["records"][0]["point"]) for x in lines] == [
        (1, "pv.energy"), (2, "pv.energy")]
    assert b"replay" in err and proc.returncode == 130
    assert b"(most recent call first)" in err and b"receiver_cli.py" in err
    assert ReplayStore(tmp_path / "seen.db").seen("s-0001", 2)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_receiver_started_with_sigint_ignored_still_stops_on_sigint_and_sigterm(
        tmp_path: Path, signum: signal.Signals, status: int) -> None:
    """A shell's background job, or a manager, may start it with SIGINT ignored; it sets its
    own handlers. No broker listens: it is waiting to retry when the signal comes."""
    fleet = Fleet()
    (tmp_path / "devices.json").write_text(json.dumps(
        {s: keys.device_public_pem(k.public_key()).decode() for s, k in fleet.devices.items()}),
        encoding="utf-8")
    keys.write_private_file(tmp_path / "company.key", keys.recipient_private_pem(fleet.recipient))
    keys.write_private_file(tmp_path / "receiver.pass", b"secret")
    ca, _, _ = make_tls(tmp_path)
    proc = subprocess.Popen(  # the shell ignores SIGINT and the receiver inherits that
        ["sh", "-c", 'trap "" INT; exec "$0" "$@"', sys.executable, "-m",
         "agent.cloud.receiver_cli", "--broker",
         f"mqtts://127.0.0.1:{free_port()}", "--ca", str(ca), "--username", RECEIVER_USER,
         "--password-file",
         str(tmp_path / "receiver.pass"), "--device-keys", str(tmp_path / "devices.json"),
         "--recipient-key", str(tmp_path / "company.key"), "--replay-db",
         str(tmp_path / "seen.db"), "--output", str(tmp_path / "out.jsonl")],
        stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first failed connection: it is running
        assert b"retrying in" in line, line
        proc.send_signal(signum)
        assert proc.wait(20) == status
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _lines(data: bytes) -> list[int]:
    """Seqs of the complete JSON lines in ``data`` (a killed writer may leave half a line)."""
    return [json.loads(line)["header"]["seq"] for line in data.split(b"\n")[:-1]]


@pytest.mark.mosquitto
@pytest.mark.timeout(120)
async def test_a_receiver_killed_before_writing_what_it_received_loses_nothing(
        tmp_path: Path) -> None:
    """The output is a pipe the test holds but does not read (4 KiB), so the receiver blocks
    in its write while the broker has sent it more; SIGKILL then, a restart with a file: each
    envelope is in the pipe or the file. Acknowledging on receipt would lose the ones it held."""
    broker = Mosquitto(tmp_path / "broker", PASSWORDS)
    broker.start()
    fleet = Fleet()
    (tmp_path / "devices.json").write_text(json.dumps(
        {s: keys.device_public_pem(k.public_key()).decode() for s, k in fleet.devices.items()}),
        encoding="utf-8")
    keys.write_private_file(tmp_path / "company.key", keys.recipient_private_pem(fleet.recipient))
    keys.write_private_file(tmp_path / "receiver.pass", PASSWORDS[RECEIVER_USER].encode())
    pipe = tmp_path / "out.pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(reader, F_SETPIPE_SZ, 4096)

    def start(output: Path) -> subprocess.Popen[bytes]:
        with (tmp_path / "rx.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "agent.cloud.receiver_cli", "--broker",
                 f"mqtts://127.0.0.1:{broker.port}", "--ca", str(broker.ca), "--username",
                 RECEIVER_USER, "--password-file", str(tmp_path / "receiver.pass"),
                 "--device-keys", str(tmp_path / "devices.json"), "--recipient-key",
                 str(tmp_path / "company.key"), "--replay-db", str(tmp_path / "seen.db"),
                 "--output", str(output), "--client-id", "rx-kill", "--no-share"],
                stdout=subprocess.DEVNULL, stderr=log)

    def sent() -> int:
        return broker.log_text().count("Sending PUBLISH to rx-kill")

    def queued() -> int:
        return struct.unpack("i", fcntl.ioctl(reader, termios.FIONREAD, b"\0" * 4))[0]

    seqs = list(range(1, 41))
    proc = start(pipe)
    try:
        await wait_until(lambda: "rx-kill 1 hems/v1/+/+/+" in broker.log_text(), "subscribed")
        config = broker_config(broker, "s-0001")
        async with connect(config, tls_context(config)) as client:
            for seq in seqs:
                await client.publish(data_topic("s-0001"), fleet.seal("s-0001", seq), qos=1)
        # blocked: the pipe is nearly full and the broker sent more than the pipe holds
        await wait_until(lambda: queued() > 4096 - 1200 and sent() >= 12, "receiver blocked")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        in_pipe = b""
        while chunk := os.read(reader, 65536):
            in_pipe += chunk
        assert 0 < len(_lines(in_pipe)) < sent() - 1  # it had received some it never wrote
        out = tmp_path / "out.jsonl"
        proc = start(out)
        await wait_until(lambda: sorted(set(_lines(in_pipe) + _lines(
            out.read_bytes() if out.exists() else b""))) == seqs, "every envelope once")
    finally:
        os.close(reader)
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        broker.stop()


def _notice(fleet: Fleet, kind: str, body: dict[str, Any], *, tier: str = "events",
            seq: int = 1) -> tuple[str, bytes]:
    device = fleet.devices["s-0001"]
    window = {"window_start": WINDOW, "window_end": WINDOW + 1800} if kind == "data" else {
        "window_start": None, "window_end": None}
    header = envelope.Header(
        site="s-0001", purpose="service", tier=tier, kind=kind,
        recipient_key=fleet.recipient.key_id, kem=fleet.recipient.kem,
        device_key=keys.device_key_id(device.public_key()), catalogue="test",
        consent_id="c-1", consent_hash="ab" * 32, seq=seq, created=1767227401000,
        **window)  # type: ignore[arg-type]
    sealed = envelope.seal(header, body, recipient=fleet.recipient.public, device_key=device)
    return f"hems/v1/s-0001/service/{kind}", sealed


def _data_header(fleet: Fleet) -> envelope.Header:
    return envelope.parse(fleet.seal("s-0001", 0)).header


@pytest.mark.parametrize(("kind", "tier", "make", "reason"), [
    ("data", "30min", lambda h: {"records": [{"delta": 512.0, "point": "pv.energy"}]},
     "body schema: the data body breaks data.schema.json at /: missing"),
    ("data", "30min", lambda h: {**release_body(h), "records": [
        {**release_body(h)["records"][0], "good": "30"}]},
     "at /records/0/good: expected integer"),
    ("data", "30min", lambda h: {**release_body(h), "tier": "1d"},
     "body and header disagree on tier"),
    ("data", "30min", lambda h: {**release_body(h), "start": "2026-01-01T00:30:00+00:00"},
     "body and header disagree on start"),
    ("consent", "off", lambda h: {**consent_body(), "signature": 1},
     "at /signature: expected string or null"),
    ("consent", "off", lambda h: {**consent_body(), "extra": 1}, "unexpected key 'extra'"),
    ("consent", "off", lambda h: consent_body(tier="30min"),
     "body and header disagree on purpose or tier"),
    ("deletion", "events", lambda h: {"type": "deletion_request"}, "deletion.schema.json"),
    ("event", "events", lambda h: {"events": [{"code": "overtemp"}]},
     "fits none of its forms"),
])
def test_bodies_are_checked_against_their_schema(
        tmp_path: Path, kind: str, tier: str, make: Any, reason: str) -> None:
    fleet = Fleet()
    receiver, out = fleet.receiver(tmp_path / "seen.db")
    topic, payload = _notice(fleet, kind, make(_data_header(fleet)), tier=tier)
    verdict = receiver.handle(topic, payload)
    assert not verdict.accepted and reason in verdict.reason
    assert out.getvalue() == ""
    counted = "content does not fit its header" if "disagree" in reason else "body schema"
    assert receiver.rejected == {counted: 1}


@pytest.mark.parametrize(("kind", "tier", "body"), [
    ("consent", "off", consent_body()), ("consent", "30min", consent_body(tier="30min")),
    ("deletion", "events", deletion_body()), ("event", "events", event_body()),
])
def test_notices_that_fit_their_schema_are_accepted(
        tmp_path: Path, kind: str, tier: str, body: dict[str, Any]) -> None:
    fleet = Fleet()
    receiver, _ = fleet.receiver(tmp_path / "seen.db")
    assert receiver.handle(*_notice(fleet, kind, body, tier=tier)).accepted
