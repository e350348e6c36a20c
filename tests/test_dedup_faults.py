"""Exactly-once alerts under faults, through the real runtime: odd channel ids, Redis refusing the
claim, Redis gone for 30 s. Messages are counted at the Bot API double, claims in Redis itself."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from domain.events import CallEvent, Channel, ChannelStatsEvent, TokenInfo
from domain.filters import Filters
from domain.messages import Alert
from managers.redis_manager import RedisManager
from services.outbox import Outbox
from services.sender import Lane, MessageSender
from standins.feed_server import FeedServer
from standins.feedgen import load_sample
from standins.oracle import expected_alerts
from standins.tcp_proxy import TcpProxy
from standins.telegram import FakeTelegramServer
from tests.test_token_pipeline_e2e import MEMBERS, Member, alerts_by_chat, as_subscribers, bot_on_feed, filters

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
ANY_A, ANY_B = Member(301, Filters()), Member(302, Filters())
TWO_CHANNELS = Member(303, filters(min_channels="2"))
MARKER_CHANNEL = "-9999"  # a channel statistics event after a call proves its batch was processed


def address(letter: str) -> str:
    return letter * 40 + "pump"


def call(token: str, channel: str, minute: int) -> CallEvent:
    info = TokenInfo(
        address=token,
        symbol="TKN",
        name="Token",
        market_cap_usd=80_000.0,
        liquidity_usd=9_000.0,
        holders=300,
        created_at=T0 - timedelta(minutes=20),
    )
    return CallEvent(
        token=info,
        channel=Channel(channel),
        called_at=T0 + timedelta(minutes=minute),
        received_at=time.time(),
    )


def per_chat(telegram: FakeTelegramServer, tokens: set[str]) -> dict[int, Counter[str]]:
    """How many times each chat was sent each token (a digest counts for every token it carries)."""
    return {chat: Counter(found) for chat, found in alerts_by_chat(telegram, tokens).items()}


async def until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await _value(predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:.0f} s: {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def redis_direct(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of our own on the test database, never through the bot's manager or a proxy."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def claimed(client: aioredis.Redis, token: str) -> set[int]:
    return {int(member) for member in await client.smembers(f"processed_token:{token}")}


async def test_odd_channel_ids_cost_no_call_in_their_batch_its_alerts(
    redis_url: str,
    database_url: str,
    tmp_path: Path,
    redis_direct: aioredis.Redis,
) -> None:
    tokens = [address(letter) for letter in "ABCDEF"]
    odd = ["a=b", "x,y", "line\nbreak", "k" * 1024, "=,\n" + "z" * 1024]
    batch = [
        call(tokens[0], "-1001", 0),
        call(tokens[0], odd[0], 1),  # same token: the odd one is a second caller
        call(tokens[1], "-1002", 2),
        call(tokens[2], odd[1], 3),
        call(tokens[2], "-1003", 4),
        call(tokens[3], odd[2], 5),
        call(tokens[4], odd[3], 6),
        call(tokens[5], "-1004", 7),
        call(tokens[5], odd[4], 8),
    ]
    expected = {
        ANY_A.telegram_id: set(tokens),
        ANY_B.telegram_id: set(tokens),
        TWO_CHANNELS.telegram_id: {tokens[0], tokens[2], tokens[5]},
    }
    async with FakeTelegramServer() as telegram, FeedServer([]) as feed:
        async with bot_on_feed(
            feed, telegram, redis_url, database_url, tmp_path, [ANY_A, ANY_B, TWO_CHANNELS]
        ) as runtime:
            for event in batch:  # no await in between that yields: the worker takes them as one batch
                await runtime.queue.put(event)
            wanted = sum(len(t) for t in expected.values())

            async def all_sent() -> bool:
                return sum(sum(c.values()) for c in per_chat(telegram, set(tokens)).values()) >= wanted

            await until(all_sent, 60, f"{wanted} alerts at the Bot API")
            await runtime.drained(timeout=60)
            got = per_chat(telegram, set(tokens))
            for chat, wanted_tokens in expected.items():
                assert got.get(chat, Counter()) == Counter(wanted_tokens), chat
            # Every subscriber claimed for a token has had that token's alert, and only those.
            for token in tokens:
                alerted = {chat for chat, counts in got.items() if counts[token]}
                assert await claimed(redis_direct, token) == alerted, token


@pytest.mark.parametrize("broken", ["outbox", "claims"])
async def test_a_refused_claim_leaves_nothing_behind_and_the_call_alerts_once_redis_accepts_it(
    redis_url: str,
    database_url: str,
    tmp_path: Path,
    redis_direct: aioredis.Redis,
    broken: str,
) -> None:
    token, other = address("G"), address("H")
    # A key of the wrong type makes Redis itself refuse the claim (WRONGTYPE): for every call when
    # it is the outbox stream, for this token's calls when it is the token's claims.
    wrong_key = "outbox:alerts" if broken == "outbox" else f"processed_token:{token}"
    async with FakeTelegramServer() as telegram, FeedServer([]) as feed:
        async with bot_on_feed(feed, telegram, redis_url, database_url, tmp_path, [ANY_A, ANY_B]) as runtime:
            await redis_direct.delete(wrong_key)
            await redis_direct.set(wrong_key, "not what the bot expects")
            await runtime.queue.put(call(token, "-1001", 0))
            await runtime.queue.put(call(other, "-1002", 1))
            await runtime.queue.put(ChannelStatsEvent(Channel(MARKER_CHANNEL, "marker", win_rate=0.5)))

            async def batch_processed() -> bool:
                return bool(await redis_direct.exists(f"channel:{MARKER_CHANNEL}:info"))

            await until(batch_processed, 30, "the calls' batch processed")
            # Refused: nothing claimed, recorded, queued or sent for the token.
            if broken == "outbox":
                assert await claimed(redis_direct, token) == set()
                assert await redis_direct.type("outbox:alerts") == "string"
            else:
                assert await redis_direct.get(wrong_key) == "not what the bot expects"
                entries = await redis_direct.xrange("outbox:alerts") or []
                assert not [fields for _, fields in entries if fields and fields.get("token") == token]
            assert not await redis_direct.exists(f"token_calls:{token}")
            assert per_chat(telegram, {token}) == {}
            if broken == "claims":  # the other call of the batch went through
                await telegram.wait_for_sent(lambda r: other in (r.raw_text or ""), count=2, timeout=30)
            await redis_direct.delete(wrong_key)  # the operator repairs the key: the retry goes through

            async def token_sent() -> bool:
                return sum(c[token] for c in per_chat(telegram, {token}).values()) >= 2

            await until(token_sent, 90, "the retried call's alerts")
            await runtime.drained(timeout=60)
            got = per_chat(telegram, {token, other})
            for member in (ANY_A, ANY_B):
                assert got[member.telegram_id] == Counter({token: 1, other: 1})
            assert await claimed(redis_direct, token) == {ANY_A.telegram_id, ANY_B.telegram_id}


@pytest.mark.timeout(420)
async def test_redis_gone_for_30_s_during_the_replay_every_alert_once_and_the_claims_written_back(
    redis_url: str,
    database_url: str,
    tmp_path: Path,
    redis_direct: aioredis.Redis,
) -> None:
    sample = load_sample()
    first, second = len(sample) // 3, 2 * len(sample) // 3
    now = datetime.now(UTC)
    subscribers = as_subscribers(MEMBERS, now)
    expected = expected_alerts(sample, subscribers, now)
    before = expected_alerts(sample[:first], subscribers, now)
    by_outage_end = expected_alerts(sample[:second], subscribers, now)
    during = {(token, chat) for chat, tokens in by_outage_end.items() for token in tokens if token not in before[chat]}
    assert during, "the outage's part of the feed must alert someone"
    tokens = {f["token"]["address"] for f in sample if f["type"] == "call"}
    parts = urlsplit(redis_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        through_proxy = proxy.url("redis", parts.path)
        async with FakeTelegramServer() as telegram, FeedServer([]) as feed:
            # One message per alert, so each is counted where it arrives (no digests).
            async with bot_on_feed(
                feed,
                telegram,
                through_proxy,
                database_url,
                tmp_path,
                MEMBERS,
                alert_digest_threshold=100,
                alert_max_delay=3600,
            ) as runtime:
                [stream] = runtime.streams
                assert runtime.workers is not None

                async def processed(frames: int) -> None:
                    await stream.wait_for(lambda: stream.stats.frames >= frames, timeout=60)
                    await until(
                        lambda: runtime.queue.qsize() == 0 and bool(runtime.workers and runtime.workers.idle),
                        60,
                        "frames processed",
                    )

                await feed.push_many(sample[:first])
                await processed(first)
                await runtime.drained(timeout=60)
                # Telegram holds every send until Redis is back, so the alerts of the outage are
                # still unsent then and must move from memory to the stream.
                telegram.force_retry_after(2, duration=3600, methods=["sendMessage", "sendPhoto"])
                stopped = time.monotonic()
                await proxy.stop_forwarding()
                outage = sample[first:second]
                for start in range(0, len(outage), len(outage) // 25 + 1):  # the feed goes on all through it
                    await feed.push_many(outage[start : start + len(outage) // 25 + 1])
                    await asyncio.sleep(1.0)
                await processed(second)
                await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
                await proxy.resume()
                await feed.push_many(sample[second:])

                async def written_back() -> bool:
                    for token, chat in during:
                        if chat not in await claimed(redis_direct, token):
                            return False
                    return True

                await until(written_back, 120, "the outage's claims in the processed sets")
                assert await redis_direct.xlen("outbox:alerts") > 0  # the unsent alerts, now durable
                telegram.clear_forced_errors()
                await processed(len(sample))
                await runtime.drained(timeout=120)
                got = alerts_by_chat(telegram, tokens)
                for member in MEMBERS:
                    assert sorted(got.get(member.telegram_id, [])) == sorted(expected[member.telegram_id]), member
        # A fresh process given the same calls: the claims it finds in Redis say everyone had them.
        async with FakeTelegramServer() as telegram, FeedServer(sample) as feed:
            async with bot_on_feed(feed, telegram, through_proxy, database_url, tmp_path, MEMBERS) as runtime:
                [stream] = runtime.streams
                await stream.wait_for(lambda: stream.stats.frames >= len(sample), timeout=60)
                await runtime.drained(timeout=60)
                assert alerts_by_chat(telegram, tokens) == {}


async def _value(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else bool(value)


async def test_while_redis_is_down_publishing_waits_for_room_in_the_direct_path(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy, FakeTelegramServer() as telegram:
        redis = RedisManager.from_url(proxy.url("redis", parts.path))
        await redis.start()
        bot = telegram.create_bot()
        sender = MessageSender(bot)
        await sender.start()
        try:
            await proxy.stop_forwarding()
            while redis.available:  # the breaker learns that Redis is gone
                await redis.ping()
            telegram.force_retry_after(1, duration=3600, methods=["sendMessage"])  # nothing gets answered
            queue = Outbox(redis, None, sender, consumer="sender-a", direct_limit=3)
            alerts = [
                Alert(token=address("D"), chat_id=500 + i, html=f"alert {i}", lane=Lane.PAID_ALERT) for i in range(5)
            ]
            await queue.publish(alerts[:3])  # the direct path is full now
            more = asyncio.create_task(queue.publish(alerts[3:]))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not more.done() and sender.pending() == 3  # waiting, not piling up in memory
            telegram.clear_forced_errors()
            await asyncio.wait_for(more, 30)
            await telegram.wait_for_sent(5, timeout=30)
            assert sorted(record.chat_id for record in telegram.sent) == [500 + i for i in range(5)]
        finally:
            await sender.stop(drain=False)
            await bot.session.close()
            await redis.close()


async def test_alerts_sent_while_redis_is_down_are_recorded_in_deliveries(redis_url: str, database_url: str) -> None:
    from managers.migrations import apply_migrations
    from managers.postgres import PostgresManager

    await apply_migrations(database_url)
    postgres = PostgresManager(database_url, min_size=1, max_size=2)
    await postgres.start()
    parts = urlsplit(redis_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy, FakeTelegramServer() as telegram:
        redis = RedisManager.from_url(proxy.url("redis", parts.path))
        await redis.start()
        bot = telegram.create_bot()
        sender = MessageSender(bot)
        await sender.start()
        queue = Outbox(redis, postgres, sender, consumer="sender-a")
        await queue.start()
        try:
            await proxy.stop_forwarding()
            while redis.available:  # the breaker learns that Redis is gone
                await redis.ping()
            await queue.publish(
                [Alert(token=address("R"), chat_id=700 + i, html=f"alert {i}", lane=Lane.PAID_ALERT) for i in range(4)]
            )
            await telegram.wait_for_sent(4, timeout=30)

            async def recorded() -> bool:
                return await postgres.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == 4

            await until(recorded, 30, "the direct sends' rows")
        finally:
            await queue.stop_reading()
            await sender.stop(drain=False)
            await queue.close()
            await bot.session.close()
            await redis.close()
            await postgres.close()
