"""Metrics render in the Prometheus text format and are served over HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib

from agent.host.metrics import Metrics, serve_metrics
from tests.conftest import free_port


def test_render_counters_and_gauges_with_labels() -> None:
    metrics = Metrics()
    metrics.describe("hems_releases_total", "counter", "Releases per purpose")
    metrics.inc("hems_releases_total", purpose="service")
    metrics.inc("hems_releases_total", 2, purpose="service")
    metrics.set("hems_outbox_bytes", 1024)
    text = metrics.render()
    assert '# TYPE hems_releases_total counter' in text
    assert 'hems_releases_total{purpose="service"} 3' in text
    assert "hems_outbox_bytes 1024" in text
    assert metrics.get("hems_releases_total", purpose="service") == 3


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.inc("x", device='a"b')
    assert 'x{device="a\\"b"} 1' in metrics.render()


async def _get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


async def test_served_over_http() -> None:
    metrics = Metrics()
    metrics.set("hems_up", 1)
    port = free_port()
    started = asyncio.Event()
    task = asyncio.create_task(serve_metrics(metrics, "127.0.0.1", port, started))
    await asyncio.wait_for(started.wait(), 5)
    ok = await _get(port, "/metrics")
    missing = await _get(port, "/nope")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert ok.startswith(b"HTTP/1.1 200 OK") and b"hems_up 1" in ok
    assert missing.startswith(b"HTTP/1.1 404")
