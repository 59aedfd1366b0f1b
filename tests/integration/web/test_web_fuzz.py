"""Fuzz every form and JSON endpoint of the household page: never a 500, and malformed input
never changes a grant.

Each test builds one real rig (ledger, outbox), logs in once, then lets hypothesis throw forms,
raw bodies and JSON at the endpoints. After every request the grants in force are compared
with those before: they may only differ when the page answered "done" (303 or 200), and then
exactly as the request asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.web.app import create_app
from tests.integration.web.test_web_security import ORIGIN, Rig, build, http_client, log_in

FORM_ENDPOINTS = ["/login", "/logout", "/grant", "/request", "/stop-third-party", "/delete"]
FIELDS = ["purpose", "recipient", "tier", "hours", "csrf", "confirm", "request_id", "action",
          "code", "zzz"]
WORDS = ["service", "improvement", "proposals", "support", "survey", "maintenance_watch",
         "company", "installer", "support_centre", "off", "events", "1mo", "1d", "30min",
         "1min", "raw", "yes", "accept", "decline", "1", "72", "0", "-1", "99999", ""]
CONTENT_TYPES = ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
                 "multipart/form-data", "application/json", "text/plain", "", "\u00e9/\u00e9"]
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

values = st.one_of(st.sampled_from(WORDS), st.text(max_size=40))
forms = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                   max_size=4),
    max_leaves=12)
json_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"purpose": st.sampled_from(WORDS) | json_values,
                                        "recipient": st.sampled_from(WORDS) | json_values,
                                        "tier": st.sampled_from(WORDS) | st.none() | json_values,
                                        "hours": st.integers(-5, 1000) | json_values}))


class Harness:
    """One logged-in client on one rig, driven synchronously from hypothesis."""

    def __init__(self, rig: Rig, loop: asyncio.AbstractEventLoop,
                 client: httpx2.AsyncClient, token: str) -> None:
        self.rig, self.loop, self.client, self.token = rig, loop, client, token

    def grants(self) -> dict[tuple[str, str], tuple[str, Any]]:
        now = self.rig.clock()
        return {k: (g.tier.value, g.expires) for k, g in self.rig.ledger.grants(now).items()}

    def send(self, path: str, **kwargs: Any) -> httpx2.Response:
        headers = {"origin": ORIGIN, **kwargs.pop("headers", {})}
        reply = self.loop.run_until_complete(self.client.post(path, headers=headers, **kwargs))
        assert reply.status_code < 500, (path, kwargs, reply.status_code)
        return reply


@contextmanager
def harness(tmp_path: Path) -> Iterator[Harness]:
    rig = build(tmp_path)
    loop = asyncio.new_event_loop()
    client = http_client(create_app(rig.service, rig.settings))
    try:
        token = loop.run_until_complete(log_in(client))
        yield Harness(rig, loop, client, token)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
        rig.outbox.close()
        rig.ledger.close()


def _expected_tier(form: dict[str, str]) -> str:
    return form["tier"]


def test_grant_form_fuzz(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        @FUZZ
        @given(form=forms, with_token=st.booleans())
        def run(form: dict[str, str], with_token: bool) -> None:
            if with_token:
                form = {**form, "csrf": h.token}
            before = h.grants()
            reply = h.send("/grant", data=form)
            after = h.grants()
            if reply.status_code != 303:
                assert after == before
                return
            assert with_token or form.get("csrf") == h.token
            key = (form["purpose"], form["recipient"])
            assert after.get(key, ("off", None))[0] == _expected_tier(form)
            assert h.rig.ledger.history()[-1].source.value == "household_page"
        run()


def test_every_form_endpoint_with_a_wrong_token_changes_nothing(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        @FUZZ
        @given(path=st.sampled_from(FORM_ENDPOINTS), form=forms)
        def run(path: str, form: dict[str, str]) -> None:
            if form.get("csrf") == h.token:
                form = {**form, "csrf": "not-the-token"}
            before, deletions = h.grants(), len(h.rig.deletions)
            reply = h.send(path, data=form)
            assert reply.status_code in {400, 401, 403, 429}
            assert h.grants() == before and len(h.rig.deletions) == deletions
        run()


def test_raw_bodies_never_fail_the_server(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        @FUZZ
        @given(path=st.sampled_from([*FORM_ENDPOINTS, "/api/grant"]), body=st.binary(max_size=300),
               content_type=st.sampled_from(CONTENT_TYPES), with_token=st.booleans())
        def run(path: str, body: bytes, content_type: str, with_token: bool) -> None:
            before = h.grants()
            headers: dict[str, Any] = {"content-type": content_type.encode("latin-1")}
            if with_token:
                headers["x-csrf-token"] = h.token
            h.send(path, content=body, headers=headers)
            assert h.grants() == before
        run()


def test_json_grant_fuzz(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        @FUZZ
        @given(body=json_bodies, with_token=st.booleans())
        def run(body: Any, with_token: bool) -> None:
            headers = {"x-csrf-token": h.token} if with_token else {}
            before = h.grants()
            reply = h.send("/api/grant", json=body, headers=headers)
            after = h.grants()
            if reply.status_code != 200:
                assert after == before
                return
            assert with_token and isinstance(body, dict)
            tier = "off" if body["tier"] in (None, "off") else body["tier"]
            assert after.get((body["purpose"], body["recipient"]), ("off", None))[0] == tier
        run()
