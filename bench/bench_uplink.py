"""Uplink costs: sealing/opening, bytes on the wire per tier, outbox disk writes, backlog drain.

Prints Markdown tables. The drain runs against a real local mosquitto when the binary is
installed (started here with TLS, as in the tests); otherwise it times the outbox side alone and
says so.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.store.outbox import Outbox, OutboxConfig
from agent.wire import envelope, keys
from bench.table import print_table

POINTS = ("pv.power", "pv.energy", "grid.power", "grid.energy_import", "grid.energy_export",
          "battery.power", "battery.soc", "battery.energy_charged", "load.power",
          "inverter.state")
# tier -> (window seconds, readings per point per window at one reading per second)
TIERS = {"raw": (60, 60), "1min": (60, 60), "30min": (1800, 1800), "1d": (86400, 86400)}
DEVICE = ed25519.Ed25519PrivateKey.generate()


def _header(recipient: keys.RecipientPrivateKey, seq: int, tier: str = "30min",
            span: int = 1800) -> envelope.Header:
    return envelope.Header(
        site="s-0001", purpose="service", tier=tier, kind="data",
        recipient_key=recipient.key_id, kem=recipient.kem,
        device_key=keys.device_key_id(DEVICE.public_key()), catalogue="2026.1",
        consent_id="cr-0001", consent_hash="ab" * 32, seq=seq,
        window_start=1767225600, window_end=1767225600 + span, created=1767227405123)


def _aggregate_body(points: tuple[str, ...] = POINTS) -> dict[str, object]:
    return {"records": [{"point": p, "mean": 1234.5 + i, "max": 2345.0 + i, "delta": 12.5 * i}
                        for i, p in enumerate(points)]}


def _raw_body(n: int) -> dict[str, object]:
    return {"records": [{"point": p, "ts": 1767225600 + s, "value": 1000.0 + (s * 7 + i) % 97}
                        for s in range(n) for i, p in enumerate(POINTS)]}


def _raw_json_bytes(n: int) -> int:
    # What the device produces: one JSON object per reading, as a naive uplink would send it.
    return sum(len(json.dumps({"device": "inverter-1", "point": p, "kind": "power",
                               "value": 1000.0 + s % 97, "unit": "W",
                               "ts": "2026-01-01T00:00:00+00:00", "quality": "good"}))
               for s in range(n) for p in POINTS)


def bench_crypto() -> None:
    rows = []
    body = _aggregate_body()
    for kem, n in ((keys.KEM_X25519, 3000), (keys.KEM_HYBRID, 1000)):
        rcpt = keys.generate_recipient_key(kem)
        sealed, started = [], time.perf_counter()
        for seq in range(n):
            sealed.append(envelope.seal(_header(rcpt, seq), body, recipient=rcpt.public,
                                        device_key=DEVICE))
        seal_rate = n / (time.perf_counter() - started)
        devices, rkeys = {"s-0001": DEVICE.public_key()}, {rcpt.key_id: rcpt}
        started = time.perf_counter()
        for data in sealed:
            envelope.open_envelope(data, device_keys=devices, recipient_keys=rkeys)
        open_rate = n / (time.perf_counter() - started)
        rows.append((kem, len(sealed[0]), f"{seal_rate:,.0f}", f"{open_rate:,.0f}"))
    print_table(["KEM", "envelope bytes (10 records)", "sealed/s", "opened/s"], rows)


def bench_wire() -> None:
    rcpt = keys.generate_recipient_key()
    rows = []
    for tier, (span, per_point) in TIERS.items():
        body = _raw_body(per_point) if tier == "raw" else _aggregate_body()
        data = envelope.seal(_header(rcpt, 1, tier, span), body, recipient=rcpt.public,
                             device_key=DEVICE)
        # MQTT PUBLISH overhead: fixed header (~5), topic length + topic, packet id.
        wire = len(data) + 5 + 2 + len("hems/v1/s-0001/service/data") + 2
        readings = per_point * len(POINTS)
        per_day = 86400 // span
        raw = _raw_json_bytes(60) * per_point // 60  # the raw stream is uniform per minute
        rows.append((tier, per_day, f"{wire * per_day:,}", f"{wire / readings:.3f}",
                     f"{raw / readings:.1f}", f"{raw / wire:,.0f}x"))
    print("\nBytes on the wire, 10 points read once a second, one purpose:\n")
    print_table(["tier", "envelopes/day", "bytes/day", "bytes/reading", "raw JSON bytes/reading",
                 "reduction"], rows)


def _write_bytes() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def bench_outbox(tmp: Path) -> None:
    payload = b"\x5a" * 620
    box = Outbox(tmp / "throughput.db", OutboxConfig(batch_items=200))
    started, n = time.perf_counter(), 20_000
    for _ in range(n):
        box.enqueue(payload, topic="hems/v1/s-0001/service/data", purpose="service",
                    recipient="company", tier="30min", kind="data")
    box.flush()
    rate = n / (time.perf_counter() - started)
    # One hour of a realistic load: 3 purposes, one envelope a minute each, every enqueue and
    # every ack committed on its own (the flush interval is far shorter than the spacing).
    hour = Outbox(tmp / "hour.db")
    before = _write_bytes()
    for _ in range(180):
        hour.enqueue(payload, topic="hems/v1/s-0001/service/data", purpose="service",
                     recipient="company", tier="1min", kind="data")
        hour.flush()
        hour.ack([item.id for item in hour.next_batch()])
        hour.flush()
    after = _write_bytes()
    measured = "n/a" if before is None or after is None else f"{after - before:,}"
    print("\nOutbox (sqlite WAL, synchronous=FULL):\n")
    print_table(["measure", "value"], [
        ("enqueue+commit, batches of 200 (envelopes/s)", f"{rate:,.0f}"),
        ("1 h at 180 envelopes/h: /proc/self/io write_bytes", measured),
        ("1 h at 180 envelopes/h: payload bytes", f"{180 * len(payload):,}"),
        ("db + WAL file size after that hour", f"{_disk_size(tmp / 'hour.db'):,}"),
    ])


async def _drain_with_broker(tmp: Path, box: Outbox) -> tuple[float, str]:
    from agent.uplink.publisher import Publisher
    from agent.uplink.session import BrokerConfig
    from tests.support.mosquitto import Mosquitto

    broker = Mosquitto(tmp / "broker", {"s-0001": "pw"})
    broker.start()
    try:
        config = BrokerConfig(host="127.0.0.1", port=broker.port, ca_file=broker.ca,
                              client_id="bench", username="s-0001", password="pw")
        publisher = Publisher(config, box, batch=100, idle_wait=0.05)
        box.on_commit = publisher.notify
        started = time.perf_counter()
        task = asyncio.create_task(publisher.run())
        while box.stats().depth:
            await asyncio.sleep(0.05)
            box.flush()
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        broker.stop()
    return elapsed, "real mosquitto 2 on loopback, TLS, QoS 1"


def _drain_outbox_only(box: Outbox) -> tuple[float, str]:
    """The publisher's part without a broker: batches of 100, each acknowledged and committed."""
    started = time.perf_counter()
    while True:
        if batch := box.next_batch(100):
            box.ack([item.id for item in batch])
            box.flush()
        elif box.stats().depth == 0:
            break
        else:
            time.sleep(0.01)  # paced: wait for the next tokens
    return time.perf_counter() - started, "outbox side only (acknowledged at once, no broker)"


# (envelopes, backlog_rate, against a broker): a day of three purposes at one envelope a minute,
# and 20,000 (about 4.6 days of it).
DRAINS = ((3 * 1440, 1e9, True), (3 * 1440, 500.0, True), (20_000, 1e9, True),
          (20_000, 1e9, False))


def bench_drain(tmp: Path) -> None:
    clock = [0.0]
    rows = []
    for n, (count, rate, broker) in enumerate(DRAINS):
        clock[0] = time.time() - 86400.0
        box = Outbox(tmp / f"drain-{n}.db", OutboxConfig(backlog_rate=rate),
                     clock=lambda: clock[0])
        payload = b"\x5a" * 620
        for _ in range(count):
            box.enqueue(payload, topic="hems/v1/s-0001/service/data", purpose="service",
                        recipient="company", tier="1min", kind="data")
        box.flush()
        clock[0] = time.time()
        box._clock = time.time  # the outage is over: back to real time
        try:
            if not broker:
                raise RuntimeError("mosquitto not asked for")
            elapsed, how = asyncio.run(_drain_with_broker(tmp / f"b{n}", box))
        except Exception as exc:  # pytest.skip() when mosquitto is absent, or no binary
            if "mosquitto" not in str(exc):
                raise
            elapsed, how = _drain_outbox_only(box)
        box.close()
        label = "unpaced" if rate > 1e6 else f"paced at {rate:.0f}/s"
        rows.append((label, f"{count:,}", f"{elapsed:.1f}", f"{count / elapsed:,.0f}", how))
    print("\nBacklog drain after an outage:\n")
    print_table(["backlog", "envelopes", "seconds", "envelopes/s", "against"], rows)


def main() -> None:
    bench_crypto()
    bench_wire()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        bench_outbox(Path(tmp))
        bench_drain(Path(tmp))
