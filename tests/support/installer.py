"""Shared set-up for the tests of a Japanese home's installation: PV and a battery on ECHONET
Lite (the loopback emulator), the smart meter on the B-route (the fake SK module on a pty), and
the CLI run in a worker thread while both keep serving in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.demo.echonet import EchonetSite, start_echonet_site
from tests.conftest import free_port
from tests.integration.test_provision_helpers import Gateway, recipient_file
from tests.support.fake_sk_module import FakeSkModule
from tests.support.mosquitto import make_tls

RBID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "SECRETPASS12"


@contextlib.asynccontextmanager
async def emulated_home() -> AsyncIterator[EchonetSite]:
    """PV 0x02791F and battery 0x027D02 on one node, a LAN meter 0x028801 on another."""
    site, _ = await start_echonet_site()
    try:
        yield site
    finally:
        await site.aclose()


def fake_module(dialect: str = "bp35a1") -> FakeSkModule:
    """``async with fake_module() as module:``: the meter behind it takes RBID/PASSWORD."""
    return FakeSkModule(RBID, PASSWORD, dialect=dialect)


async def cli(*argv: str) -> tuple[int, str, str]:
    """``hems-agent ARGV`` in a worker thread of this process (its own event loop), while the
    emulator and the fake module keep serving in this one: the CLI as the installer runs it,
    without a new interpreter per call."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(list(argv))

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


def secret(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text + "\n")
    return path


def args(gw: Gateway, home: EchonetSite | None, *extra: str) -> list[str]:
    """Every input of a provision run by flags; ``home``: where to search for ECHONET Lite
    devices (None: no ECHONET Lite flag at all)."""
    ca, _, _ = make_tls(gw.root)
    company, _ = recipient_file(gw.root)
    password = secret(gw.root, "broker.pw", "pw-one")
    return ["provision", "--config", str(gw.config), "--state-dir", str(gw.state),
            "--site-id", "s-0001", "--broker-url", "mqtts://127.0.0.1:8883",
            "--broker-ca", str(ca), "--broker-username", "s-0001",
            "--broker-password-file", str(password), "--recipient", f"company={company}",
            "--clock-check", "none", "--web-listen", f"127.0.0.1:{free_port()}",
            "--metrics-listen", f"127.0.0.1:{free_port()}", "--non-interactive", "--no-chown",
            "--skip-uplink-test", *extra,
            *(() if home is None else ("--echonet-interface", home.interface,
                                       "--echonet-port", str(home.port),
                                       "--echonet-wait", "0.5"))]


def broute_args(gw: Gateway, module: FakeSkModule, password: str = PASSWORD) -> list[str]:
    return ["--broute-device", module.path,
            "--broute-id-file", str(secret(gw.root, "rbid.txt", RBID)),
            "--broute-password-file", str(secret(gw.root, "rbpw.txt", password))]


def hand_written(gw: Gateway, home: EchonetSite, module: FakeSkModule, *,
                 battery_address: str) -> None:
    """Append ``[echonet]``, three ``[[echonet_devices]]`` and ``[broute]`` to agent.toml by
    hand, as an installer had to before provision knew them (fast timeouts: the emulator and
    the fake module answer at once)."""
    for name, value in (("broute.id", RBID), ("broute.password", PASSWORD)):
        path = gw.etc / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    with gw.config.open("a") as config:
        config.write(f"""
[echonet]
interface = "{home.interface}"
port = {home.port}
timeout = 0.5
discovery_wait = 0.5

[[echonet_devices]]
name = "pv"
eoj = "0279"

[[echonet_devices]]
name = "battery"
eoj = "027D02"
address = "{battery_address}"

[[echonet_devices]]
name = "meter"
eoj = "0288"
address = "{home.meter.address}"

[broute]
device = "{module.path}"
id_file = "{gw.etc / 'broute.id'}"
password_file = "{gw.etc / 'broute.password'}"
scan_timeout = 2.0
join_timeout = 2.0
request_timeout = 1.0
""")


def gateway(tmp_path: Path) -> Gateway:
    (tmp_path / "gw").mkdir()
    return Gateway(tmp_path / "gw")


async def provisioned(gw: Gateway, home: EchonetSite, module: FakeSkModule,
                      *extra: str) -> str:
    """Provision with PV and battery picked from the scan and the B-route meter; stdout."""
    code, out, err = await cli(*args(gw, home, "--echonet-scan", "--echonet-select", "1,2",
                                     *extra), *broute_args(gw, module))
    assert code == 0, out + err
    return out


# The fixtures the installer tests share: import them by name into a test module
# (``from tests.support.installer import gw as gw, home as home, module as module``).
@pytest.fixture
async def home() -> AsyncIterator[EchonetSite]:
    """An emulated home: PV and a battery on ECHONET Lite, on loopback."""
    async with emulated_home() as site:
        yield site


@pytest.fixture
async def module() -> AsyncIterator[FakeSkModule]:
    """A fake Wi-SUN module (BP35A1) in front of the emulated smart meter."""
    async with fake_module() as fake:
        yield fake


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    """An empty gateway's configuration and state paths under ``tmp_path``."""
    return gateway(tmp_path)
