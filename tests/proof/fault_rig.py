"""Shared parts of the fault and privacy proofs: a TCP proxy that can delay, record and corrupt,
state checks after a crash, and the delivery checks (committed releases arrive exactly once).

The proxy sits between the agent and a server (the broker, or a Modbus simulator): it records
every byte in each direction, can hold back the server's bytes (slow acknowledgements) and can
slip garbage into them (line noise).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.installer.doctor.state import verify_ledger
from tests.e2e.daemon_helpers import Cloud, cloud, release_log, sent_seqs, withdrawn_releases
from tests.support.mosquitto import Mosquitto
from tests.support.site import SiteFiles

Window = tuple[str, str, int, int]


@dataclass
class Proxy:
    """A transparent TCP proxy on a free loopback port in front of ``upstream_port``.

    ``delay`` holds each chunk from the server that long before passing it on (order kept);
    ``noise`` is the chance that a chunk from the server is preceded by random bytes.
    """

    upstream_port: int
    delay: float = 0.0
    noise: float = 0.0
    seed: int = 0
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    port: int = 0
    connections: int = 0
    injected: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> Proxy:
        self._rng = random.Random(self.seed)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def drop_all(self) -> None:
        """Cut every open connection (the next ones are accepted again)."""
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer, self.to_server, False),
                                 self._pipe(up_reader, writer, self.to_client, True))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    record: bytearray, from_server: bool) -> None:
        while chunk := await reader.read(65536):
            record += chunk
            if from_server and self.delay:
                await asyncio.sleep(self.delay)
            if from_server and self.noise and self._rng.random() < self.noise:
                junk = self._rng.randbytes(self._rng.randint(1, 12))
                self.injected += 1
                writer.write(junk)
            writer.write(chunk)
            await writer.drain()
        writer.close()


def check_state(files: SiteFiles) -> int:
    """After a crash: the ledger's chain and signatures verify (as ``hems-agent doctor`` does)
    and sqlite finds the outbox intact. The ledger's record count."""
    records = verify_ledger(files.state_dir / "consent-ledger.json", files.directory / "device.key")
    outbox = files.state_dir / "outbox.sqlite"
    if outbox.exists():
        with contextlib.closing(sqlite3.connect(outbox)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return records


def outbox_depth(files: SiteFiles) -> int:
    """Envelopes in the outbox the broker has not acknowledged. Acknowledged rows are deleted
    with the outbox's next commit (acknowledgements alone wait up to its ``ack_interval``), so
    rows of data envelopes the release log already marks sent do not count."""
    sent = sent_seqs(files)
    with contextlib.closing(sqlite3.connect(files.state_dir / "outbox.sqlite")) as db:
        seqs = [row[0] for row in db.execute("SELECT seq FROM envelopes")]
    return sum(1 for seq in seqs if seq not in sent)


def outbox_drops(files: SiteFiles) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(files.state_dir / "outbox.sqlite")) as db:
        return {str(p): int(n) for p, n in db.execute("SELECT purpose, count FROM drops")}


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def _windows(entries: Iterable[dict[str, Any]]) -> Counter[Window]:
    return Counter((e["purpose"], e["recipient"], _ts(e["start"]), _ts(e["end"]))
                   for e in entries)


def logged(files: SiteFiles) -> Counter[Window]:
    """Committed releases not withdrawn unsent, from the release log: (purpose, recipient,
    start, end)."""
    return _windows(release_log(files))


def committed_windows(files: SiteFiles) -> Counter[Window]:
    """Every committed release, withdrawn ones included."""
    return _windows(release_log(files, with_withdrawn=True))


def dropped(files: SiteFiles) -> Counter[Window]:
    """Releases the outbox bound dropped unacknowledged, from the release log (withdrawn
    unsent, or possibly sent: published, dropped before its PUBACK)."""
    return _windows(withdrawn_releases(files, "outbox_full"))


def received(c: Cloud, names: dict[str, str]) -> Counter[Window]:
    """Data envelopes the receiver accepted, as (purpose, recipient, start, end)."""
    return Counter((h["purpose"], names[h["recipient_key"]], h["window_start"], h["window_end"])
                   for h in (e["header"] for e in c.data()))


def recipient_names(files: SiteFiles) -> dict[str, str]:
    return {key.key_id: name for name, key in files.recipient_keys.items()}


def check_exactly_once(c: Cloud, files: SiteFiles,
                       lost: Iterable[Window] = ()) -> tuple[int, int]:
    """Every committed release arrived once (except ``lost``, dropped by the bound), no
    (site, seq) twice. The number of committed and received releases."""
    seqs = Counter((e["header"]["site"], e["header"]["seq"]) for e in c.envelopes())
    assert seqs, "nothing arrived"
    twice = [k for k, n in seqs.items() if n > 1]
    assert not twice, f"(site, seq) accepted twice: {twice[:5]}"
    log, got = logged(files), received(c, recipient_names(files))
    missing = set(log) - set(got) - set(lost)
    assert not missing, f"{len(missing)} committed releases never arrived: {sorted(missing)[:5]}"
    assert max(log.values()) == 1, "a window released twice"
    assert max(got.values()) == 1, "a window received twice"
    return sum(log.values()), sum(got.values())


def rejected(c: Cloud) -> dict[str, Any]:
    return dict(c.receiver.rejected)


def quick_cloud(files: SiteFiles, broker: Mosquitto, db: Path,
                raw: list[tuple[str, bytes]] | None = None
                ) -> contextlib.AbstractAsyncContextManager[Cloud]:
    """``daemon_helpers.cloud`` reconnecting within two seconds of a broker's return."""
    return cloud(files, broker, db, backoff_max=2.0, raw=raw)
