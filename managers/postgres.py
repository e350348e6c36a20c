"""PostgreSQL access: one asyncpg pool, every query bounded by a timeout.

    db = PostgresManager(dsn)
    await db.start()
    row = await db.fetchrow("SELECT * FROM users WHERE telegram_id = $1", 42)
    async with db.transaction() as conn:        # or db.acquire() for a bare connection
        await conn.execute(...)
    await db.close()

Errors it raises, and json columns: docs/architecture.md, "PostgreSQL manager".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from managers.urls import redact_url

__all__ = ["PostgresManager", "PostgresNotStarted", "is_connection_failure"]

logger = logging.getLogger("alertbot.postgres")

_LOG_QUERY_CHARS = 200


class PostgresNotStarted(RuntimeError):
    """A query was attempted before `PostgresManager.start()` succeeded (or after close())."""


# SQLSTATEs that say nothing about the rows: connection exceptions (08), the server shutting
# down or starting (57P), insufficient resources (53: disk full, too many connections), and a
# serialization failure or deadlock (40001, 40P01) that a retry resolves.
TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P", "53", "40001", "40P01")


def is_connection_failure(exc: BaseException) -> bool:
    """True when PostgreSQL could not take a batch at all, so it is worth trying again whole.

    False for what the server (or the client's encoder) said about the rows themselves: a
    constraint, a type, a value out of range; those are written row by row.
    """
    if isinstance(exc, asyncpg.DataError):  # a value the client cannot encode (also an InterfaceError)
        return False
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "").startswith(TRANSIENT_SQLSTATE_PREFIXES)
    return isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError, PostgresNotStarted))


def _encode_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=_encode_json, decoder=json.loads, format="text"
        )


def _short(query: str) -> str:
    query = " ".join(query.split())
    return query if len(query) <= _LOG_QUERY_CHARS else query[: _LOG_QUERY_CHARS - 1] + "…"


class PostgresManager:
    """An asyncpg pool with per-query timeouts, logging and a never-raising health check."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 5,
        max_size: int = 20,
        query_timeout: float = 5.0,
        acquire_timeout: float | None = None,
        connect_timeout: float = 10.0,
        application_name: str = "alertbot",
    ) -> None:
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        self._dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.query_timeout = query_timeout
        # Waiting for a free connection is bounded too, so a drained pool cannot hang callers.
        self.acquire_timeout = acquire_timeout if acquire_timeout is not None else max(query_timeout, 1.0) * 2
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self._pool: asyncpg.Pool | None = None
        self._start_lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "started" if self._pool is not None else "stopped"
        return f"<PostgresManager {redact_url(self._dsn)} {state}>"

    @property
    def safe_dsn(self) -> str:
        return redact_url(self._dsn)

    @property
    def started(self) -> bool:
        return self._pool is not None and not self._pool.is_closing()

    @property
    def pool(self) -> asyncpg.Pool:
        """The underlying pool (raises PostgresNotStarted before start())."""
        return self._require_pool()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the pool (``min_size`` connections). Idempotent. Raises (after logging) when the
        server cannot be reached within ``connect_timeout``."""
        async with self._start_lock:
            if self.started:
                return
            try:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    command_timeout=self.query_timeout,
                    timeout=self.connect_timeout,
                    init=_init_connection,
                    server_settings={"application_name": self.application_name},
                )
            except Exception as exc:
                logger.error(
                    "cannot open the PostgreSQL pool at %s: %s: %s",
                    self.safe_dsn,
                    type(exc).__name__,
                    exc,
                )
                raise
            logger.info(
                "PostgreSQL pool open at %s (%d..%d connections)",
                self.safe_dsn,
                self.min_size,
                self.max_size,
            )

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool, waiting up to `timeout` seconds for connections in use; then
        terminate whatever is left. Idempotent, never raises."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout)
        except Exception as exc:
            logger.warning("PostgreSQL pool did not close cleanly (%s); terminating it", exc)
            pool.terminate()
        logger.info("PostgreSQL pool closed")

    async def __aenter__(self) -> PostgresManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- queries

    def _require_pool(self) -> asyncpg.Pool:
        pool = self._pool
        if pool is None or pool.is_closing():
            raise PostgresNotStarted("PostgresManager is not started")
        return pool

    def _log_failure(self, what: str, query: str, exc: BaseException, timeout: float | None) -> None:
        if isinstance(exc, asyncio.TimeoutError):
            logger.warning("%s timed out after %ss: %s", what, timeout, _short(query))
        elif isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            # Usually expected by the caller (a duplicate); theirs to report.
            logger.debug("%s: %s: %s [%s]", what, type(exc).__name__, exc, _short(query))
        else:
            logger.error("%s failed: %s: %s [%s]", what, type(exc).__name__, exc, _short(query))

    async def _call(self, method: str, query: str, args: Sequence[Any], timeout: float | None) -> Any:
        pool = self._require_pool()
        timeout = self.query_timeout if timeout is None else timeout
        try:
            async with pool.acquire(timeout=self.acquire_timeout) as conn:
                return await getattr(conn, method)(query, *args, timeout=timeout)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            self._log_failure(method, query, exc, timeout)
            raise

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        """Run a command; returns its status tag (e.g. ``"UPDATE 1"``). Without args the query
        may hold several statements."""
        return await self._call("execute", query, args, timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[asyncpg.Record]:
        return await self._call("fetch", query, args, timeout)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> asyncpg.Record | None:
        return await self._call("fetchrow", query, args, timeout)

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        pool = self._require_pool()
        timeout = self.query_timeout if timeout is None else timeout
        try:
            async with pool.acquire(timeout=self.acquire_timeout) as conn:
                return await conn.fetchval(query, *args, column=column, timeout=timeout)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            self._log_failure("fetchval", query, exc, timeout)
            raise

    async def executemany(self, query: str, args: Iterable[Sequence[Any]], *, timeout: float | None = None) -> None:
        """Run `query` once per argument tuple, atomically (asyncpg runs it as one batch)."""
        pool = self._require_pool()
        timeout = self.query_timeout if timeout is None else timeout
        try:
            async with pool.acquire(timeout=self.acquire_timeout) as conn:
                await conn.executemany(query, args, timeout=timeout)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            self._log_failure("executemany", query, exc, timeout)
            raise

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for several statements (``async with conn.transaction(): ...``).
        Its queries default to ``query_timeout`` as well."""
        pool = self._require_pool()
        try:
            conn_cm = pool.acquire(timeout=self.acquire_timeout if timeout is None else timeout)
            conn = await conn_cm.__aenter__()
        except (TimeoutError, asyncpg.InterfaceError, OSError) as exc:
            logger.error("cannot get a PostgreSQL connection: %s: %s", type(exc).__name__, exc)
            raise
        try:
            yield conn
        except BaseException as exc:
            await conn_cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            await conn_cm.__aexit__(None, None, None)

    @asynccontextmanager
    async def transaction(self, **options: Any) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside a transaction, committed when the block exits normally and
        rolled back on an exception. `options` go to ``conn.transaction()`` (isolation, ...)."""
        async with self.acquire() as conn:
            async with conn.transaction(**options):
                yield conn

    # ---------------------------------------------------------------- health

    async def health(self) -> dict[str, Any]:
        """``{"status": "ok"|"down", "latency_ms", "pool_size", "pool_free", "error"}`` —
        ``error`` is None when ok. Bounded by about twice ``query_timeout``; never raises."""
        pool = self._pool
        if pool is None or pool.is_closing():
            return {"status": "down", "latency_ms": None, "pool_size": 0, "pool_free": 0, "error": "not started"}
        started = time.perf_counter()

        async def probe() -> None:
            async with pool.acquire(timeout=self.query_timeout) as conn:
                await conn.fetchval("SELECT 1", timeout=self.query_timeout)

        try:
            # The outer bound also covers connecting anew when the pooled connections died.
            await asyncio.wait_for(probe(), self.query_timeout * 2 + 1)
        except Exception as exc:  # noqa: BLE001 - health must never raise
            logger.warning("PostgreSQL health check failed: %s: %s", type(exc).__name__, exc)
            return {
                "status": "down",
                "latency_ms": None,
                "pool_size": self._safe(pool.get_size),
                "pool_free": self._safe(pool.get_idle_size),
                "error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            }
        return {
            "status": "ok",
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "pool_size": self._safe(pool.get_size),
            "pool_free": self._safe(pool.get_idle_size),
            "error": None,
        }

    @staticmethod
    def _safe(getter: Any) -> int:
        try:
            return int(getter())
        except Exception:
            return 0
