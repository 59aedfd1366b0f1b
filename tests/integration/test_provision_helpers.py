"""Shared set-up for the provision and doctor tests: a broker, simulators, keys, the CLI."""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.wire import keys
from drivers.sim.server import Site
from tests.conftest import free_port
from tests.support.mosquitto import Mosquitto

PASSWORDS = {"s-0001": "pw-one", "s-0002": "pw-two"}


@dataclass
class Gateway:
    """Paths of one provisioned gateway under a test's tmp_path."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "etc" / "agent.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def etc(self) -> Path:
        return self.root / "etc"


async def cli(*args: str) -> tuple[int, str, str]:
    """``hems-agent ARGS`` as a process (the simulators keep serving in this loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def recipient_file(directory: Path, name: str = "company") -> tuple[Path, str]:
    """A fresh recipient public key file and its key id."""
    key = keys.generate_recipient_key()
    path = directory / f"{name}.pub"
    path.write_bytes(keys.recipient_public_pem(key.public))
    return path, key.key_id


def password_file(directory: Path, user: str) -> Path:
    path = directory / f"{user}.password"
    path.write_text(PASSWORDS[user] + "\n", encoding="utf-8")
    return path


def base_args(gw: Gateway, broker: Mosquitto, site: Site, *, site_id: str = "s-0001",
              user: str = "s-0001") -> list[str]:
    """Every input on the command line: nothing is asked."""
    company, _ = recipient_file(gw.root)
    return [
        "provision", "--config", str(gw.config), "--state-dir", str(gw.state),
        "--site-id", site_id, "--broker-url", f"mqtts://127.0.0.1:{broker.port}",
        "--broker-ca", str(broker.ca), "--broker-username", user,
        "--broker-password-file", str(password_file(gw.root, user)),
        "--recipient", f"company={company}", "--clock-check", "none",
        "--web-listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{free_port()}",
        "--device", f"inverter=127.0.0.1:{site.inverter.port}/1",
        "--device", f"battery=127.0.0.1:{site.battery.port}/1",
        "--device", f"meter=127.0.0.1:{site.meter.port}/1",
        "--non-interactive", "--no-chown",
    ]


def key_id_in(output: str) -> str:
    match = re.search(r"key id ([0-9a-f]{32})", output)
    assert match is not None, output
    return match.group(1)


def pairing_code_in(output: str) -> str | None:
    match = re.search(r"household pairing code .*: (\d+)", output)
    return None if match is None else match.group(1)


async def run_daemon_until_ready(gw: Gateway) -> tuple[list[str], int, str]:
    """Start ``hems-agent run`` on what provision wrote, wait for systemd's READY=1 on a
    notify socket of our own, then SIGTERM it: (notify messages, exit code, stderr)."""
    import os
    import signal
    import socket

    path = gw.root / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path.unlink(missing_ok=True)
    sock.bind(str(path))
    sock.setblocking(False)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run", "--config", str(gw.config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NOTIFY_SOCKET": str(path)})
    loop = asyncio.get_running_loop()
    messages: list[str] = []
    try:
        async with asyncio.timeout(60):  # only so a broken build fails instead of hanging
            exited = asyncio.ensure_future(process.wait())
            while not any("READY=1" in m for m in messages) and not exited.done():
                received = asyncio.ensure_future(loop.sock_recv(sock, 4096))
                await asyncio.wait({received, exited}, return_when=asyncio.FIRST_COMPLETED)
                if received.done():
                    messages.append(received.result().decode())
                else:
                    received.cancel()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, err = await process.communicate()
        sock.close()
    assert process.returncode is not None
    return messages, process.returncode, err.decode()
