"""managers/postgres.py (the pool) and managers/embedded_postgres.py (the stand-in server)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from managers.embedded_postgres import EmbeddedPostgres, start_embedded_postgres_async
from managers.migrations import apply_migrations, discover_migrations
from managers.postgres import PostgresManager, PostgresNotStarted
from managers.urls import redact_url as redact_dsn

REPO_ROOT = Path(__file__).resolve().parent.parent


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ PostgresManager


async def test_start_query_health_close(database_url: str) -> None:
    db = PostgresManager(database_url, min_size=1, max_size=3)
    await db.start()
    await db.start()  # idempotent
    try:
        assert db.started
        await db.execute("CREATE TABLE t (id int PRIMARY KEY, name text, doc jsonb)")
        status = await db.execute("INSERT INTO t VALUES ($1, $2, $3)", 1, "one", {"min_mcap": 50000, "channels": ["a"]})
        assert status == "INSERT 0 1"
        await db.executemany("INSERT INTO t (id, name) VALUES ($1, $2)", [(2, "two"), (3, "three")])
        await db.execute("INSERT INTO t (id, doc) VALUES (4, $1)", '{"already": "json"}')

        rows = await db.fetch("SELECT id, name FROM t ORDER BY id")
        assert [(r["id"], r["name"]) for r in rows] == [(1, "one"), (2, "two"), (3, "three"), (4, None)]
        row = await db.fetchrow("SELECT * FROM t WHERE id = $1", 1)
        assert row["doc"] == {"min_mcap": 50000, "channels": ["a"]}  # jsonb comes back decoded
        assert await db.fetchval("SELECT doc FROM t WHERE id = 4") == {"already": "json"}
        assert await db.fetchrow("SELECT * FROM t WHERE id = 99") is None
        assert await db.fetchval("SELECT count(*) FROM t") == 4
        assert await db.fetchval("SELECT 1, 2", column=1) == 2

        with pytest.raises(asyncpg.UniqueViolationError):
            await db.execute("INSERT INTO t (id) VALUES (1)")

        health = await db.health()
        assert health["status"] == "ok"
        assert isinstance(health["latency_ms"], float) and health["latency_ms"] >= 0
        assert 1 <= health["pool_size"] <= 3
        assert 0 <= health["pool_free"] <= health["pool_size"]
        assert health["error"] is None
    finally:
        await db.close()
    await db.close()  # idempotent
    assert not db.started
    assert (await db.health())["status"] == "down"
    with pytest.raises(PostgresNotStarted):
        await db.fetchval("SELECT 1")


async def test_transaction_commits_or_rolls_back(database_url: str) -> None:
    async with PostgresManager(database_url, min_size=1, max_size=2) as db:
        await db.execute("CREATE TABLE t (id int)")
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO t VALUES (2)")
                raise RuntimeError("boom")
        async with db.acquire() as conn:
            assert conn.is_in_transaction() is False
            assert await conn.fetch("SELECT id FROM t") == [(1,)]


async def test_query_over_the_timeout_raises_and_the_pool_stays_usable(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # One connection only: the next query must reuse the one whose statement timed out.
    async with PostgresManager(database_url, min_size=1, max_size=1, query_timeout=0.2) as db:
        with caplog.at_level(logging.WARNING, logger="alertbot.postgres"):
            with pytest.raises(asyncio.TimeoutError):
                await db.fetchval("SELECT pg_sleep(30)")
        assert any("timed out" in r.getMessage() for r in caplog.records)
        assert await db.fetchval("SELECT 41 + 1") == 42

        # A per-call timeout overrides the default, both ways.
        with pytest.raises(asyncio.TimeoutError):
            await db.execute("SELECT pg_sleep(30)", timeout=0.1)
        assert await db.fetchval("SELECT 7 FROM pg_sleep(0.3)", timeout=30) == 7

        # Connections handed out by acquire() carry the default timeout too.
        async with db.acquire() as conn:
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("SELECT pg_sleep(30)")
        assert (await db.health())["status"] == "ok"

        # The cancelled statements are not left running on the server.
        for _ in range(100):
            sleeping = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'"
            )
            if sleeping == 0:
                break
            await asyncio.sleep(0.05)
        assert sleeping == 0


async def test_unreachable_server_health_is_down_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = f"postgresql://alertbot:s3cret-pw@127.0.0.1:{_unused_port()}/alertbot"
    db = PostgresManager(dsn, min_size=1, max_size=2, query_timeout=0.5, connect_timeout=2)
    assert (await db.health())["status"] == "down"  # never started
    with caplog.at_level(logging.DEBUG, logger="alertbot.postgres"):
        with pytest.raises(OSError):
            await db.start()
        health = await db.health()
    assert health["status"] == "down"
    assert health["latency_ms"] is None
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in repr(db)
    assert "s3cret-pw" not in str(health)
    await db.close()


def test_redact_dsn() -> None:
    assert redact_dsn("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_dsn("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_dsn("postgresql://h/db?user=u&password=pw") == "postgresql://h/db?user=u&password=***"
    assert redact_dsn("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"


# ------------------------------------------------------------------ the embedded server


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # A short path: a unix socket path must stay under ~100 bytes.
    path = Path(tempfile.mkdtemp(prefix="ab"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _cannot_connect(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return True
    await conn.close()
    return False


async def test_embedded_server_starts_migrates_and_stops(short_tmp: Path) -> None:
    data_dir = short_tmp / "nested" / "pg"  # the parents do not exist yet
    pg: EmbeddedPostgres = await start_embedded_postgres_async(data_dir, cleanup="delete")
    try:
        assert pg.running
        assert len(os.fsencode(str(pg.socket_path))) < 100
        assert pg.socket_path.is_socket()
        if os.geteuid() == 0:  # root: the package runs the server as an ordinary user
            import psutil

            assert psutil.Process(pg.pid).username() != "root"

        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == "alertbot"
        finally:
            await conn.close()

        assert await apply_migrations(pg.dsn) == [m.version for m in discover_migrations()]
        assert await apply_migrations(pg.dsn) == []

        async with PostgresManager(pg.dsn, min_size=1, max_size=2, query_timeout=2) as db:
            assert await db.fetchval("SELECT count(*) FROM plans") == 3
            assert (await db.health())["status"] == "ok"
            await pg.stop_async()
            assert not pg.running
            # The server is gone under an open pool: health says so without raising.
            health = await db.health()
            assert health["status"] == "down"
    finally:
        pg.stop()
    pg.stop()  # idempotent
    assert await _cannot_connect(pg.dsn)
    assert not data_dir.exists()  # cleanup="delete"


async def test_embedded_server_restarts_after_a_crashed_owner(short_tmp: Path) -> None:
    """A process that died without stopping the server leaves it running and registered; the
    next start reuses it, and its stop() really stops it."""
    data_dir = short_tmp / "pg"
    code = (
        "import os, sys; from pathlib import Path; "
        "from managers.embedded_postgres import start_embedded_postgres; "
        "pg = start_embedded_postgres(Path(sys.argv[1])); print(pg.pid, flush=True); os._exit(0)"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        str(data_dir),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    crashed_pid = int(out.split()[0])

    pg = await start_embedded_postgres_async(data_dir)
    try:
        assert pg.pid == crashed_pid  # the same server, still running
        assert not await _cannot_connect(pg.dsn)
    finally:
        await pg.stop_async()
    assert not pg.running
    assert await _cannot_connect(pg.dsn)
