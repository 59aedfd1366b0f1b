"""hems-receiver on PostgreSQL: schema migrations, where each kind is stored, and exactly once
across a shared-subscription group on a real mosquitto and a real PostgreSQL, with a receiver
SIGKILLed mid-stream and gateways re-sending after a lost PUBACK."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # under CI a missing extra is a failure, not a skip
    pytest.importorskip("psycopg", reason="the 'cloud' extra (psycopg) is not installed")
import psycopg

from agent.cloud.receiver import CatalogueRules
from agent.cloud.receiver_admin import main as admin_main
from agent.cloud.receiver_db import DbReceiver, PgStore, open_connection
from agent.errors import ReceiverError
from agent.uplink.session import connect, tls_context
from agent.wire import envelope, keys
from tests.integration.uplink_helpers import (
    PASSWORDS,
    Fleet,
    broker_config,
    data_topic,
    wait_until,
)
from tests.support.bodies import consent_body, deletion_body, event_body
from tests.support.mosquitto import RECEIVER_USER, Mosquitto
from tests.support.postgres import fresh_database

pg_url = pytest.fixture(fresh_database)


def seal_notice(fleet: Fleet, site: str, seq: int, kind: str, body: dict[str, Any]) -> bytes:
    device = fleet.devices[site]
    header = envelope.Header(
        site=site, purpose="service", tier="off" if kind == "consent" else "events", kind=kind,
        recipient_key=fleet.recipient.key_id, kem=fleet.recipient.kem,
        device_key=keys.device_key_id(device.public_key()), catalogue="test",
        consent_id="c-1", consent_hash="ab" * 32, seq=seq, window_start=None, window_end=None,
        created=1767227401000)
    return envelope.seal(header, body, recipient=fleet.recipient.public, device_key=device)


def tampered(payload: bytes) -> bytes:
    return payload[:-1] + bytes([payload[-1] ^ 0x01])


def db_receiver(fleet: Fleet, url: str, name: str) -> DbReceiver:
    return DbReceiver(store=PgStore(url, name),
                      device_keys={s: k.public_key() for s, k in fleet.devices.items()},
                      recipient_keys={fleet.recipient.key_id: fleet.recipient},
                      rules=CatalogueRules())


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[no-any-return]


async def test_schema_is_migrated_once_by_receivers_starting_together(pg_url: str) -> None:
    conns = await asyncio.gather(*(open_connection(pg_url) for _ in range(3)))
    for conn in conns:
        await conn.close()
    assert query(pg_url, "SELECT version, name FROM schema_version") == [(1, "0001_initial.sql")]
    query_conn = await open_connection(pg_url)  # idempotent: nothing left to apply
    await query_conn.execute("INSERT INTO schema_version (version, name) VALUES (2, 'future')")
    await query_conn.close()
    with pytest.raises(ReceiverError, match="schema is version 2, newer"):
        await open_connection(pg_url)


async def test_each_kind_is_stored_in_its_table_and_month(pg_url: str) -> None:
    fleet = Fleet()
    receiver = db_receiver(fleet, pg_url, "rx-a")
    january = fleet.seal("s-0001", 1, points=("pv.energy", "grid.energy_import"))
    february = fleet.seal("s-0001", 1500)  # window starts 31.25 days after 2026-01-01
    consent = seal_notice(fleet, "s-0002", 7, "consent", consent_body())
    deletion = seal_notice(fleet, "s-0002", 8, "deletion", deletion_body())
    event = seal_notice(fleet, "s-0002", 9, "event", event_body())
    batch = [(data_topic("s-0001"), january), (data_topic("s-0001"), february),
             (data_topic("s-0001"), january),  # the same bytes again in one batch
             ("hems/v1/s-0002/service/consent", consent),
             ("hems/v1/s-0002/service/deletion", deletion),
             ("hems/v1/s-0002/service/event", event),
             (data_topic("s-0002"), tampered(fleet.seal("s-0002", 10)))]
    try:
        stored = await receiver.process(batch)
        again = await receiver.process([(data_topic("s-0001"), january)])
    finally:
        await receiver.store.close()
    assert stored == [True, True, False, True, True, True, False]
    assert again == [False]
    assert receiver.accepted == 5 and receiver.rejected["replay"] == 2
    assert sum(receiver.rejected.values()) == 3  # two replays and the tampered one
    assert query(pg_url, "SELECT tableoid::regclass::text, seq, purpose, tier FROM release "
                 "ORDER BY seq") == [("release_y2026m01", 1, "service", "30min"),
                                     ("release_y2026m02", 1500, "service", "30min")]
    assert query(pg_url, 'SELECT tableoid::regclass::text, point, "values"->\'values\' '
                 "FROM release_record WHERE seq = 1 ORDER BY ordinal") == [
        ("release_record_y2026m01", "pv.energy", {"delta": 1.0}),
        ("release_record_y2026m01", "grid.energy_import", {"delta": 1.0})]
    assert query(pg_url, "SELECT count(*) FROM release_default") == [(0,)]
    assert query(pg_url, "SELECT site, seq, event, record_id FROM consent_notice") == [
        ("s-0002", 7, "withdrawn", "r-9")]
    assert query(pg_url, "SELECT site, seq, scope, state FROM deletion_request") == [
        ("s-0002", 8, "all_household_data", "received")]
    assert query(pg_url, "SELECT seq, body FROM event_notice") == [
        (9, event_body())]
    assert query(pg_url, "SELECT site, seq, kind, received_by FROM seen_envelope "
                 "ORDER BY site, seq") == [("s-0001", 1, "data", "rx-a"),
                                           ("s-0001", 1500, "data", "rx-a"),
                                           ("s-0002", 7, "consent", "rx-a"),
                                           ("s-0002", 8, "deletion", "rx-a"),
                                           ("s-0002", 9, "event", "rx-a")]


async def test_two_receivers_given_the_same_envelopes_store_each_once(pg_url: str) -> None:
    fleet = Fleet()
    first, second = db_receiver(fleet, pg_url, "rx-1"), db_receiver(fleet, pg_url, "rx-2")
    batch = [(data_topic(site), fleet.seal(site, seq)) for seq in range(30)
             for site in ("s-0001", "s-0002")]
    try:
        results = await asyncio.gather(first.process(batch), second.process(batch[::-1]))
    finally:
        await first.store.close()
        await second.store.close()
    per_message = [a + b for a, b in zip(results[0], results[1][::-1], strict=True)]
    assert per_message == [1] * 60
    assert first.accepted + second.accepted == 60
    assert query(pg_url, "SELECT count(*), count(DISTINCT (site, seq)) FROM release") == [
        (60, 60)]


def test_deletion_requests_are_listed_and_marked_acted(
        pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = Fleet()
    receiver = db_receiver(fleet, pg_url, "rx-a")
    deletion = seal_notice(fleet, "s-0001", 3, "deletion", deletion_body())

    async def store() -> None:
        try:
            await receiver.process([("hems/v1/s-0001/service/deletion", deletion)])
        finally:
            await receiver.store.close()

    asyncio.run(store())
    assert admin_main(["--database", pg_url, "deletions"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["site"], d["seq"], d["state"]) for d in listed] == [("s-0001", 3, "received")]
    ident = str(listed[0]["id"])
    assert admin_main(["--database", pg_url, "acted", ident, "--actor", "ops"]) == 0
    assert admin_main(["--database", pg_url, "acted", ident, "--actor", "ops"]) == 2
    assert "no such request still in state received" in capsys.readouterr().err
    assert admin_main(["--database", pg_url, "deletions"]) == 0
    assert capsys.readouterr().out == ""
    assert query(pg_url, "SELECT state, acted_by, acted_at IS NOT NULL FROM deletion_request") == [
        ("acted", "ops", True)]


def test_a_bad_database_url_is_refused_without_echoing_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cloud.receiver_admin", "--database",
         "postgresql://u:s3cret@127.0.0.1:1/x?sslmode=nonsense-mode", "migrate"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "s3cret" not in proc.stderr
    assert "database" in proc.stderr


def _start_receiver(tmp_path: Path, broker: Mosquitto, url: str, n: int) -> subprocess.Popen[bytes]:
    with (tmp_path / f"rx-{n}.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cloud.receiver_cli", "--broker",
             f"mqtts://127.0.0.1:{broker.port}", "--ca", str(broker.ca), "--username",
             RECEIVER_USER, "--password-file", str(tmp_path / "receiver.pass"), "--device-keys",
             str(tmp_path / "devices.json"), "--recipient-key", str(tmp_path / "company.key"),
             "--group", "hems", "--client-id", f"rx-{n}", "--database", url,
             "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=log)


def _stop_receivers(procs: list[subprocess.Popen[bytes]], tmp_path: Path) -> str:
    """SIGINT every member and reap it; a member still running 20 s later has its stacks
    written to its log (SIGUSR1), is killed and reaped, and is named in the returned text."""
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    stuck = []
    for n, proc in enumerate(procs):
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            proc.kill()
            proc.wait()
            log = (tmp_path / f"rx-{n}.log").read_text(errors="replace")
            stuck.append(f"rx-{n} did not stop within 20 s of SIGINT:\n{log[-6000:]}")
    return "\n".join(stuck)


@pytest.mark.mosquitto
@pytest.mark.timeout(180)
async def test_a_group_of_three_stores_every_envelope_once_despite_a_kill_and_resends(
        tmp_path: Path, pg_url: str) -> None:
    """Three receivers share the subscription; all three hold delivered, uncommitted messages
    (the seen table is locked) when one is SIGKILLed; it restarts; every envelope is also
    published twice (a gateway re-sending after a lost PUBACK), and some are tampered."""
    broker = Mosquitto(tmp_path / "broker", PASSWORDS)
    broker.start()
    fleet = Fleet()
    (tmp_path / "devices.json").write_text(json.dumps(
        {s: keys.device_public_pem(k.public_key()).decode() for s, k in fleet.devices.items()}),
        encoding="utf-8")
    keys.write_private_file(tmp_path / "company.key", keys.recipient_private_pem(fleet.recipient))
    keys.write_private_file(tmp_path / "receiver.pass", PASSWORDS[RECEIVER_USER].encode())
    sites = ("s-0001", "s-0002")
    sealed = {(site, seq): fleet.seal(site, seq) for site in sites for seq in range(60)}
    forged = {(site, 1000 + n): tampered(fleet.seal(site, 1000 + n))
              for site in sites for n in range(5)}
    procs = [_start_receiver(tmp_path, broker, pg_url, n) for n in range(3)]
    locker = await psycopg.AsyncConnection.connect(pg_url)
    try:
        await wait_until(lambda: all(f"rx-{n} 1 $share/hems/" in broker.log_text()
                                     for n in range(3)), "all three subscribed")
        await locker.execute("LOCK TABLE seen_envelope IN EXCLUSIVE MODE")  # hold every commit

        async def publish(keys_: list[tuple[str, int]]) -> None:
            for site in sites:
                config = broker_config(broker, site)
                async with connect(config, tls_context(config)) as client:
                    for key in keys_:
                        if key[0] == site:
                            payload = sealed.get(key) or forged[key]
                            for _ in range(2):  # the re-send after a lost PUBACK
                                await client.publish(data_topic(site), payload, qos=1)

        await publish([k for k in sealed if k[1] < 30] + list(forged))
        await wait_until(lambda: all(broker.log_text().count(f"Sending PUBLISH to rx-{n}") >= 5
                                     for n in range(3)), "every member holds messages")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        killed_at = query(pg_url, "SELECT clock_timestamp()")[0][0]
        await locker.commit()  # the survivors commit; the dead member's work is lost with it
        await publish([k for k in sealed if k[1] >= 30])
        with (tmp_path / "rx-0.log").open("a") as log:
            log.write("--- restarted ---\n")
        procs[0] = _start_receiver(tmp_path, broker, pg_url, 0)  # same client id, same session

        def settled() -> bool:
            # every valid message (each sent twice) was stored or dropped as a replay, every
            # forged one rejected: nothing is left in any member's session
            logs = "".join((tmp_path / f"rx-{n}.log").read_text() for n in range(3))
            stored = int(query(pg_url, "SELECT count(*) FROM seen_envelope")[0][0])
            return (stored == len(sealed) and logs.count("replay") >= len(sealed)
                    and logs.count("signature") >= 2 * len(forged))

        await wait_until(settled, "every message stored once or dropped", 120)
    finally:
        await locker.close()
        stuck = _stop_receivers(procs, tmp_path)
        broker.stop()
    assert not stuck, stuck
    rows = query(pg_url, "SELECT site, seq, count(*) FROM release GROUP BY site, seq")
    assert sorted((site, seq) for site, seq, _ in rows) == sorted(sealed)
    assert {count for _, _, count in rows} == {1}
    assert query(pg_url, "SELECT count(*) FROM release_record") == [(len(sealed),)]
    assert query(pg_url, "SELECT count(*) FROM seen_envelope WHERE seq >= 1000") == [(0,)]
    assert {r[0] for r in query(pg_url, "SELECT received_by FROM seen_envelope")} <= {
        "rx-0", "rx-1", "rx-2"}
    after_restart = (tmp_path / "rx-0.log").read_text().split("--- restarted ---")[1]
    assert "rejected an envelope" in after_restart or query(
        pg_url, "SELECT count(*) FROM seen_envelope WHERE received_by = 'rx-0' "
        "AND stored_at > %s", (killed_at,))[0][0] > 0  # the restarted member took its share


@pytest.mark.mosquitto
async def test_a_lost_database_connection_mid_batch_loses_nothing(
        tmp_path: Path, pg_url: str) -> None:
    """The receiver's backend is terminated while its transaction waits: the batch is not
    acknowledged, the receiver reconnects to both, the broker delivers the batch again."""
    broker = Mosquitto(tmp_path / "broker", PASSWORDS)
    broker.start()
    fleet = Fleet()
    receiver = db_receiver(fleet, pg_url, "rx-solo")
    task = asyncio.create_task(receiver.run(broker_config(broker, RECEIVER_USER, "rx-solo"),
                                            None))
    locker = await psycopg.AsyncConnection.connect(pg_url)
    try:
        await wait_until(lambda: "rx-solo 1 hems/v1/" in broker.log_text(), "subscribed")
        await locker.execute("LOCK TABLE seen_envelope IN EXCLUSIVE MODE")
        config = broker_config(broker, "s-0001")
        async with connect(config, tls_context(config)) as client:
            for seq in range(5):
                await client.publish(data_topic("s-0001"), fleet.seal("s-0001", seq), qos=1)
        await wait_until(lambda: broker.log_text().count("Sending PUBLISH to rx-solo") >= 5,
                         "delivered")
        cur = await locker.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = 'hems-receiver' AND datname = current_database()")
        assert await cur.fetchall() == [(True,)]
        await locker.commit()
        await wait_until(lambda: receiver.accepted == 5, "all five stored after the reconnect")
    finally:
        await locker.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await receiver.store.close()
        broker.stop()
    assert query(pg_url, "SELECT count(*), count(DISTINCT seq) FROM release") == [(5, 5)]
    assert broker.log_text().count("Sending PUBLISH to rx-solo") >= 10  # delivered again


@pytest.mark.parametrize(("extra", "message"), [
    (["--output", "x.jsonl"], "--output and --database exclude each other"),
    (["--batch", "0"], "--batch must be 1 or more"),
])
def test_receiver_command_refuses_options_that_do_not_fit_the_database(
        tmp_path: Path, extra: list[str], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cloud.receiver_cli import main as receiver_main

    code = receiver_main(["--broker", "mqtts://127.0.0.1:1", "--ca", "ca.pem", "--device-keys",
                          "d.json", "--recipient-key", "k", "--database",
                          "postgresql://u@127.0.0.1/x", *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


async def test_rows_left_in_the_default_partition_move_to_their_new_month(pg_url: str) -> None:
    fleet = Fleet()
    conn = await open_connection(pg_url)
    await conn.execute(  # stored by hand before March had its partition
        "INSERT INTO release VALUES ('s-0002', 1, 'service', '30min', '2026-03-02Z', "
        "'2026-03-02 00:30Z', '2026-03-02 00:31Z', 'c', 'i', 'h', %s, %s)",
        ("ab" * 16, "cd" * 16))
    await conn.close()
    receiver = db_receiver(fleet, pg_url, "rx-a")
    march = fleet.seal("s-0001", 2900)  # 2026-01-01 + 2900 half hours = 2026-03-02
    try:
        assert await receiver.process([(data_topic("s-0001"), march)]) == [True]
    finally:
        await receiver.store.close()
    assert query(pg_url, "SELECT tableoid::regclass::text, site FROM release ORDER BY site") == [
        ("release_y2026m03", "s-0001"), ("release_y2026m03", "s-0002")]
