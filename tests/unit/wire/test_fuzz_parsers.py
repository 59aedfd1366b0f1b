"""Hostile JSON at every parser of outside bytes, short profile (``make test``): the fuzz
targets of tests/support/fuzz_json.py with a few fixed examples each, and the inputs that used
to get past them (2,000 nested arrays raised RecursionError; a repeated key was read as its
last value)."""

from __future__ import annotations

import json
import zlib

import pytest

from agent.errors import EnvelopeError
from agent.wire import commands, envelope
from agent.wire.commands import CommandError
from tests.support import fuzz_json as fj

_CASES = fj.cases(20)

test_command_parser = _CASES["command"]
test_envelope_header_parser = _CASES["header"]
test_envelope_body_parser = _CASES["body"]
test_receiver_handles_hostile_json = _CASES["receiver"]
test_catalogue_update_parser = _CASES["catalogue"]

NESTED = b"[" * 2000 + b"]" * 2000


def _command(body: bytes) -> CommandError:
    with pytest.raises(CommandError) as caught:
        commands.verify_command(fj.sign_command(body), keys={fj.OPERATOR_ID: fj.OPERATOR
                                                              .public_key()},
                                site=fj.SITE, now=fj.NOW + 1)
    return caught.value


def test_a_command_nested_2000_deep_is_malformed_not_a_crash() -> None:
    body = json.dumps(fj.command_template("diagnostics"), sort_keys=True,
                      separators=(",", ":")).replace('"args":{}', '"args":' + NESTED.decode())
    error = _command(body.encode())
    assert error.reason == "malformed" and "too_deep" in str(error)


def test_a_command_repeating_a_key_is_malformed() -> None:
    body = fj.command_template("suspend")
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    twice = '{"site":"site-other",' + text[1:]  # which one would a second parser read?
    error = _command(twice.encode())
    assert error.reason == "malformed" and "'site' appears twice" in str(error)


def test_a_command_with_a_5000_digit_number_is_malformed() -> None:
    text = json.dumps(fj.command_template("diagnostics"), sort_keys=True,
                      separators=(",", ":")).replace('"args":{}', '"args":{"n":' + "9" * 5000 + "}")
    assert _command(text.encode()).reason == "malformed"


def test_a_header_nested_2000_deep_is_an_envelope_error() -> None:
    assert len(NESTED) <= envelope.DEFAULT_LIMITS.max_header
    with pytest.raises(EnvelopeError, match="too_deep"):
        envelope.parse(fj.seal_raw(NESTED, b"{}"))


def test_a_header_repeating_seq_is_refused_at_the_receiver(tmp_path) -> None:  # type: ignore[no-untyped-def]
    genuine = fj._header(kind="data", seq=1).to_bytes()
    twice = genuine.replace(b'"seq":1', b'"seq":1,"seq":2')
    assert twice != genuine
    assert json.loads(twice)["seq"] == 2  # what json.loads alone makes of it
    with pytest.raises(EnvelopeError, match="duplicate_key"):
        envelope.header_from_bytes(twice)
    fj.check_receiver(fj.Hostile(twice, refused=True), None)


def test_a_body_repeating_a_key_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="duplicate_key"):
        envelope._decode_body(fj._header(kind="data"),
                              zlib.compress(b'{"records":[],"records":[1]}'), envelope.Limits())


@pytest.mark.parametrize("body", [NESTED, b'{"records":["\\ud800"]}', b'{"a":NaN}',
                                  b'{"a":' + b"1" * 5000 + b"}"])
def test_the_receiver_drops_a_hostile_body_and_goes_on(body: bytes) -> None:
    fj.check_receiver(None, fj.Hostile(body, refused=True))
