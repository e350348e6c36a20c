"""managers/migrations.py and migrations/0001_core_schema.sql."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from managers.migrations import (
    ADVISORY_LOCK_KEY,
    MIGRATIONS_DIR,
    MigrationError,
    apply_migrations,
    discover_migrations,
    migration_status,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every migration in the repo, so adding one does not break the tests of the runner.
ALL_VERSIONS = [m.version for m in discover_migrations()]
CORE_TABLES = {
    "users",
    "user_settings",
    "settings_history",
    "channels",
    "tokens",
    "calls",
    "alerts",
    "multiplier_entries",
    "plans",
    "payments",
    "subscriptions",
    "notification_history",
    "activity_log",
    "schema_migrations",
    "deliveries",
    "token_prices",
}


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


async def _recorded(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [row["version"] for row in rows]


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


# ------------------------------------------------------------------ the real migrations


def test_migrations_dir_is_the_repo_folder() -> None:
    assert MIGRATIONS_DIR == REPO_ROOT / "migrations"
    versions = [m.version for m in discover_migrations()]
    assert versions[0] == "0001"


async def test_applies_on_a_fresh_database(database_url: str) -> None:
    assert ALL_VERSIONS[:3] == ["0001", "0002", "0003"]
    assert await migration_status(database_url) == [(v, False) for v in ALL_VERSIONS]
    applied = await apply_migrations(database_url)
    assert applied == ALL_VERSIONS
    assert CORE_TABLES <= await _tables(database_url)
    assert await migration_status(database_url) == [(v, True) for v in ALL_VERSIONS]

    conn = await asyncpg.connect(database_url)
    try:
        plans = {row["code"]: row for row in await conn.fetch("SELECT * FROM plans WHERE active")}
        row = await conn.fetchrow("SELECT name, checksum, applied_at FROM schema_migrations WHERE version = '0001'")
    finally:
        await conn.close()
    assert {"week", "month", "quarter"} <= set(plans)
    assert (plans["week"]["days"], plans["month"]["days"], plans["quarter"]["days"]) == (7, 30, 90)
    for plan in plans.values():
        assert plan["price_stars"] > 0 and plan["price_sol"] > 0 and plan["price_usd"] > 0
    assert row["name"] == "core_schema"
    assert len(row["checksum"]) == 64
    assert row["applied_at"] is not None


async def test_second_run_is_a_no_op(database_url: str) -> None:
    assert await apply_migrations(database_url) == ALL_VERSIONS
    assert await apply_migrations(database_url) == []
    assert await apply_migrations(database_url) == []
    assert await _recorded(database_url) == ALL_VERSIONS
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM plans") == 3  # seeded once
    finally:
        await conn.close()


async def test_two_processes_at_once_apply_each_migration_once(database_url: str) -> None:
    code = (
        "import asyncio, sys; from managers.migrations import apply_migrations; "
        "print(asyncio.run(apply_migrations(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = await asyncio.to_thread(proc.communicate, timeout=90)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    # Exactly one of them did the work; the other waited on the lock and found nothing to do.
    assert sorted(outputs) == [str(ALL_VERSIONS), "[]"]
    assert await _recorded(database_url) == ALL_VERSIONS
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM plans") == 3
    finally:
        await conn.close()


async def test_waits_for_the_lock_held_by_another_session(database_url: str) -> None:
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        with pytest.raises(MigrationError, match="waiting"):
            await apply_migrations(database_url, lock_timeout=0.2)

        task = asyncio.create_task(apply_migrations(database_url))
        # Wait (bounded by the test timeout, not by a guess) until it is blocked on the lock.
        while not await holder.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ):
            assert not task.done(), task
            await asyncio.sleep(0.02)
        assert not task.done()
        assert "schema_migrations" not in await _tables(database_url)
        await holder.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
        assert await task == ALL_VERSIONS
    finally:
        await holder.close()
    # The run released its lock: it can be taken at once.
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY) is True
    finally:
        await conn.close()


async def test_command_line(database_url: str) -> None:
    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "managers.migrations",
            *args,
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return proc.returncode, out.decode(), err.decode()

    code, out, _ = await run(database_url, "--status")
    assert code == 0 and "0001  pending" in out
    code, out, _ = await run(database_url)
    assert code == 0 and "applied: 0001" in out
    code, out, _ = await run(database_url)
    assert code == 0 and "up to date" in out


# ------------------------------------------------------------------ the runner, on its own files


async def test_applies_in_numeric_order_and_later_additions(database_url: str, tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "m",
        {
            "1_a.sql": "CREATE TABLE a (id int PRIMARY KEY);",
            "2_b.sql": "CREATE TABLE b (id int REFERENCES a (id));",
            "10_c.sql": "CREATE TABLE c (id int); ALTER TABLE b ADD COLUMN c_id int;",
            "README.md": "not a migration",
        },
    )
    assert await apply_migrations(database_url, folder) == ["1", "2", "10"]
    _write(folder, {"11_d.sql": "CREATE TABLE d (id int);"})
    assert await migration_status(database_url, folder) == [
        ("1", True),
        ("2", True),
        ("10", True),
        ("11", False),
    ]
    assert await apply_migrations(database_url, folder) == ["11"]
    assert {"a", "b", "c", "d"} <= await _tables(database_url)


async def test_changed_applied_migration_is_refused(database_url: str, tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "m",
        {
            "0001_first.sql": "CREATE TABLE first (id int);",
            "0002_second.sql": "CREATE TABLE second (id int);",
        },
    )
    assert await apply_migrations(database_url, folder) == ["0001", "0002"]
    (folder / "0001_first.sql").write_text("CREATE TABLE first (id bigint);")
    _write(folder, {"0003_third.sql": "CREATE TABLE third (id int);"})
    with pytest.raises(MigrationError, match="0001_first.sql") as info:
        await apply_migrations(database_url, folder)
    assert "changed" in str(info.value)
    # Nothing after it ran either.
    assert "third" not in await _tables(database_url)
    assert await _recorded(database_url) == ["0001", "0002"]


async def test_line_endings_do_not_change_the_checksum(database_url: str, tmp_path: Path) -> None:
    folder = _write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);\nSELECT 1;\n"})
    assert await apply_migrations(database_url, folder) == ["0001"]
    (folder / "0001_a.sql").write_bytes(b"CREATE TABLE a (id int);\r\nSELECT 1;\r\n")
    assert await apply_migrations(database_url, folder) == []


async def test_failing_migration_rolls_back_and_names_the_file(database_url: str, tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "m",
        {
            "0001_ok.sql": "CREATE TABLE ok (id int);",
            "0002_broken.sql": "CREATE TABLE half (id int);\nINSERT INTO no_such_table VALUES (1);\n",
            "0003_later.sql": "CREATE TABLE later (id int);",
        },
    )
    with pytest.raises(MigrationError) as info:
        await apply_migrations(database_url, folder)
    message = str(info.value)
    assert "0002_broken.sql" in message
    assert "no_such_table" in message  # the SQL error
    assert "line 2" in message
    tables = await _tables(database_url)
    assert "ok" in tables
    assert "half" not in tables  # rolled back with the failing statement
    assert "later" not in tables  # nothing after the failure ran
    assert await _recorded(database_url) == ["0001"]

    # Fixed, the run picks up where it stopped.
    (folder / "0002_broken.sql").write_text("CREATE TABLE half (id int);")
    assert await apply_migrations(database_url, folder) == ["0002", "0003"]


async def test_misnamed_and_duplicate_files_are_refused(database_url: str, tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad", {"0001_a.sql": "SELECT 1;", "create_things.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="create_things.sql"):
        await apply_migrations(database_url, bad)
    dup = _write(tmp_path / "dup", {"0001_a.sql": "SELECT 1;", "1_b.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="same number"):
        await apply_migrations(database_url, dup)
    with pytest.raises(MigrationError, match="not found"):
        await apply_migrations(database_url, tmp_path / "missing")


# ------------------------------------------------------------------ the core schema itself


@pytest.fixture
async def core(database_url: str):
    await apply_migrations(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def test_updated_at_trigger(core: asyncpg.Connection) -> None:
    old = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    user_id = await core.fetchval(
        "INSERT INTO users (telegram_id, username, created_at, updated_at) VALUES (42, 'alice', $1, $1) RETURNING id",
        old,
    )
    # Writing identical values is not a change.
    await core.execute("UPDATE users SET username = 'alice' WHERE id = $1", user_id)
    assert await core.fetchval("SELECT updated_at FROM users WHERE id = $1", user_id) == old

    await core.execute("UPDATE users SET username = 'alice2' WHERE id = $1", user_id)
    row = await core.fetchrow("SELECT created_at, updated_at FROM users WHERE id = $1", user_id)
    assert row["created_at"] == old
    assert row["updated_at"] > old

    # Every table with updated_at has the trigger.
    tables = {
        r["table_name"]
        for r in await core.fetch(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name = 'updated_at'"
        )
    }
    triggered = {
        r["tgrelid"]
        for r in await core.fetch(
            "SELECT tgrelid::regclass::text AS tgrelid FROM pg_trigger t "
            "JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname = 'set_updated_at'"
        )
    }
    assert tables and tables == triggered


async def _seed(conn: asyncpg.Connection) -> tuple[int, int]:
    user_a = await conn.fetchval("INSERT INTO users (telegram_id) VALUES (1001) RETURNING id")
    user_b = await conn.fetchval("INSERT INTO users (telegram_id) VALUES (1002) RETURNING id")
    await conn.execute("INSERT INTO tokens (address, symbol) VALUES ('Tok1', 'T1')")
    await conn.execute(
        "INSERT INTO channels (id, name, win_rate, avg_gain, calls) VALUES "
        "('-1001', 'Alpha', 0.41, 2.7, 118), ('-1002', 'Beta', NULL, NULL, NULL)"
    )
    return user_a, user_b


async def test_unique_constraints_reject_duplicates(core: asyncpg.Connection) -> None:
    user_a, user_b = await _seed(core)
    called = dt.datetime(2026, 11, 20, 10, 1, 30, tzinfo=dt.UTC)

    await core.execute("INSERT INTO calls (token_address, channel_id, called_at) VALUES ('Tok1', '-1001', $1)", called)
    await core.execute("INSERT INTO calls (token_address, channel_id, called_at) VALUES ('Tok1', '-1002', $1)", called)
    with pytest.raises(asyncpg.UniqueViolationError):
        await core.execute(
            "INSERT INTO calls (token_address, channel_id, called_at) VALUES ('Tok1', '-1001', $1)", called
        )

    alert_id = await core.fetchval(
        "INSERT INTO alerts (user_id, token_address, price_usd, channel_ids) "
        "VALUES ($1, 'Tok1', 0.00004125, ARRAY['-1001']) RETURNING id",
        user_a,
    )
    await core.execute("INSERT INTO alerts (user_id, token_address) VALUES ($1, 'Tok1')", user_b)
    with pytest.raises(asyncpg.UniqueViolationError):
        await core.execute("INSERT INTO alerts (user_id, token_address) VALUES ($1, 'Tok1')", user_a)
    # The idiomatic exactly-once insert.
    status = await core.execute(
        "INSERT INTO alerts (user_id, token_address) VALUES ($1, 'Tok1') "
        "ON CONFLICT (user_id, token_address) DO NOTHING",
        user_a,
    )
    assert status == "INSERT 0 0"

    await core.execute(
        "INSERT INTO multiplier_entries (alert_id, user_id, token_address, multiplier) VALUES ($1, $2, 'Tok1', 2)",
        alert_id,
        user_a,
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await core.execute(
            "INSERT INTO multiplier_entries (alert_id, user_id, token_address, multiplier) "
            "VALUES ($1, $2, 'Tok1', 2.0)",
            alert_id,
            user_a,
        )

    plan_id = await core.fetchval("SELECT id FROM plans WHERE code = 'month'")
    insert_payment = (
        "INSERT INTO payments (user_id, plan_id, rail, external_id, amount, currency) "
        "VALUES ($1, $2, $3, $4, 750, 'XTR')"
    )
    await core.execute(insert_payment, user_a, plan_id, "stars", "charge-1")
    await core.execute(insert_payment, user_a, plan_id, "nowpayments", "charge-1")  # other rail: fine
    with pytest.raises(asyncpg.UniqueViolationError):
        await core.execute(insert_payment, user_b, plan_id, "stars", "charge-1")

    # One subscription per payment.
    payment_id = await core.fetchval("SELECT id FROM payments WHERE rail = 'stars'")
    insert_sub = (
        "INSERT INTO subscriptions (user_id, plan_id, payment_id, source, expires_at) "
        "VALUES ($1, $2, $3, 'payment', now() + interval '30 days')"
    )
    await core.execute(insert_sub, user_a, plan_id, payment_id)
    with pytest.raises(asyncpg.UniqueViolationError):
        await core.execute(insert_sub, user_a, plan_id, payment_id)

    with pytest.raises(asyncpg.UniqueViolationError):
        await core.execute("INSERT INTO users (telegram_id) VALUES (1001)")


async def test_check_constraints_and_cascades(core: asyncpg.Connection) -> None:
    user_a, _ = await _seed(core)
    with pytest.raises(asyncpg.CheckViolationError):
        await core.execute("UPDATE users SET status = 'deleted' WHERE id = $1", user_a)
    with pytest.raises(asyncpg.CheckViolationError):
        await core.execute("UPDATE users SET role = 'owner' WHERE id = $1", user_a)
    with pytest.raises(asyncpg.CheckViolationError):
        await core.execute("UPDATE channels SET win_rate = 41 WHERE id = '-1001'")  # a share, not %
    with pytest.raises(asyncpg.CheckViolationError):
        await core.execute("INSERT INTO payments (rail, external_id) VALUES ('paypal', 'x')")
    with pytest.raises(asyncpg.CheckViolationError):
        await core.execute("INSERT INTO plans (code, title, days) VALUES ('zero', 'Zero', 0)")
    with pytest.raises(asyncpg.CheckViolationError):
        await core.execute(
            "INSERT INTO subscriptions (user_id, source, expires_at) VALUES ($1, 'gift', now() + interval '1 day')",
            user_a,
        )

    # Settings and their history go with the user; payments stay, unlinked.
    await core.execute("INSERT INTO user_settings (user_id, filters) VALUES ($1, '{\"min_mcap\": 50000}')", user_a)
    await core.execute(
        "INSERT INTO settings_history (user_id, name, old_value, new_value, source) "
        "VALUES ($1, 'min_mcap', NULL, '50000', 'command')",
        user_a,
    )
    await core.execute(
        "INSERT INTO payments (user_id, rail, external_id, status) VALUES ($1, 'sol', 'sig1', 'confirmed')",
        user_a,
    )
    await core.execute("DELETE FROM users WHERE id = $1", user_a)
    assert await core.fetchval("SELECT count(*) FROM user_settings") == 0
    assert await core.fetchval("SELECT count(*) FROM settings_history") == 0
    assert await core.fetchval("SELECT user_id FROM payments WHERE external_id = 'sig1'") is None


async def test_hot_query_indexes_exist(core: asyncpg.Connection) -> None:
    rows = await core.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    defs = {row["indexname"]: row["indexdef"] for row in rows}
    assert "WHERE" in defs["users_receiving_idx"]
    assert "WHERE active" in defs["plans_active_idx"]
    assert "revoked_at IS NULL" in defs["subscriptions_user_live_idx"]
    assert "called_at" in defs["calls_called_at_idx"]
    assert "token_address" in defs["alerts_token_idx"]
    assert "sent_at DESC" in defs["notification_history_user_idx"]
    assert "created_at" in defs["activity_log_created_idx"]
    assert "actor_telegram_id" in defs["activity_log_actor_idx"]
