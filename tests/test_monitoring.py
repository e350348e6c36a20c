"""Monitoring speaks first: the admins hear of an outage once, and once when it is over; a start
is announced with how the previous run ended; the heartbeat and Redis latency reach their logs."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bot.config import Settings
from bot.runtime import Runtime
from managers.redis_manager import RedisOptions
from standins.feed_server import FeedServer
from standins.tcp_proxy import TcpProxy
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, SentRecord
from tests.test_runtime import free_port, through
from tests.test_token_pipeline_e2e import ADMIN as FEED_ADMIN
from tests.test_token_pipeline_e2e import bot_on_feed

ADMINS = (7001, 7002)
# The breaker probes again within a fraction of a second, so recovery is seen promptly.
QUICK_REDIS = RedisOptions(cooldown=0.1, max_cooldown=0.3, reconnect_base=0.05, reconnect_max=0.2, failure_threshold=2)


def settings(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path, **extra: object
) -> Settings:
    return Settings(
        _env_file=None,
        bot_token=DEFAULT_TOKEN,
        telegram_api_url=telegram.base_url,
        redis_url=redis_url,
        database_url=database_url,
        http_port=free_port(),
        log_dir=tmp_path / "logs",
        admin_ids=list(ADMINS),
        monitor_interval_seconds=0.05,
        **extra,
    )


def to_admin(admin: int, words: str):  # type: ignore[no-untyped-def]
    def accept(record: SentRecord) -> bool:
        return record.chat_id == admin and words in (record.text or "")

    accept.__name__ = f"to {admin}: {words!r}"
    return accept


def count(telegram: FakeTelegramServer, admin: int, words: str) -> int:
    return sum(1 for record in telegram.sent if to_admin(admin, words)(record))


async def test_redis_down_past_the_threshold_tells_each_admin_once_and_once_when_it_is_back(
    redis_url: str, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alertbot")
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    async with FakeTelegramServer() as telegram:
        runtime = Runtime(
            settings(telegram, through(proxy, redis_url), database_url, tmp_path, monitor_redis_down_seconds=0.3),
            redis_options=QUICK_REDIS,
        )
        await runtime.start()
        try:
            await runtime.begin_receiving()
            for admin in ADMINS:
                await telegram.wait_for_sent(to_admin(admin, "Bot started"), timeout=10)
            await proxy.stop_forwarding()  # Redis goes away (the machine's Redis itself is left alone)
            for admin in ADMINS:
                await telegram.wait_for_sent(to_admin(admin, "Redis unhealthy"), timeout=20)
            assert runtime.monitor.watches["redis"].open
            await proxy.resume()
            for admin in ADMINS:
                await telegram.wait_for_sent(to_admin(admin, "Redis is back"), timeout=20)
            # Room for a repeat to show up, if there were one: a dozen more checks, Redis healthy.
            checks = runtime.monitor.counts.checks
            await runtime.monitor.wait_for_checks(checks + 12, timeout=20)
            await runtime.drained()
        finally:
            await runtime.stop()
            await proxy.close()
    for admin in ADMINS:
        assert count(telegram, admin, "Redis unhealthy") == 1
        assert count(telegram, admin, "Redis is back") == 1
        assert count(telegram, admin, "Bot started") == 1
    logs = {(r.name, r.getMessage().split(":")[0]) for r in caplog.records}
    assert ("alertbot.redis.performance", "health check") in logs  # latency, each check
    assert ("alertbot.monitor", "heartbeat") in logs
    heartbeat = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("heartbeat"))
    assert "queue 0/" in heartbeat and "outbox" in heartbeat and "memory" in heartbeat


async def test_a_start_says_how_the_previous_run_ended_in_the_admins_language(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    async with FakeTelegramServer() as telegram:
        first = Runtime(settings(telegram, redis_url, database_url, tmp_path), consumer_name="node-a")
        await first.start()
        try:
            # The second admin speaks Russian: the next start tells them in Russian.
            await first.store.register(ADMINS[1], username=None, first_name="Ru", language_code="ru")
            await first.index_sync.settle()
            for admin in ADMINS:
                await telegram.wait_for_sent(to_admin(admin, "First start"), timeout=10)
        finally:
            await first.stop()
        second = Runtime(settings(telegram, redis_url, database_url, tmp_path), consumer_name="node-a")
        await second.start()
        try:
            await telegram.wait_for_sent(to_admin(ADMINS[0], "previous run stopped cleanly"), timeout=10)
            await telegram.wait_for_sent(to_admin(ADMINS[1], "завершился штатно"), timeout=10)
        finally:
            await second.stop()


async def test_429s_that_keep_coming_are_one_incident_and_a_quiet_window_ends_it(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    async with FakeTelegramServer() as telegram:
        # The next three sends are refused with 429: the start notices themselves run into them.
        telegram.force_retry_after(1, count=3, methods=["sendMessage"])
        runtime = Runtime(
            settings(
                telegram,
                redis_url,
                database_url,
                tmp_path,
                monitor_rate_limited_count=3,
                monitor_burst_window_seconds=3,
            )
        )
        await runtime.start()
        try:
            for admin in ADMINS:
                await telegram.wait_for_sent(to_admin(admin, "Telegram keeps answering 429"), timeout=20)
                await telegram.wait_for_sent(to_admin(admin, "No 429"), timeout=20)
            checks = runtime.monitor.counts.checks
            await runtime.monitor.wait_for_checks(checks + 12, timeout=20)
            await runtime.drained()
        finally:
            await runtime.stop()
    assert telegram.stats.rejected_429 == 3
    for admin in ADMINS:
        assert count(telegram, admin, "Telegram keeps answering 429") == 1
        assert count(telegram, admin, "No 429") == 1
        assert count(telegram, admin, "Bot started") == 1  # retried until Telegram took it


async def test_a_feed_down_past_its_threshold_is_told_once_and_its_return_once(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    async with FakeTelegramServer() as telegram, FeedServer([]) as feed:
        async with bot_on_feed(
            feed,
            telegram,
            redis_url,
            database_url,
            tmp_path,
            [],
            monitor_interval_seconds=0.05,
            monitor_stream_down_seconds=0.3,
        ) as runtime:
            feed.refuse_websocket()
            await feed.drop_connections()
            await telegram.wait_for_sent(to_admin(FEED_ADMIN, "Feed feed down"), timeout=20)
            feed.refuse_websocket(False)
            await telegram.wait_for_sent(to_admin(FEED_ADMIN, "Feed feed is back"), timeout=20)
            checks = runtime.monitor.counts.checks
            await runtime.monitor.wait_for_checks(checks + 12, timeout=20)
    assert count(telegram, FEED_ADMIN, "Feed feed down") == 1
    assert count(telegram, FEED_ADMIN, "Feed feed is back") == 1


async def test_memory_past_its_share_of_the_limit_is_told_once(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    async with FakeTelegramServer() as telegram:
        # A 1 MB limit: the process is past 80% of it from the first check on, and stays there.
        runtime = Runtime(settings(telegram, redis_url, database_url, tmp_path, monitor_memory_limit_mb=1))
        await runtime.start()
        try:
            for admin in ADMINS:
                [told] = await telegram.wait_for_sent(to_admin(admin, "Memory at"), timeout=10)
                assert "of 1 MB" in (told.text or "")
            checks = runtime.monitor.counts.checks
            await runtime.monitor.wait_for_checks(checks + 12, timeout=20)
            await runtime.drained()
        finally:
            await runtime.stop()
    for admin in ADMINS:
        assert count(telegram, admin, "Memory at") == 1
