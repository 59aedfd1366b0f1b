"""``hems-agent demo`` in full, as a newcomer runs it: simulators, embedded broker, agent, page,
receiver, all from one command with no configuration.

The embedded broker is amqtt, the ``demo`` extra: without it the tests that run the demo are
skipped naming it (and fail under CI). Every demo process is killed if still running, reaped
and its pipes closed by the ``demo`` fixture, whatever the test's outcome.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from tests.conftest import require_module

HEMS_AGENT = Path(sys.executable).parent / "hems-agent"
PAGE = re.compile(r"household page\s+(http://127\.0\.0\.1:\d+/)\s+pairing code (\d{10})")
FILES = re.compile(r"demo files\s+(\S+)")
SERVICE = re.compile(r"^\s+service\s+30min\s+(\d+)\s+\S", re.MULTILINE)


Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def demo() -> Iterator[Start]:
    """Starts ``hems-agent demo`` with the given arguments; ends and reaps what it started."""
    require_module("amqtt", "demo")
    assert HEMS_AGENT.exists(), "the package is not installed in this environment"
    started: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> subprocess.Popen[str]:
        # every warning shown (unclosed sockets, coroutines never awaited): the tests expect none
        proc = subprocess.Popen([str(HEMS_AGENT), "demo", "--refresh", "1", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "default"})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _read_until(proc: subprocess.Popen[str], pattern: re.Pattern[str]) -> tuple[str, re.Match[str]]:
    """Lines of stdout until ``pattern`` matches one (the demo prints a screen every second)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        found = pattern.search(line)
        if found:
            return "".join(seen), found
    err = "" if proc.stderr is None else proc.stderr.read()
    raise AssertionError(f"the demo ended before printing {pattern.pattern!r}:\n"
                         f"{''.join(seen)}\nstderr:\n{err}")


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Its remaining output once it exits (the ``demo`` fixture kills it after a timeout)."""
    return proc.communicate(timeout=timeout)


def _session_outlives_simulated_time(url: str, code: str) -> None:
    """Log in; three real seconds later (three simulated hours) the session still holds."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(url + "login", timeout=10) as response:
        token = re.search(r'name="csrf" value="([^"]+)"', response.read().decode())
    assert token is not None
    form = urllib.parse.urlencode({"csrf": token.group(1), "code": code}).encode()
    login = urllib.request.Request(url + "login", data=form, headers={"Origin": url.rstrip("/")})
    with opener.open(login, timeout=30) as response:
        assert response.status == 200
    time.sleep(3)
    with opener.open(url, timeout=10) as response:
        assert response.url == url, "logged out after three real seconds"
        assert 'name="purpose"' in response.read().decode()


def test_demo_serves_the_page_and_the_cloud_receives_service_data(demo: Start) -> None:
    proc = demo("--duration", "10")
    head, page = _read_until(proc, PAGE)
    url, code = page.group(1), page.group(2)
    with urllib.request.urlopen(url + "login", timeout=10) as response:
        assert response.status == 200
        assert "<form" in response.read().decode()
    _session_outlives_simulated_time(url, code)
    rest, err = _finish(proc, timeout=60)
    out = head + rest
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Warning" not in err, err
    counts = [int(n) for n in SERVICE.findall(out)]
    assert counts and counts[-1] > 0, out[-3000:]
    assert out.rstrip().endswith("demo stopped")
    assert code in out
    files = FILES.search(out)
    assert files is not None
    assert not Path(files.group(1)).exists(), "the temporary demo directory was left behind"


def test_ctrl_c_stops_everything_and_a_kept_directory_holds_what_the_cloud_got(
        tmp_path: Path, demo: Start) -> None:
    state = tmp_path / "demo"
    proc = demo("--state-dir", str(state))
    _read_until(proc, re.compile(r"^\s+service\s+30min\s+[1-9]\d*\s"))
    proc.send_signal(signal.SIGINT)
    rest, err = _finish(proc, timeout=40)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Warning" not in err, err
    assert rest.rstrip().endswith("demo stopped")
    received = [json.loads(line) for line in
                (state / "cloud" / "received.jsonl").read_text("utf-8").splitlines()]
    data = [r for r in received if r["header"]["kind"] == "data"]
    assert data and {r["header"]["purpose"] for r in data} == {"service"}
    assert {r["header"]["tier"] for r in data} == {"30min"}
    stopped = json.loads((state / "demo-clock.json").read_text("utf-8"))["stopped"]
    # a kept directory's simulated clock continues from here, after every released window
    assert datetime.fromisoformat(stopped).timestamp() >= data[-1]["header"]["window_end"]
    assert (state / "agent.toml").exists() and (state / "device.key").stat().st_mode & 0o077 == 0


def test_without_amqtt_the_demo_says_how_to_get_a_broker(tmp_path: Path) -> None:
    fake = tmp_path / "amqtt"  # shadows the installed package, as if it were missing
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named amqtt')\n")
    done = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--duration", "1"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 1
    assert "needs amqtt" in done.stderr and "--broker" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_real_broker_needs_its_ca_and_logins() -> None:
    done = subprocess.run([str(HEMS_AGENT), "demo", "--broker", "mqtts://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "--broker needs --broker-ca, --broker-login and --receiver-login" in done.stderr
