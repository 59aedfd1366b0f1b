"""Security of the household page over HTTP: sessions, CSRF, Host/Origin, throttle, headers.

The builders here (``Clock``, ``release``, ``build``) are shared with the fuzz and browser
tests. Every part is real: policy's TinyDB ledger and JSON-lines release log, the sqlite
outbox; only the clock is driven by the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import re
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agent.config.model import Web
from agent.pipeline import purge_withdrawn
from agent.store.outbox import Outbox
from agent.web.app import create_app
from agent.web.errors import WebError
from agent.web.household import HouseholdService
from agent.web.security import PairingHash, hash_pairing_code
from agent.web.server import serve
from agent.web.settings import WebSettings
from policy.catalogue import load_catalogue, parse_catalogue
from policy.ledger import Ledger
from policy.records import ConsentChange
from policy.release import Record, Release
from policy.rights import ReleaseLog
from policy.tiers import Tier
from tests.conftest import free_port

CODE = "24681357"
HOST = "gateway.local"
PORT = 8080
ORIGIN = f"http://{HOST}:{PORT}"
START = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


class Clock:
    """A settable UTC clock for the service (drives expiry, sessions and the throttle)."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def release(purpose: str, recipient: str, tier: str, start: datetime, end: datetime,
            points: int = 3) -> Release:
    """A release as the pipeline hands it on (values do not matter to the page)."""
    records = tuple(Record(device="inverter-1", point=f"pv.power_{i}", kind="power", unit="W",
                           values={"mean": 1.0}, coverage=1.0, good=1, bad=0)
                    for i in range(points))
    return Release(purpose=purpose, recipient=recipient, tier=Tier(tier), start=start, end=end,
                   records=records, missing=(), consent_record_id="r", consent_record_hash="h",
                   catalogue_version="2026.1")


@dataclass
class Rig:
    """A household service on real parts, with what its callbacks received."""

    service: HouseholdService
    ledger: Ledger
    release_log: ReleaseLog
    outbox: Outbox
    clock: Clock
    settings: WebSettings
    changes: list[ConsentChange] = field(default_factory=list)
    deletions: list[Mapping[str, Any]] = field(default_factory=list)

    def apply_consent(self, changes: Sequence[ConsentChange], *,
                      reason: str | None = None) -> int:
        """The pipeline's part without its uplink: purge once per change, note the change."""
        self.changes.extend(changes)
        return sum(purge_withdrawn(self.outbox.purge, c, reason=reason) for c in changes)


Client = httpx2.AsyncClient
_PAIRING = hash_pairing_code(CODE, log2_n=10)  # cheap parameters keep the tests fast


def build(tmp_path: Path, *, hosts: frozenset[str] = frozenset({HOST}), port: int = PORT,
          releases: Sequence[tuple[Release, int, datetime]] = (),
          state_dir: Path | None = None) -> Rig:
    """A rig with the factory catalogue, a fresh ledger, a release log holding ``releases``
    (release, bytes, when) and an empty outbox; ``state_dir`` keeps sessions and pending
    requests across rebuilds (None: in memory)."""
    clock = Clock()
    catalogue = load_catalogue()
    ledger = Ledger.open(tmp_path / "ledger.json", catalogue, "site-test", clock())
    release_log = ReleaseLog(tmp_path / "releases.jsonl", catalogue, "site-test")
    for rel, size, when in releases:
        release_log.append(rel, size=size, now=when)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    settings = WebSettings(pairing=PairingHash.parse(_PAIRING), allowed_hosts=hosts, port=port)
    rig = Rig(service=None, ledger=ledger, release_log=release_log,  # type: ignore[arg-type]
              outbox=outbox, clock=clock, settings=settings)
    rig.service = HouseholdService(
        ledger=ledger, release_log=release_log, outbox=outbox,
        apply_consent=rig.apply_consent, on_deletion=rig.deletions.append,
        recipient_names={"installer": "山田電設株式会社"}, clock=clock, state_dir=state_dir)
    return rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    built = build(tmp_path)
    yield built
    built.outbox.close()
    built.ledger.close()


def http_client(app: Any, base_url: str = ORIGIN) -> httpx2.AsyncClient:
    """An HTTP client that calls the app in this event loop (the outbox's sqlite connection
    belongs to this thread, as it does in the daemon)."""
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=base_url,
                              follow_redirects=False)


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[Client]:
    async with http_client(create_app(rig.service, rig.settings)) as c:
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def log_in(client: Client, code: str = CODE) -> str:
    """Log in and return the CSRF token of the new session."""
    token = csrf_of((await client.get("/login")).text)
    reply = await client.post("/login", data={"csrf": token, "code": code},
                        headers={"origin": ORIGIN})
    assert reply.status_code == 303, reply.text
    return csrf_of((await client.get("/")).text)


def grant_of(rig: Rig, purpose: str, recipient: str) -> str:
    grant = rig.ledger.grants(rig.clock()).get((purpose, recipient))
    return "off" if grant is None else grant.tier.value


# -- sessions --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/released", "/history", "/rights", "/export.json"])
async def test_pages_without_a_session_redirect_to_login(client: Client, path: str) -> None:
    reply = await client.get(path)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/login"


async def test_api_without_a_session_is_401(client: Client) -> None:
    assert (await client.get("/api/state")).status_code == 401
    reply = await client.post("/api/grant", json={}, headers={"origin": ORIGIN})
    assert reply.status_code == 401


async def test_post_without_a_session_changes_nothing(client: Client, rig: Rig) -> None:
    reply = await client.post("/grant", data={"purpose": "improvement", "recipient": "company",
                                        "tier": "off", "csrf": "x"}, headers={"origin": ORIGIN})
    assert reply.status_code == 401
    assert grant_of(rig, "improvement", "company") == "1d"


@pytest.mark.parametrize("forge", [lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),
                                   lambda c: c + "x", lambda c: c[:-1], lambda c: c + ".x",
                                   lambda c: "%" * len(c)])
async def test_forged_cookie_is_not_a_session(client: Client, forge: Any) -> None:
    await log_in(client)
    cookie = client.cookies["hems_session"]
    client.cookies.clear()
    client.cookies.set("hems_session", forge(cookie))
    assert (await client.get("/")).status_code == 303
    client.cookies.clear()
    client.cookies.set("hems_session", cookie)
    assert (await client.get("/")).status_code == 200


async def test_session_cookie_flags(client: Client) -> None:
    reply = await client.get("/login")
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie


async def test_tls_cookie_is_secure_and_host_prefixed(tmp_path: Path) -> None:
    built = build(tmp_path)
    settings = WebSettings(pairing=built.settings.pairing, allowed_hosts=frozenset({HOST}),
                           port=8443, tls=True)
    origin = f"https://{HOST}:8443"
    async with http_client(create_app(built.service, settings), origin) as c:
        form = await c.get("/login")
        done = await c.post("/login", data={"csrf": csrf_of(form.text), "code": CODE},
                            headers={"origin": origin})
    login = form.headers["set-cookie"].lower()
    assert login.startswith("__host-hems_login=") and "secure" in login
    session = done.headers.get_list("set-cookie")[0].lower()
    assert session.startswith("__host-hems_session=") and "secure" in session


async def test_session_expires_when_idle(client: Client, rig: Rig) -> None:
    await log_in(client)
    rig.clock.advance(timedelta(minutes=31))
    assert (await client.get("/")).status_code == 303


async def test_logout_ends_the_session(client: Client) -> None:
    token = await log_in(client)
    assert (await client.post("/logout", data={"csrf": token},
                       headers={"origin": ORIGIN})).status_code == 303
    assert (await client.get("/")).status_code == 303


# -- CSRF -------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "", "wrong-token"])
async def test_grant_needs_the_sessions_csrf_token(client: Client, rig: Rig,
                                             token: str | None) -> None:
    await log_in(client)
    data = {"purpose": "improvement", "recipient": "company", "tier": "off"}
    if token is not None:
        data["csrf"] = token
    reply = await client.post("/grant", data=data, headers={"origin": ORIGIN})
    assert reply.status_code == 403
    assert grant_of(rig, "improvement", "company") == "1d"


async def test_api_grant_needs_the_csrf_header(client: Client, rig: Rig) -> None:
    token = await log_in(client)
    body = {"purpose": "improvement", "recipient": "company", "tier": None}
    reply = await client.post("/api/grant", json=body, headers={"origin": ORIGIN})
    assert reply.status_code == 403
    reply = await client.post("/api/grant", json=body,
                        headers={"origin": ORIGIN, "x-csrf-token": token})
    assert reply.status_code == 200 and grant_of(rig, "improvement", "company") == "off"


async def test_login_token_of_another_session_is_refused(client: Client, rig: Rig) -> None:
    other = create_app(rig.service, rig.settings)
    async with http_client(other) as stranger:
        foreign = csrf_of((await stranger.get("/login")).text)
    await client.get("/login")
    reply = await client.post("/login", data={"csrf": foreign, "code": CODE},
                        headers={"origin": ORIGIN})
    assert reply.status_code == 403


async def test_a_right_grant_is_recorded_with_the_household_page_as_source(
        client: Client, rig: Rig) -> None:
    token = await log_in(client)
    reply = await client.post("/grant", data={"purpose": "improvement", "recipient": "company",
                                        "tier": "off", "csrf": token},
                        headers={"origin": ORIGIN})
    assert reply.status_code == 303
    last = rig.ledger.history()[-1]
    assert (last.purpose, last.tier, last.source.value) == ("improvement", None,
                                                            "household_page")
    assert rig.changes and rig.changes[-1].record.record_id == last.record_id


# -- Host and Origin ----------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", f"{HOST}:9999", "127.0.0.1:8080", ""])
async def test_foreign_host_is_refused(client: Client, host: str) -> None:
    assert (await client.get("/login", headers={"host": host})).status_code == 400


@pytest.mark.parametrize("origin", [None, "null", "http://evil.example", f"https://{HOST}:{PORT}",
                                    f"http://{HOST}:9999"])
async def test_cross_origin_post_is_refused(client: Client, rig: Rig, origin: str | None) -> None:
    token = await log_in(client)
    headers = {} if origin is None else {"origin": origin}
    reply = await client.post("/grant", data={"purpose": "improvement", "recipient": "company",
                                        "tier": "off", "csrf": token}, headers=headers)
    assert reply.status_code == 403
    assert grant_of(rig, "improvement", "company") == "1d"


# -- login throttle -----------------------------------------------------------------------------

async def _try(client: Client, code: str) -> int:
    token = csrf_of((await client.get("/login")).text)
    return (await client.post("/login", data={"csrf": token, "code": code},
                       headers={"origin": ORIGIN})).status_code


async def test_wrong_codes_back_off_then_lock_out(client: Client, rig: Rig) -> None:
    assert await _try(client, "00000000") == 401
    assert await _try(client, "00000000") == 429  # within the 1 s back-off: not even checked
    for _ in range(9):
        rig.clock.advance(timedelta(seconds=61))
        assert await _try(client, "11111111") == 401
    rig.clock.advance(timedelta(seconds=61))
    assert await _try(client, CODE) == 429  # locked: even the right code is refused
    rig.clock.advance(timedelta(minutes=15))
    assert await _try(client, CODE) == 303


async def test_back_off_grows(client: Client, rig: Rig) -> None:
    assert await _try(client, "0") == 401
    rig.clock.advance(timedelta(seconds=1))
    assert await _try(client, "0") == 401
    rig.clock.advance(timedelta(seconds=1))
    assert await _try(client, CODE) == 429  # second failure: 2 s
    rig.clock.advance(timedelta(seconds=1))
    assert await _try(client, CODE) == 303


# -- headers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/login", "/", "/static/page.css", "/nowhere"])
async def test_security_headers_on_every_answer(client: Client, path: str) -> None:
    await log_in(client)
    headers = (await client.get(path)).headers
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["referrer-policy"] == "same-origin"  # never to another site
    assert headers["x-content-type-options"] == "nosniff"
    assert "camera=()" in headers["permissions-policy"]
    expected_cache = "no-cache" if path.startswith("/static/") else "no-store"
    assert headers["cache-control"] == expected_cache


async def test_pages_have_no_inline_script_or_style(client: Client) -> None:
    await log_in(client)
    for path in ("/", "/released", "/history", "/rights", "/login"):
        html = (await client.get(path)).text
        assert "<script" not in html and "<style" not in html and " style=" not in html


async def test_refusals_carry_the_headers_too(client: Client) -> None:
    reply = await client.get("/login", headers={"host": "evil.example"})
    assert reply.headers["x-content-type-options"] == "nosniff"


# -- the embedded server -----------------------------------------------------------------------

async def _serving(rig: Rig, port: int, **tls: Any) -> tuple[asyncio.Task[None], asyncio.Event]:
    started, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(create_app(rig.service, rig.settings), "127.0.0.1", port,
                                     started=started, stop=stop, **tls))
    await asyncio.wait_for(started.wait(), 10)
    return task, stop


async def test_serve_leaves_signals_to_the_daemon_and_stops_on_the_event(tmp_path: Path) -> None:
    port = free_port()
    rig = build(tmp_path, hosts=frozenset({"127.0.0.1"}), port=port)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    task, stop = await _serving(rig, port)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    async with httpx2.AsyncClient() as c:
        assert (await c.get(f"http://127.0.0.1:{port}/login")).status_code == 200
    stop.set()
    await asyncio.wait_for(task, 10)
    with pytest.raises(httpx2.ConnectError):
        async with httpx2.AsyncClient() as c:
            await c.get(f"http://127.0.0.1:{port}/login")


async def test_serve_refuses_a_busy_port_and_a_wan_address(tmp_path: Path) -> None:
    rig = build(tmp_path)
    app = create_app(rig.service, rig.settings)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(WebError, match="cannot listen"):
            await serve(app, "127.0.0.1", port, stop=asyncio.Event())
    for host in ("0.0.0.0", "8.8.8.8", "gateway.local"):
        with pytest.raises(WebError):
            await serve(app, host, 8080, stop=asyncio.Event())


async def test_serve_over_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    rig = build(tmp_path, hosts=frozenset({"127.0.0.1"}), port=port)
    rig.settings = dataclasses.replace(rig.settings, tls=True)
    task, stop = await _serving(rig, port, ssl_certfile=cert, ssl_keyfile=key)
    context = ssl.create_default_context(cafile=str(cert))
    async with httpx2.AsyncClient(verify=context) as c:
        reply = await c.get(f"https://127.0.0.1:{port}/login")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert reply.status_code == 200
    assert reply.headers["set-cookie"].startswith("__Host-hems_login=")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime.now(UTC) - timedelta(days=1))
            .not_valid_after(datetime.now(UTC) + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "page.crt", tmp_path / "page.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_settings_from_the_config_section(tmp_path: Path) -> None:
    hash_file = tmp_path / "pairing"
    hash_file.write_text(_PAIRING + "\n", encoding="ascii")
    web = Web(listen="192.168.1.20:8443", pairing_hash_file=hash_file,
              tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
    settings = WebSettings.from_config(web, hostnames=["HEMS-Gateway.local"])
    assert (settings.bind_host, settings.port, settings.tls) == ("192.168.1.20", 8443, True)
    assert settings.origins() == {"https://192.168.1.20:8443", "https://hems-gateway.local:8443"}
    assert settings.pairing.verify(CODE) and not settings.pairing.verify("0" + CODE)
    with pytest.raises(WebError, match="pairing_hash_file"):
        WebSettings.from_config(Web(listen="127.0.0.1:8080"))
    hash_file.write_text("scrypt$14$8$1$short", encoding="ascii")
    with pytest.raises(WebError, match="pairing hash"):
        WebSettings.from_config(web)


# -- what only the household can agree to -------------------------------------------------------

async def test_pending_support_request_is_granted_only_when_the_household_accepts(
        client: Client, rig: Rig) -> None:
    request = rig.service.add_pending_request(purpose="support", recipient="support_centre",
                                              tier="raw", hours=24, reference="SC-1234")
    token = await log_in(client)
    page = (await client.get("/")).text
    assert "SC-1234" in page and grant_of(rig, "support", "support_centre") == "off"
    reply = await client.post("/request", data={"csrf": token, "action": "accept",
                                                "request_id": request.request_id},
                              headers={"origin": ORIGIN})
    assert reply.status_code == 303
    grant = rig.ledger.grants(rig.clock())[("support", "support_centre")]
    assert grant.expires == rig.clock() + timedelta(hours=24)
    last = rig.ledger.history()[-1]
    assert (last.source.value, last.data["reference"]) == ("household_page", "SC-1234")
    assert rig.service.pending_requests() == []


async def test_a_new_catalogue_version_asks_for_agreement_again(client: Client, rig: Rig) -> None:
    raw = json.loads(rig.ledger.catalogue.canonical_json())
    raw["version"] = "2027.1"
    improvement = next(p for p in raw["purposes"] if p["id"] == "improvement")
    improvement["recipients"].append({"id": "partner", "kind": "company",
                                      "name": {"ja": "提携会社", "en": "Partner"}})
    rig.ledger.apply_catalogue(parse_catalogue(json.dumps(raw)), rig.clock())
    await log_in(client)
    page = (await client.get("/")).text
    assert 'id="catalogue-notice"' in page and "2027.1" in page
    assert "サービスの品質改善" in page.split('id="catalogue-notice"')[1].split("</p>")[0]


async def test_post_bodies_are_bounded(client: Client) -> None:
    token = csrf_of((await client.get("/login")).text)
    big = await client.post("/login", data={"csrf": token, "code": "1" * 20_000},
                            headers={"origin": ORIGIN})
    assert big.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        yield b"csrf=" + token.encode()

    chunked = await client.post("/login", content=chunks(), headers={
        "origin": ORIGIN, "content-type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 411


def test_a_power_cut_inside_erasure_leaves_nothing_queued_to_send(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    for purpose in ("service", "improvement"):
        rig.outbox.enqueue(b"x" * 64, topic=f"hems/v1/s/{purpose}/data", purpose=purpose,
                           recipient="company", tier="1d", kind="data")
    rig.outbox.flush()
    assert rig.outbox.queued_data()
    import agent.pipeline as pipeline

    def power_cut(**_: Any) -> None:
        raise SystemExit("power cut")

    monkeypatch.setattr(pipeline, "delete_household_data", power_cut)
    with pytest.raises(SystemExit):
        rig.service.delete_local_data()
    # Whatever the erasure had not reached yet, nothing it was deleting can still leave.
    assert rig.outbox.queued_data() == set()
