"""SubscriberStore against real Redis and PostgreSQL: caches, Redis hash, PostgreSQL, retry queue."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from domain.filters import Filters, set_filter, unset_filter
from managers.redis_manager import RedisManager
from services.cache import CacheRegistry
from services.subscribers import (
    RETRY_KEY,
    SUBSCRIBERS_KEY,
    SubscriberStore,
    UnknownSubscriber,
    subscriber_key,
)
from tests.conftest import Stores
from tests.plans import grant, revoke

pytestmark = pytest.mark.timeout(60)

ADMIN = 1000
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def make_store(stores: Stores, clock: Callable[[], datetime] = lambda: NOW) -> SubscriberStore:
    return SubscriberStore(stores.redis, stores.postgres, stores.caches, frozenset({ADMIN}), clock=clock)


@pytest.fixture
def store(stores: Stores) -> SubscriberStore:
    return make_store(stores)


async def register(store: SubscriberStore, telegram_id: int, language_code: str = "en") -> None:
    await store.register(telegram_id, username=f"user{telegram_id}", first_name="Ann", language_code=language_code)


async def test_register_and_get_round_trip(stores: Stores, store: SubscriberStore) -> None:
    created = await store.register(42, username="alice", first_name="Alice", language_code="ru-RU")
    assert (created.telegram_id, created.username, created.first_name, created.language) == (42, "alice", "Alice", "ru")
    assert created.filters == Filters() and not created.paused and created.status == "active"
    assert not created.is_admin and created.plan_expires_at is None

    stored = await stores.redis.hgetall(subscriber_key(42))
    assert stored["status"] == "active" and stored["filters"] == "{}" and stored["language"] == "ru"
    assert "42" in await stores.redis.client.smembers(SUBSCRIBERS_KEY)

    # A second process (its own caches) reads the same subscriber.
    other = SubscriberStore(stores.redis, stores.postgres, CacheRegistry(stores.redis), frozenset({ADMIN}))
    assert await other.get(42) == created
    assert await store.get(999) is None

    # A returning user keeps their filters and the language they had.
    await store.update_filters(42, set_filter(Filters(), "min_holders", "100"), name="min_holders")
    again = await store.register(42, username="alice2", first_name="Alice", language_code="en")
    assert again.filters.min_holders == 100 and again.username == "alice2" and again.language == "ru"
    assert await stores.postgres.fetchval("SELECT count(*) FROM users") == 1


async def test_admins_come_from_admin_ids(stores: Stores, store: SubscriberStore) -> None:
    admin = await store.register(ADMIN, username=None, first_name=None, language_code=None)
    assert admin.is_admin and admin.receives_alerts(NOW) and admin.language == "en"
    assert await stores.postgres.fetchval("SELECT role FROM users WHERE telegram_id = $1", ADMIN) == "admin"
    assert await stores.redis.hget(subscriber_key(ADMIN), "is_admin") == "1"


async def test_update_filters_writes_redis_postgres_history_and_log(
    stores: Stores, store: SubscriberStore, caplog: pytest.LogCaptureFixture
) -> None:
    await register(store, 7)
    with caplog.at_level(logging.INFO, logger="alertbot.settings"):
        first = await store.update_filters(7, set_filter(Filters(), "min_mcap", "50k"), name="min_mcap")
        second = await store.update_filters(7, set_filter(first.filters, "min_mcap", "1.5m"), name="min_mcap")
        await store.update_filters(7, unset_filter(second.filters, "min_mcap"), name="min_mcap", source="menu")

    assert json.loads(await stores.redis.hget(subscriber_key(7), "filters")) == {}
    assert (await store.get(7)).filters == Filters()
    history = await stores.postgres.fetch(
        """SELECT h.name, h.old_value, h.new_value, h.source FROM settings_history h
           JOIN users u ON u.id = h.user_id WHERE u.telegram_id = 7 ORDER BY h.id"""
    )
    assert [tuple(row) for row in history] == [
        ("min_mcap", None, 50000.0, "command"),
        ("min_mcap", 50000.0, 1500000.0, "command"),
        ("min_mcap", 1500000.0, None, "menu"),
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "alertbot.settings"]
    assert len(lines) == 3 and "user 7 min_mcap: null -> 50000.0" in lines[0]

    await store.update_filters(7, set_filter(Filters(), "channels", "@Alpha, -100123"), name="channels")
    pg_filters = await stores.postgres.fetchval(
        "SELECT s.filters FROM user_settings s JOIN users u ON u.id = s.user_id WHERE u.telegram_id = 7"
    )
    assert pg_filters == {"channels": ["-100123", "@alpha"]}
    with pytest.raises(UnknownSubscriber):
        await store.update_filters(8, Filters(min_holders=1), name="min_holders")


async def test_get_reads_postgres_when_redis_lost_the_hash_and_refills_it(
    stores: Stores, store: SubscriberStore
) -> None:
    await register(store, 7, "ru")
    await store.update_filters(7, set_filter(Filters(), "max_age", "2h"), name="max_age")
    await grant(store, 7, 30)
    expected = await store.get(7)
    await stores.redis.delete(subscriber_key(7))

    fresh = SubscriberStore(stores.redis, stores.postgres, CacheRegistry(stores.redis), frozenset({ADMIN}))
    assert await fresh.get(7) == expected
    stored = await stores.redis.hgetall(subscriber_key(7))
    assert json.loads(stored["filters"]) == {"max_age": 120} and stored["language"] == "ru"
    assert float(stored["plan_expires_at"]) == (NOW + timedelta(days=30)).timestamp()


async def test_grant_extends_from_the_current_expiry_or_from_now(stores: Stores) -> None:
    past = NOW - timedelta(days=100)
    await register(make_store(stores), 5)
    expired = await grant(make_store(stores), 5, 30, clock=lambda: past)
    assert expired == past + timedelta(days=30)

    store = make_store(stores)
    assert not (await store.get(5)).has_active_plan(NOW)
    first = await grant(store, 5, 10)  # the old plan ran out: count from now
    assert first == NOW + timedelta(days=10)
    second = await grant(store, 5, 30)  # still running: extend it
    assert second == NOW + timedelta(days=40)
    sub = await store.get(5)
    assert sub.plan_expires_at == second and sub.receives_alerts(NOW)
    assert float(await stores.redis.hget(subscriber_key(5), "plan_expires_at")) == second.timestamp()
    rows = await stores.postgres.fetch("SELECT source, granted_by FROM subscriptions")
    assert [tuple(r) for r in rows] == [("grant", ADMIN)] * 3

    with pytest.raises(UnknownSubscriber):
        await grant(store, 6, 10)
    assert await revoke(store, 5) is True
    assert not (await store.get(5)).receives_alerts(NOW)
    assert await revoke(store, 5) is False


async def test_receiving_is_admins_and_live_plans_only(stores: Stores) -> None:
    store = make_store(stores)
    for telegram_id in (ADMIN, 1, 2, 3, 4, 5, 6):
        await register(store, telegram_id)
    await grant(store, 1, 30)  # receives
    await grant(store, 2, 30)
    await store.set_paused(2, True)  # paused
    await grant(make_store(stores), 3, 30, clock=lambda: NOW - timedelta(days=60))  # expired
    await grant(store, 4, 30)
    await revoke(store, 4)  # revoked
    await grant(store, 5, 30)
    await stores.postgres.execute("UPDATE users SET status = 'banned' WHERE telegram_id = 5")  # banned
    # 6 never had a plan.

    receiving = await store.receiving()
    assert [s.telegram_id for s in receiving] == [1, ADMIN]
    by_id = {s.telegram_id: s for s in receiving}
    assert by_id[ADMIN].is_admin and by_id[1].plan_expires_at == NOW + timedelta(days=30)
    await store.set_paused(2, False)
    assert {s.telegram_id for s in await store.receiving()} == {1, 2, ADMIN}


async def test_on_change_fires_in_another_process(stores: Stores, store: SubscriberStore) -> None:
    await register(store, 7)
    # A second "process": its own Redis connection, cache registry and store.
    other_redis = RedisManager.from_url(stores.redis_url)
    await other_redis.start()
    other_caches = CacheRegistry(other_redis)
    await other_caches.start()
    try:
        other = SubscriberStore(other_redis, stores.postgres, other_caches, frozenset({ADMIN}))
        assert (await other.get(7)).filters == Filters()  # now cached over there
        changed: asyncio.Queue[int] = asyncio.Queue()
        other.on_change(changed.put_nowait)

        await store.update_filters(7, set_filter(Filters(), "min_holders", "50"), name="min_holders")
        assert await asyncio.wait_for(changed.get(), timeout=5) == 7
        assert (await other.get(7)).filters.min_holders == 50  # its cache was dropped

        await grant(store, 7, 3)
        assert await asyncio.wait_for(changed.get(), timeout=5) == 7
    finally:
        await other_caches.stop()
        await other_redis.close()


async def test_postgres_failure_keeps_the_change_and_writes_it_later(stores: Stores, store: SubscriberStore) -> None:
    await register(store, 7)
    await stores.postgres.close()  # PostgreSQL is gone for this process

    saved = await store.update_filters(7, set_filter(Filters(), "min_holders", "100"), name="min_holders")
    assert saved.filters.min_holders == 100
    assert (await store.get(7)).filters.min_holders == 100
    assert json.loads(await stores.redis.hget(subscriber_key(7), "filters")) == {"min_holders": 100}
    assert await store.pending_count() == 1
    assert await store.flush_pending() == 0  # still down: kept
    assert await stores.redis.client.llen(RETRY_KEY) == 1

    conn = await asyncpg.connect(stores.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM settings_history") == 0
        await stores.postgres.start()  # back
        await store.set_paused(7, True)  # the next successful write catches up
        assert await store.pending_count() == 0
        assert (
            await conn.fetchval(
                "SELECT s.filters::text FROM user_settings s JOIN users u ON u.id = s.user_id WHERE u.telegram_id = 7"
            )
            == '{"min_holders": 100}'
        )
        rows = await conn.fetch("SELECT name, old_value::text, new_value::text, changed_at FROM settings_history")
        # The deferred filter change keeps the moment it was made (the test's clock stands still).
        assert {tuple(row) for row in rows} == {("min_holders", None, "100", NOW), ("paused", "false", "true", NOW)}
        assert await conn.fetchval("SELECT paused FROM users WHERE telegram_id = 7") is True
    finally:
        await conn.close()


async def test_a_language_chosen_while_postgres_is_down_is_written_later(
    stores: Stores, store: SubscriberStore
) -> None:
    await register(store, 7)
    await stores.postgres.close()
    saved = await store.set_language(7, "ru")
    assert saved.language == "ru" and (await store.get(7)).language == "ru"
    assert await stores.redis.hget(subscriber_key(7), "language") == "ru"
    assert await store.pending_count() == 1

    await stores.postgres.start()
    assert await store.flush_pending() == 1
    assert await stores.postgres.fetchval("SELECT language FROM users WHERE telegram_id = 7") == "ru"
    row = await stores.postgres.fetchrow("SELECT name, old_value, new_value, source FROM settings_history")
    assert tuple(row) == ("language", "en", "ru", "menu")
    assert await store.set_language(7, "ru") == saved  # no change, nothing written
    assert await stores.postgres.fetchval("SELECT count(*) FROM settings_history") == 1


async def test_preferences_for_follow_ups_and_reports_are_kept_in_both_stores(
    stores: Stores, store: SubscriberStore
) -> None:
    await register(store, 9)
    sub = await store.get(9)
    assert sub is not None and sub.followup_min == 2 and sub.reports
    await store.set_preferences(9, followup_min=5, reports=False)
    row = await stores.postgres.fetchrow(
        "SELECT followup_min, reports FROM user_settings s JOIN users u ON u.id = s.user_id WHERE telegram_id = 9"
    )
    assert (row["followup_min"], row["reports"]) == (5, False)
    await stores.redis.delete(subscriber_key(9))
    fresh = SubscriberStore(stores.redis, stores.postgres, CacheRegistry(stores.redis), frozenset({ADMIN}))
    again = await fresh.get(9)
    assert again is not None and (again.followup_min, again.reports) == (5, False)
    names = [r["name"] for r in await stores.postgres.fetch("SELECT name FROM settings_history ORDER BY id")]
    assert names == ["followup_min", "reports"]
