"""Schema migrations: plain SQL files in `migrations/`, applied once each, in order.

Each runs in one transaction with its ``schema_migrations`` row, under an advisory lock, so
processes starting together apply it once; an applied file that changed stops the run. Manual
use: ``python -m managers.migrations DSN`` applies; ``--status`` lists. Details:
docs/architecture.md, "Migrations".
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = [
    "ADVISORY_LOCK_KEY",
    "MIGRATIONS_DIR",
    "Migration",
    "MigrationError",
    "apply_migrations",
    "discover_migrations",
    "migration_status",
]

logger = logging.getLogger("alertbot.migrations")

#: The repository's top-level ``migrations/`` folder.
MIGRATIONS_DIR: Path = Path(__file__).resolve().parent.parent / "migrations"

#: Key of the advisory lock held while migrating: the bytes of b"alertbot" as a signed 64-bit int.
ADVISORY_LOCK_KEY: int = int.from_bytes(b"alertbot", "big", signed=True)

_FILE_RE = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """A migration could not be applied, or the recorded history disagrees with the files."""


@dataclass(frozen=True)
class Migration:
    version: str  # the NNNN prefix as written in the file name, e.g. "0001"
    name: str  # the description part, e.g. "core_schema"
    path: Path
    checksum: str  # sha256 of the file, line endings normalised to \n
    sql: str

    @property
    def filename(self) -> str:
        return self.path.name


def _checksum(text: str) -> str:
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in `directory`, in the order they apply. Raises MigrationError on a
    ``.sql`` file with a bad name or on two files with the same number."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MigrationError(f"migrations folder not found: {directory}")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql" or not path.is_file():
            continue
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: a migration file must be named NNNN_description.sql")
        number = int(match["version"])
        if number in found:
            raise MigrationError(f"{path.name} and {found[number].filename} have the same number {number}")
        try:
            sql = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationError(f"{path.name}: cannot read it: {exc}") from exc
        found[number] = Migration(
            version=match["version"],
            name=match["name"],
            path=path,
            checksum=_checksum(sql),
            sql=sql,
        )
    return [found[number] for number in sorted(found)]


def _describe_sql_error(migration: Migration, exc: BaseException) -> str:
    """ "0002_x.sql failed and was rolled back: UndefinedTableError: relation ... (line 3)"."""
    text = f"{type(exc).__name__}: {exc}"
    position = getattr(exc, "position", None)
    if position:
        try:
            offset = int(position) - 1
        except (TypeError, ValueError):
            offset = -1
        if 0 <= offset <= len(migration.sql):
            text += f" (line {migration.sql.count(chr(10), 0, offset) + 1})"
    for extra in ("detail", "hint"):
        value = getattr(exc, extra, None)
        if value:
            text += f"; {extra}: {value}"
    return f"migration {migration.filename} failed and was rolled back: {text}"


async def _applied(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {row["version"]: row for row in rows}


async def apply_migrations(
    dsn: str,
    directory: Path = MIGRATIONS_DIR,
    *,
    lock_timeout: float | None = 300.0,
) -> list[str]:
    """Apply every migration in `directory` not yet applied to the database at `dsn`.

    Returns the versions applied by this call, in order (empty when already up to date).
    Waits up to `lock_timeout` seconds (None: forever) for another process's run to finish.
    Raises MigrationError when a migration fails (it is rolled back; the ones before it stay
    applied), when an applied migration's file has changed, or when the files are misnamed.
    """
    migrations = discover_migrations(directory)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    locked = False
    try:
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY, timeout=lock_timeout)
        except TimeoutError as exc:
            raise MigrationError(
                f"gave up after {lock_timeout:g}s waiting for another process to finish migrating"
            ) from exc
        locked = True
        await conn.execute(_CREATE_TABLE)
        applied = await _applied(conn)

        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None and row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.filename} was already applied, but the file has "
                    f"changed since (checksum {row['checksum'][:12]}… recorded, "
                    f"{migration.checksum[:12]}… now); restore it and put the change in a new "
                    f"migration"
                )
        known = {m.version for m in migrations}
        for version in sorted(set(applied) - known):
            logger.warning(
                "migration %s_%s is recorded as applied but its file is missing from %s",
                version,
                applied[version]["name"],
                directory,
            )

        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            logger.info("applying migration %s", migration.filename)
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                message = _describe_sql_error(migration, exc)
                logger.error("%s", message)
                raise MigrationError(message) from exc
            done.append(migration.version)
        if done:
            logger.info("applied migrations: %s", ", ".join(done))
        return done
    finally:
        try:
            if locked and not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
        except Exception:  # the lock dies with the session anyway
            pass
        await conn.close()


async def migration_status(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[tuple[str, bool]]:
    """``[(version, applied), ...]`` for every migration file, in order, followed by any version
    recorded as applied whose file is gone."""
    migrations = discover_migrations(directory)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        applied = await _applied(conn)
    finally:
        await conn.close()
    status = [(m.version, m.version in applied) for m in migrations]
    known = {m.version for m in migrations}
    status.extend((version, True) for version in sorted(set(applied) - known, key=int))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m managers.migrations",
        description="Apply (or list) the SQL migrations of the token alert bot.",
    )
    parser.add_argument("dsn", help="postgresql:// URL of the database")
    parser.add_argument("--dir", type=Path, default=MIGRATIONS_DIR, help="migrations folder")
    parser.add_argument("--status", action="store_true", help="list migrations and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.status:
            for version, applied in asyncio.run(migration_status(args.dsn, args.dir)):
                print(f"{version}  {'applied' if applied else 'pending'}")
        else:
            done = asyncio.run(apply_migrations(args.dsn, args.dir))
            print("applied: " + ", ".join(done) if done else "up to date")
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"error: cannot reach the database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
