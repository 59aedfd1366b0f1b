"""The page across a restart, and a login throttle per device: real app, real files.

A "restart" closes the ledger and the outbox and builds the service and the app again over the
same directories, as the daemon does after an update or a power cut; the browser keeps its
cookie. Clients with different peer addresses are different devices on the LAN.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agent.paths import PENDING_REQUESTS_FILE, WEB_SESSIONS_FILE
from agent.web.app import create_app
from agent.web.i18n import translator
from agent.web.pending import PendingRequest
from agent.web.security import PairingHash, hash_pairing_code
from agent.web.throttle import THROTTLE_FILE
from policy.errors import ConsentError
from tests.integration.web.test_web_security import (
    CODE,
    ORIGIN,
    Client,
    Rig,
    build,
    csrf_of,
    grant_of,
    log_in,
)

JA = translator("ja")


class Home:
    """A household's gateway that can be restarted over the same state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.state_dir.mkdir()
        self.rig = build(root, state_dir=self.state_dir)
        self.app = create_app(self.rig.service, self.rig.settings)

    def restart(self, *, after: timedelta = timedelta(0), pairing: str | None = None,
                **settings: Any) -> Rig:
        """Close everything and build it again ``after`` later, with ``settings`` changed and
        optionally a new pairing hash (as ``provision --new-pairing-code`` writes it)."""
        now = self.rig.clock() + after
        self.close()
        self.rig = build(self.root, state_dir=self.state_dir)
        self.rig.clock.now = now
        if pairing is not None:
            settings["pairing"] = PairingHash.parse(pairing)
        self.rig.settings = dataclasses.replace(self.rig.settings, **settings)
        self.app = create_app(self.rig.service, self.rig.settings)
        return self.rig

    def client(self, address: str = "192.168.1.10", cookie: str | None = None) -> Client:
        """A browser on the device at ``address`` (with ``cookie`` if it kept one)."""
        transport = httpx2.ASGITransport(app=self.app, client=(address, 50000))
        browser = httpx2.AsyncClient(transport=transport, base_url=ORIGIN,
                                     follow_redirects=False)
        if cookie is not None:
            browser.cookies.set("hems_session", cookie)
        return browser

    def close(self) -> None:
        self.rig.outbox.close()
        self.rig.ledger.close()

    def stored(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            (self.state_dir / WEB_SESSIONS_FILE).read_text(encoding="ascii"))
        return data


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    built = Home(tmp_path)
    yield built
    built.close()


@pytest.fixture
async def phone(home: Home) -> AsyncIterator[Client]:
    async with home.client() as c:
        yield c


async def logged_in_cookie(home: Home, address: str = "192.168.1.10") -> str:
    async with home.client(address) as browser:
        await log_in(browser)
        cookie: str = browser.cookies["hems_session"]
    return cookie


# -- sessions across a restart ----------------------------------------------------------------

async def test_a_session_and_its_csrf_token_survive_a_restart(home: Home) -> None:
    async with home.client() as before:
        token = await log_in(before)
        cookie = before.cookies["hems_session"]
    home.restart(after=timedelta(minutes=5))
    async with home.client(cookie=cookie) as after:
        page = await after.get("/")
        assert page.status_code == 200
        assert csrf_of(page.text) == token  # a form loaded before the restart still posts
        reply = await after.post("/grant", data={"purpose": "improvement", "tier": "off",
                                                 "recipient": "company", "csrf": token},
                                 headers={"origin": ORIGIN})
    assert reply.status_code == 303
    assert grant_of(home.rig, "improvement", "company") == "off"


async def test_the_state_file_holds_only_hashes_and_is_private(home: Home) -> None:
    async with home.client() as browser:
        token = await log_in(browser)
        cookie = browser.cookies["hems_session"]
    path = home.state_dir / WEB_SESSIONS_FILE
    text = path.read_text(encoding="ascii")
    assert cookie not in text and token not in text
    [row] = home.stored()["sessions"]  # type: ignore[misc]
    assert row["id"] == hashlib.sha256(cookie.encode()).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Whoever copies the file cannot turn what it holds into a cookie.
    async with home.client(cookie=row["id"][:32]) as thief:
        assert (await thief.get("/")).status_code == 303


@pytest.mark.parametrize("busy_steps", [0, 24])
async def test_an_expired_session_does_not_survive_a_restart(home: Home,
                                                             busy_steps: int) -> None:
    """Idle for 31 minutes across the restart; or kept busy until its 12 hours end while
    the daemon is down."""
    cookie = await logged_in_cookie(home)
    async with home.client(cookie=cookie) as busy:
        for _ in range(busy_steps):  # 24 x 29 min = 11 h 36 min, never 30 min idle
            home.rig.clock.advance(timedelta(minutes=29))
            assert (await busy.get("/")).status_code == 200
    home.restart(after=timedelta(minutes=31 if busy_steps == 0 else 25))
    async with home.client(cookie=cookie) as after:
        assert (await after.get("/")).status_code == 303
    assert home.stored()["sessions"] == []


async def test_a_new_pairing_code_logs_every_device_out(home: Home) -> None:
    cookies = [await logged_in_cookie(home, f"192.168.1.{n}") for n in (10, 11)]
    home.restart(pairing=hash_pairing_code("1357924680", log2_n=10))
    for cookie in cookies:
        async with home.client(cookie=cookie) as browser:
            assert (await browser.get("/")).status_code == 303
    assert home.stored()["sessions"] == []
    async with home.client() as browser:
        await log_in(browser, "1357924680")


async def test_log_out_everywhere_ends_every_session_also_after_a_restart(home: Home) -> None:
    other = await logged_in_cookie(home, "192.168.1.11")
    async with home.client() as mine:
        token = await log_in(mine)
        assert 'action="/logout-everywhere"' in (await mine.get("/rights")).text
        reply = await mine.post("/logout-everywhere", data={"csrf": token},
                                headers={"origin": ORIGIN})
        assert (reply.status_code, reply.headers["location"]) == (303, "/login")
        assert (await mine.get("/")).status_code == 303
    async with home.client(cookie=other) as theirs:
        assert (await theirs.get("/")).status_code == 303
    home.restart()
    async with home.client(cookie=other) as theirs:
        assert (await theirs.get("/")).status_code == 303


async def test_log_out_everywhere_needs_the_csrf_token(home: Home, phone: Client) -> None:
    await log_in(phone)
    reply = await phone.post("/logout-everywhere", data={"csrf": "wrong"},
                             headers={"origin": ORIGIN})
    assert reply.status_code == 403
    assert (await phone.get("/")).status_code == 200


async def test_the_oldest_session_is_logged_out_beyond_the_cap(home: Home) -> None:
    home.restart(max_sessions=2)
    cookies = []
    for n in range(3):
        cookies.append(await logged_in_cookie(home, f"192.168.1.{10 + n}"))
        home.rig.clock.advance(timedelta(minutes=1))
    home.restart(max_sessions=2)
    statuses = []
    for cookie in cookies:
        async with home.client(cookie=cookie) as browser:
            statuses.append((await browser.get("/")).status_code)
    assert statuses == [303, 200, 200]


async def test_login_form_visits_cannot_push_the_household_out(home: Home) -> None:
    cookie = await logged_in_cookie(home)
    async with home.client("192.168.1.66") as stranger:
        for _ in range(100):  # each visit without a cookie starts an anonymous session
            stranger.cookies.clear()
            assert (await stranger.get("/login")).status_code == 200
    async with home.client(cookie=cookie) as browser:
        assert (await browser.get("/")).status_code == 200
    assert len(home.stored()["sessions"]) == 1  # type: ignore[arg-type]


async def test_a_damaged_session_file_is_set_aside_and_login_works(
        home: Home, caplog: pytest.LogCaptureFixture) -> None:
    path = home.state_dir / WEB_SESSIONS_FILE
    path.write_text('{"v": 1, "pairing": "x", "sessions": [{"id": 7}]}', encoding="ascii")
    with caplog.at_level(logging.WARNING):
        home.restart()
        async with home.client() as browser:
            await log_in(browser)
    aside = home.state_dir / (WEB_SESSIONS_FILE + ".damaged")
    assert aside.read_text(encoding="ascii").startswith('{"v": 1')
    assert any(WEB_SESSIONS_FILE in r.getMessage() and "damaged" in r.getMessage()
               for r in caplog.records)
    assert len(home.stored()["sessions"]) == 1  # type: ignore[arg-type]


# -- the login throttle per device ----------------------------------------------------------------

async def attempt(browser: Client, code: str) -> httpx2.Response:
    token = csrf_of((await browser.get("/login")).text)
    return await browser.post("/login", data={"csrf": token, "code": code},
                              headers={"origin": ORIGIN})


async def test_a_device_guessing_codes_does_not_lock_out_the_householders_phone(
        home: Home) -> None:
    async with home.client("192.168.1.66") as guesser, home.client("192.168.1.10") as phone:
        for n in range(10):
            home.rig.clock.advance(timedelta(seconds=61))
            reply = await attempt(guesser, f"{n:010d}")
            assert reply.status_code == 401
        assert JA("login.locked", minutes=15) in reply.text  # said on the 10th wrong code
        refused = await attempt(guesser, CODE)  # locked: even the right code
        assert refused.status_code == 429 and refused.headers["retry-after"] == "900"
        assert JA("login.locked", minutes=15) in refused.text
        assert (await attempt(phone, CODE)).status_code == 303
        assert (await phone.get("/")).status_code == 200


async def test_wrong_codes_from_thirty_devices_lock_nobody_else_out(home: Home) -> None:
    household = await logged_in_cookie(home)
    async with contextlib.AsyncExitStack() as stack:
        guessers = [await stack.enter_async_context(home.client(f"127.0.0.{10 + n}"))
                    for n in range(30)]
        for n, guesser in enumerate(guessers):  # 30 wrong codes at once, 30 addresses
            assert (await attempt(guesser, f"{n:010d}")).status_code == 401
        again = await attempt(guessers[0], CODE)  # each address has its own back-off
        assert again.status_code == 429 and again.headers["retry-after"] == "1"
    async with home.client("192.168.1.20") as phone:
        assert (await attempt(phone, CODE)).status_code == 303
        assert (await phone.get("/")).status_code == 200
    async with home.client(cookie=household) as browser:
        assert (await browser.get("/")).status_code == 200


async def test_anonymous_login_form_visits_do_not_expire_the_households_form(
        home: Home) -> None:
    async with home.client("192.168.1.10") as phone, \
            home.client("192.168.1.66") as stranger:
        form = await phone.get("/login")  # the household opens the form...
        for _ in range(200):  # ...while another device asks for 200 forms of its own
            stranger.cookies.clear()
            assert (await stranger.get("/login")).status_code == 200
        reply = await phone.post("/login", data={"csrf": csrf_of(form.text), "code": CODE},
                                 headers={"origin": ORIGIN})
        assert reply.status_code == 303
    assert not (home.state_dir / "web-sessions.json").exists() or \
        len(home.stored()["sessions"]) == 1  # type: ignore[arg-type]


async def test_a_refused_login_form_is_logged_and_replaced_by_a_fresh_one(
        home: Home, caplog: pytest.LogCaptureFixture) -> None:
    async with home.client() as phone:
        form = await phone.get("/login")
        token = csrf_of(form.text)
        home.rig.clock.advance(timedelta(hours=2, seconds=1))  # the form was left open
        with caplog.at_level(logging.INFO):
            expired = await phone.post("/login", data={"csrf": token, "code": CODE},
                                       headers={"origin": ORIGIN})
        assert expired.status_code == 403 and JA("error.csrf") in expired.text
        assert any("login form refused: its token is expired" in r.getMessage()
                   for r in caplog.records)
        fresh = csrf_of(expired.text)  # the answer is a new form, ready to use
        assert fresh != token
        for forged in (token, fresh[:-2] + ("AA" if not fresh.endswith("AA") else "BB"), ""):
            phone.cookies.clear()  # each refusal sets a fresh cookie: send the forged one
            phone.cookies.set("hems_login", forged)
            reply = await phone.post("/login", data={"csrf": forged, "code": CODE},
                                     headers={"origin": ORIGIN})
            assert reply.status_code == 403
        phone.cookies.clear()
        phone.cookies.set("hems_login", fresh)
        reply = await phone.post("/login", data={"csrf": fresh, "code": CODE},
                                 headers={"origin": ORIGIN})
        assert reply.status_code == 303


async def test_a_lock_out_survives_a_restart_and_names_no_address(home: Home) -> None:
    async with home.client("192.168.1.66") as guesser:
        for n in range(10):
            home.rig.clock.advance(timedelta(seconds=61))
            assert (await attempt(guesser, f"{n:010d}")).status_code == 401
    path = home.state_dir / THROTTLE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"192.168" not in path.read_bytes()
    home.restart(after=timedelta(minutes=5))
    async with home.client("192.168.1.66") as guesser:
        refused = await attempt(guesser, CODE)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "600"
    async with home.client("192.168.1.10") as phone:
        assert (await attempt(phone, CODE)).status_code == 303
    home.restart(after=timedelta(minutes=10))
    async with home.client("192.168.1.66") as guesser:
        assert (await attempt(guesser, CODE)).status_code == 303


async def test_a_right_code_clears_only_its_own_device(home: Home) -> None:
    async with home.client("192.168.1.66") as guesser, home.client("192.168.1.10") as phone:
        assert (await attempt(guesser, "0000000000")).status_code == 401
        assert (await attempt(phone, "0000000000")).status_code == 401
        home.rig.clock.advance(timedelta(seconds=1))
        assert (await attempt(phone, CODE)).status_code == 303
        assert (await attempt(guesser, "1111111111")).status_code == 401
        again = await attempt(guesser, CODE)  # second wrong code: 2 s back-off still runs
        assert again.status_code == 429
        assert JA("login.wait", seconds=2) in again.text


# -- pending support-centre requests across a restart ---------------------------------------------

def ask(rig: Rig, reference: str, lifetime: timedelta = timedelta(hours=24)) -> PendingRequest:
    return rig.service.add_pending_request(purpose="support", recipient="support_centre",
                                           tier="raw", hours=24, reference=reference,
                                           lifetime=lifetime)


async def test_a_pending_request_survives_a_restart_and_can_be_accepted(home: Home) -> None:
    request = ask(home.rig, "SC-2001")
    path = home.state_dir / PENDING_REQUESTS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rig = home.restart(after=timedelta(hours=2))
    assert rig.service.pending_requests() == [request]
    async with home.client() as phone:
        token = await log_in(phone)
        assert "SC-2001" in (await phone.get("/")).text
        reply = await phone.post("/request", data={"csrf": token, "action": "accept",
                                                   "request_id": request.request_id},
                                 headers={"origin": ORIGIN})
    assert reply.status_code == 303
    assert grant_of(rig, "support", "support_centre") == "raw"
    assert rig.ledger.history()[-1].data["reference"] == "SC-2001"
    assert home.restart().service.pending_requests() == []  # answered: gone for good


async def test_a_pending_request_expires_also_while_the_daemon_is_down(home: Home) -> None:
    short = ask(home.rig, "SC-2002", lifetime=timedelta(hours=1))
    long = ask(home.rig, "SC-2003", lifetime=timedelta(days=2))
    rig = home.restart(after=timedelta(hours=3))
    assert rig.service.pending_requests() == [long]
    with pytest.raises(ConsentError, match="expired"):
        rig.service.accept_request(short.request_id)
    stored = json.loads((home.state_dir / PENDING_REQUESTS_FILE).read_text(encoding="ascii"))
    assert [r["reference"] for r in stored["requests"]] == ["SC-2003"]
    rig.clock.advance(timedelta(days=2))
    assert rig.service.pending_requests() == []
    assert grant_of(rig, "support", "support_centre") == "off"


async def test_a_declined_request_stays_declined_after_a_restart(home: Home) -> None:
    request = ask(home.rig, "SC-2004")
    home.rig.service.decline_request(request.request_id)
    assert home.restart().service.pending_requests() == []


async def test_a_damaged_pending_file_is_set_aside(home: Home,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ask(home.rig, "SC-2005")
    path = home.state_dir / PENDING_REQUESTS_FILE
    path.write_bytes(path.read_bytes().replace(b'"hours":24', b'"hours":"24"'))
    with caplog.at_level(logging.WARNING):
        rig = home.restart()
    assert rig.service.pending_requests() == []
    assert b"SC-2005" in (home.state_dir / (PENDING_REQUESTS_FILE + ".damaged")).read_bytes()
    assert any("hours" in r.getMessage() for r in caplog.records)
