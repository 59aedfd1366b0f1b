"""The page's connections are bounded in number and in time: real server, real sockets.

Each test serves the real app with small limits on a loopback port and talks to it with raw
sockets, as a device flooding the LAN would: hundreds of idle connections, a request head or
body trickled a byte at a time, TLS handshakes that never come. What is asserted is behaviour
(which connections the server closed, that a real request is still answered), not timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agent.web.app import create_app
from agent.web.connections import Guard, PageLimits, Phase, connection_budget
from agent.web.server import serve
from tests.conftest import free_port
from tests.integration.web.test_web_security import _self_signed, build


@contextlib.asynccontextmanager
async def page(tmp_path: Path, limits: PageLimits, **tls: Any) -> AsyncIterator[tuple[int, Guard]]:
    port = free_port()
    rig = build(tmp_path, hosts=frozenset({"127.0.0.1"}), port=port)
    guards: list[Guard] = []
    started, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(create_app(rig.service, rig.settings), "127.0.0.1", port,
                                     started=started, stop=stop, limits=limits, guard=guards,
                                     **tls))
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield port, guards[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        rig.outbox.close()
        rig.ledger.close()


async def connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def until(condition: Any, what: str, limit: float = 15.0) -> None:
    for _ in range(int(limit / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def trickle(sock: socket.socket, data: bytes, steps: int = 100) -> int:
    """Send ``data`` a byte every 0.1 s until the server closes; the bytes it took."""
    loop = asyncio.get_running_loop()
    for n in range(min(steps, len(data))):
        if closed_by_server(sock):
            return n
        try:
            await loop.sock_sendall(sock, data[n:n + 1])
        except (BrokenPipeError, ConnectionResetError):
            return n
        await asyncio.sleep(0.1)
    return -1  # never closed


async def test_old_idle_connections_are_pushed_out_and_a_request_is_still_answered(
        tmp_path: Path) -> None:
    limits = PageLimits(max_connections=16, head_timeout=60.0)  # no deadline gets involved
    async with page(tmp_path, limits) as (port, guard):
        idle = [await connect(port) for _ in range(300)]
        try:
            async with httpx2.AsyncClient() as client:
                reply = await client.get(f"http://127.0.0.1:{port}/login")
            assert reply.status_code == 200
            await until(lambda: sum(map(closed_by_server, idle)) >= 300 - 16,
                        "all but the newest idle connections closed")
            assert all(closed_by_server(s) for s in idle[:250])  # the oldest went first
            assert guard.live() <= 16 and len(guard.open) <= 17
            assert guard.pushed_out >= 300 - 16
        finally:
            for sock in idle:
                sock.close()


async def test_a_connection_that_sends_nothing_is_closed(tmp_path: Path) -> None:
    async with page(tmp_path, PageLimits(head_timeout=0.5)) as (port, guard):
        sock = await connect(port)
        with sock:
            await until(lambda: closed_by_server(sock), "a silent connection closed")
        assert guard.expired[Phase.HEAD] == 1


async def test_a_request_head_trickled_byte_by_byte_is_closed(tmp_path: Path) -> None:
    head = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    async with page(tmp_path, PageLimits(head_timeout=0.5)) as (port, guard):
        with await connect(port) as sock:
            sent = await trickle(sock, head)
        assert 0 <= sent < len(head)  # it kept sending, and was closed all the same
        assert guard.expired[Phase.HEAD] == 1


async def test_a_request_body_trickled_byte_by_byte_is_closed(tmp_path: Path) -> None:
    async with page(tmp_path, PageLimits(body_timeout=0.5)) as (port, guard):
        origin = f"http://127.0.0.1:{port}"
        head = (f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                "Content-Length: 4000\r\n\r\n").encode()
        with await connect(port) as sock:
            await asyncio.get_running_loop().sock_sendall(sock, head)
            sent = await trickle(sock, b"code=" + b"1" * 3995)
        assert 0 <= sent < 4000
        assert guard.expired[Phase.BODY] == 1


async def test_tls_handshakes_that_never_come_are_pushed_out(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    limits = PageLimits(max_connections=8, head_timeout=60.0)
    async with page(tmp_path, limits, ssl_certfile=cert, ssl_keyfile=key) as (port, guard):
        silent = [await connect(port) for _ in range(50)]
        try:
            context = ssl.create_default_context(cafile=str(cert))
            async with httpx2.AsyncClient(verify=context) as client:
                reply = await client.get(f"https://127.0.0.1:{port}/login")
            assert reply.status_code == 200
            await until(lambda: sum(map(closed_by_server, silent)) >= 50 - 8,
                        "silent TLS connections closed")
            assert guard.live() <= 8
        finally:
            for sock in silent:
                sock.close()


def test_the_connection_budget_leaves_descriptors_for_the_daemon() -> None:
    limits = PageLimits()
    assert connection_budget(limits, 1024) == 128
    assert connection_budget(limits, 300) == 22  # (300 - 256 reserved) / 2
    assert connection_budget(limits, 64) == 8
    with pytest.raises(ValueError, match="timeout"):
        PageLimits(head_timeout=0)


def test_the_daemon_raises_its_soft_open_files_limit_to_the_hard_one() -> None:
    import resource
    import subprocess
    import sys

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 2048))

    code = "from agent.daemon.daemon import raise_open_files_limit as r; print(r())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, preexec_fn=low)
    assert out.stdout.strip() == "2048"
