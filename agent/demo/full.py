"""``hems-agent demo``: the whole product on one machine, with no hardware and no configuration.

In one event loop: a simulated inverter, battery and meter (pymodbus servers on loopback), an
MQTT broker (amqtt, embedded; or ``--broker URL``), the agent itself (:class:`Daemon`, with
generated keys and the factory consent state), the household page it serves, and the reference
receiver playing the cloud. The screen shows the page's address and pairing code and, refreshed
every few seconds, what the cloud has received per purpose.

Simulated time runs ``--speed`` times faster (default 1440: a day a minute) from just before
local midnight, so 30-minute windows arrive within seconds and the first whole day about a
minute later. ``--duration`` stops by itself; Ctrl-C or SIGTERM stops everything, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from agent.demo.setup import RECEIVER_USER, SITE_ID, BrokerEndpoint, BrokerLogin, DemoFiles
from agent.demo.view import JST, CloudView, Screen, ViewReceiver
from agent.host.supervisor import cancel_and_wait
from agent.uplink.session import BrokerConfig

CLOCK_FILE = "demo-clock.json"
POLL_INTERVAL = 0.5  # real seconds: at x1440 a reading every 12 simulated minutes
_STOP_GRACE = 5.0  # real seconds the demo's receiver has to stop when the demo ends


class DemoError(Exception):
    """A problem the person running the demo can fix; the message says how."""


def default_start(now: datetime | None = None) -> datetime:
    """Ten simulated minutes before the coming local midnight (Asia/Tokyo)."""
    local = (now or datetime.now(UTC)).astimezone(JST)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return midnight - timedelta(minutes=10)


def resolve_start(args: argparse.Namespace, directory: Path) -> datetime:
    """``--start``, else where a kept directory's clock stopped, else :func:`default_start`.

    A kept directory's consent ledger must not see time go backwards, so its simulated clock
    continues from the last run.
    """
    if args.start is not None:
        return args.start  # type: ignore[no-any-return]
    saved = directory / CLOCK_FILE
    if saved.exists():
        try:
            return datetime.fromisoformat(json.loads(saved.read_text("utf-8"))["stopped"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DemoError(f"{saved}: not a demo clock file ({exc}); delete it") from exc
    return default_start()


async def run(args: argparse.Namespace, out: TextIO) -> int:
    """The full demo; returns the exit status."""
    kept = args.state_dir is not None
    directory = args.state_dir or Path(tempfile.mkdtemp(prefix="hems-demo-"))
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # keys and secrets inside
    except OSError as exc:
        print(f"hems-agent demo: cannot create {directory}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        return await _run(args, out, directory.resolve())
    except DemoError as exc:
        print(f"hems-agent demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if not kept:
            shutil.rmtree(directory, ignore_errors=True)


async def _run(args: argparse.Namespace, out: TextIO, directory: Path) -> int:
    from drivers.sim.curves import HomeConfig
    from drivers.sim.server import run_site

    start = resolve_start(args, directory)
    stopping = _EarlySignals()
    async with contextlib.AsyncExitStack() as stack:
        endpoint, label = await stack.enter_async_context(_broker(args, directory / "broker"))
        site = await stack.enter_async_context(
            run_site(config=HomeConfig(seed=args.seed), start=start, speed=args.speed))
        files = _write_files(args, directory, endpoint, site)
        if args.echonet:
            await _add_echonet(stack, files, site)
        view = CloudView(_screen(args, files, endpoint, label, kept=args.state_dir is not None),
                         files.cloud_dir, out=out, refresh=args.refresh)
        stack.callback(view.close)
        await _start_receiver(stack, view, files, endpoint)
        if stopping.requested:  # Ctrl-C while starting up
            return 0
        stopping.release()
        code = await _run_daemon(args, files, view, start)
        stopping.install()  # Ctrl-C while the broker and simulators stop is not an error
        if args.state_dir is not None:
            (directory / CLOCK_FILE).write_text(
                json.dumps({"stopped": view.now().isoformat()}), encoding="utf-8")
        view.draw(final=True)
    stopping.release()
    print("demo stopped", file=out, flush=True)
    return code


class _EarlySignals:
    """SIGINT/SIGTERM before the daemon runs (it installs its own) and after it returned."""

    def __init__(self) -> None:
        self.requested = False
        self.install()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._set)

    def _set(self) -> None:
        self.requested = True

    def release(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def _broker(args: argparse.Namespace,
                  directory: Path) -> AsyncIterator[tuple[BrokerEndpoint, str]]:
    if args.broker is not None:
        yield external_broker(args), f"{args.broker} (MQTT {args.broker_protocol} over TLS)"
        return
    try:
        from agent.demo.broker import DemoBrokerError, embedded_broker
    except ImportError as exc:
        raise DemoError(
            f"the embedded MQTT broker needs amqtt, which cannot be imported ({exc}): run "
            "`make demo`, or `pip install 'hems-agent[demo]'`, or give --broker "
            "mqtts://HOST:PORT with --broker-ca") from exc
    try:
        async with embedded_broker(directory, site_id=SITE_ID,
                                   receiver_user=RECEIVER_USER) as endpoint:
            yield endpoint, f"{endpoint.url} (embedded amqtt, MQTT 3.1.1 over TLS)"
    except DemoBrokerError as exc:
        raise DemoError(str(exc)) from exc


def external_broker(args: argparse.Namespace) -> BrokerEndpoint:
    """The endpoint for ``--broker``: its CA and the two logins must be given."""
    if args.broker_ca is None or args.broker_login is None or args.receiver_login is None:
        raise DemoError("--broker needs --broker-ca, --broker-login and --receiver-login")
    return BrokerEndpoint(url=args.broker, ca_file=args.broker_ca, agent=args.broker_login,
                          receiver=args.receiver_login, protocol=args.broker_protocol)


def parse_login(text: str) -> BrokerLogin:
    """``NAME:PASSWORD_FILE`` for ``--broker-login`` and ``--receiver-login``."""
    name, sep, path = text.partition(":")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME:PASSWORD_FILE, got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"password file {path!r} does not exist")
    return BrokerLogin(username=name, password_file=Path(path))


async def _add_echonet(stack: contextlib.AsyncExitStack, files: DemoFiles, site: Any) -> None:
    """ECHONET Lite PV, battery and smart meter on loopback, following the same home."""
    from agent.demo.echonet import start_echonet_site

    echonet, snippet = await start_echonet_site(home=site.home)
    stack.push_async_callback(echonet.aclose)
    with files.config.open("a", encoding="utf-8") as config:
        config.write("\n" + snippet)


def _write_files(args: argparse.Namespace, directory: Path, endpoint: BrokerEndpoint,
                 site: object) -> DemoFiles:
    from agent.demo.setup import free_port, write_site

    devices: list[dict[str, object]] = [
        {"name": name, "host": "127.0.0.1", "port": getattr(site, name).port, "unit": 1,
         "poll_interval": POLL_INTERVAL, "timeout": 1.0}
        for name in ("inverter", "battery", "meter")]
    return write_site(directory, broker=endpoint, devices=devices,
                      page_port=args.page_port or free_port())


def _screen(args: argparse.Namespace, files: DemoFiles, endpoint: BrokerEndpoint, label: str,
            *, kept: bool) -> Screen:
    import tomllib

    listen = tomllib.loads(files.config.read_text("utf-8"))["web"]["listen"]
    where = str(files.directory) + ("" if kept else "  (deleted at exit; --state-dir keeps it)")
    return Screen(page_url=f"http://{listen}/", pairing_code=files.pairing_code, broker=label,
                  files=where, speed=args.speed)


def receiver_broker_config(endpoint: BrokerEndpoint) -> BrokerConfig:
    from urllib.parse import urlsplit

    url = urlsplit(endpoint.url)
    return BrokerConfig(host=url.hostname or "127.0.0.1", port=url.port or 8883,
                        ca_file=endpoint.ca_file, client_id=f"hems-demo-receiver-{SITE_ID}",
                        username=endpoint.receiver.username,
                        password=endpoint.receiver.password(),
                        protocol="5" if endpoint.protocol == "5" else "3.1.1")


async def _start_receiver(stack: contextlib.AsyncExitStack, view: CloudView, files: DemoFiles,
                          endpoint: BrokerEndpoint) -> None:
    """Subscribe once (a persistent session keeps it), then run the receiver until ``stack``
    closes."""
    from agent.cloud.receiver import CatalogueRules, ReplayStore, load_device_registry
    from agent.errors import UplinkError
    from agent.uplink.session import connect, tls_context

    replay = ReplayStore(files.cloud_dir / "seen.sqlite")
    stack.callback(replay.close)
    receiver = ViewReceiver(view, device_keys=load_device_registry(files.device_registry),
                            recipient_keys={k.key_id: k for k in files.recipient_keys.values()},
                            rules=CatalogueRules(), replay=replay)
    config = receiver_broker_config(endpoint)
    try:
        # The agent's first messages (consent notices) go out at once: the cloud's session must
        # hold its subscription before then, or the broker has nobody to keep them for.
        async with connect(config, tls_context(config)) as session:
            await session.subscribe("hems/v1/+/+/+", qos=1)
    except UplinkError as exc:
        raise DemoError(f"the receiver cannot reach the broker: {exc}") from exc
    task = asyncio.create_task(receiver.run(config, None), name="demo-receiver")
    stack.push_async_callback(cancel_and_wait, [task], grace=_STOP_GRACE)


async def _run_daemon(args: argparse.Namespace, files: DemoFiles, view: CloudView,
                      start: datetime) -> int:
    from agent.config.model import load_config
    from agent.daemon.cli import first_leaf
    from agent.daemon.daemon import Daemon, DaemonOptions
    from agent.daemon.state import State
    from agent.errors import AgentError

    try:
        config = load_config(files.config)
    except AgentError as exc:
        raise DemoError(f"the generated configuration is not valid: {exc}") from exc
    host, _, port = config.web.listen.rpartition(":")

    async def show(state: State, stop: asyncio.Event) -> None:
        await wait_listening(host, int(port), stop)  # print the page's address once it answers
        await view.show(state, stop)

    options = DaemonOptions(speed=args.speed, start=start, tick_interval=1.0,
                            extra_tasks=[show])
    daemon = Daemon(config, options)
    clock = daemon.clock
    view.now = lambda: clock.stamp(clock.monotonic()) or datetime.now(UTC)
    loop = asyncio.get_running_loop()
    timer = loop.call_later(args.duration, daemon.stop.set) if args.duration else None
    try:
        return await daemon.run()
    except Exception as exc:  # the daemon's TaskGroup: report the first real cause
        raise DemoError(f"the agent stopped: {first_leaf(exc)}") from exc
    finally:
        if timer is not None:
            timer.cancel()


async def wait_listening(host: str, port: int, stop: asyncio.Event, limit: float = 30.0) -> None:
    """Return once ``host:port`` accepts a connection (or ``stop`` is set, or ``limit`` passed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not stop.is_set() and loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
