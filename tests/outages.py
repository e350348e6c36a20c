"""Stores behind a TCP proxy the test can cut and restore, for outage tests: the real servers
keep running, only this process's connections to them fail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from services.cache import CacheRegistry
from standins.tcp_proxy import TcpProxy
from tests.conftest import Stores
from tests.test_redis_manager import FAST


@asynccontextmanager
async def postgres_behind_proxy(database_url: str) -> AsyncIterator[tuple[TcpProxy, PostgresManager]]:
    target = urlsplit(database_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        postgres = PostgresManager(
            database_url.replace(target.netloc, f"{target.username}@127.0.0.1:{proxy.port}"), min_size=1, max_size=2
        )
        await postgres.start()
        try:
            yield proxy, postgres
        finally:
            await postgres.close()


@asynccontextmanager
async def redis_behind_proxy(redis_url: str) -> AsyncIterator[tuple[TcpProxy, RedisManager, CacheRegistry]]:
    """A Redis manager (with the Redis tests' short timeouts) and its cache registry."""
    parts = urlsplit(redis_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        redis = RedisManager.from_url(
            urlunsplit((parts.scheme, f"{proxy.listen_host}:{proxy.port}", parts.path, "", "")), FAST
        )
        await redis.start()
        caches = CacheRegistry(redis)
        await caches.start()
        try:
            yield proxy, redis, caches
        finally:
            await caches.stop()
            await redis.close()


def with_postgres(stores: Stores, postgres: PostgresManager) -> Stores:
    return Stores(stores.redis, postgres, stores.caches, stores.database_url, stores.redis_url)
