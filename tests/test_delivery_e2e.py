"""Delivery through the whole runtime: gone subscribers, and replies ahead of a broadcast."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from domain.filters import Filters
from domain.messages import Alert
from services.sender import Lane
from standins.feed_server import FeedServer
from standins.telegram import FakeTelegramServer
from tests.test_token_pipeline_e2e import CHANNEL_FRAMES, FOLLOWER, Member, alerts_by_chat, bot_on_feed, call_frame

BLOCKER = Member(203, Filters())


async def eventually(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_a_blocked_subscriber_is_tried_once_then_never_until_they_return(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    tokens = [letter * 40 + "pump" for letter in "JKL"]
    async with FakeTelegramServer() as telegram, FeedServer(CHANNEL_FRAMES) as feed:
        async with bot_on_feed(feed, telegram, redis_url, database_url, tmp_path, [FOLLOWER, BLOCKER]) as runtime:
            store, sync = runtime.store, runtime.index_sync
            assert store is not None and sync is not None
            telegram.block_chat(BLOCKER.telegram_id)

            async def status() -> str:
                subscriber = await store.get(BLOCKER.telegram_id)
                assert subscriber is not None
                return subscriber.status

            await feed.push(call_frame(tokens[0], "-2010", 0))
            await eventually(lambda: _is(status, "blocked"))
            assert telegram.stats.rejected_403 == 1
            await sync.settle()

            await feed.push(call_frame(tokens[1], "-2010", 1))
            await telegram.wait_for_sent(lambda r: tokens[1] in (r.raw_text or ""), timeout=30)
            await runtime.drained()
            assert telegram.stats.rejected_403 == 1  # not tried again while blocked

            telegram.inject_my_chat_member(BLOCKER.telegram_id, "member")  # they unblocked the bot
            await eventually(lambda: _is(status, "active"))
            await sync.settle()
            await feed.push(call_frame(tokens[2], "-2010", 2))
            await telegram.wait_for_sent(
                lambda r: r.chat_id == BLOCKER.telegram_id and tokens[2] in (r.raw_text or ""), timeout=30
            )
            await runtime.drained()
        got = alerts_by_chat(telegram, set(tokens))
        assert got == {FOLLOWER.telegram_id: tokens, BLOCKER.telegram_id: [tokens[2]]}


async def _is(status: object, expected: str) -> bool:
    return await status() == expected  # type: ignore[operator, no-any-return]


async def test_filters_during_a_5000_message_broadcast_is_answered_ahead_of_the_queued_alerts(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    # Paid broadcasting (1,000 a second) keeps 5,000 sends to a few seconds; the lanes are the same.
    async with FakeTelegramServer() as telegram, FeedServer(CHANNEL_FRAMES) as feed:
        async with bot_on_feed(
            feed, telegram, redis_url, database_url, tmp_path, [FOLLOWER], paid_broadcast=True
        ) as runtime:
            assert runtime.delivery is not None
            await runtime.delivery.publish(
                [
                    Alert(token="B" * 40 + "pump", chat_id=5_000_000 + i, html=f"alert {i}", lane=Lane.PAID_ALERT)
                    for i in range(5_000)
                ]
            )
            await telegram.wait_for(lambda: len(telegram.sent) >= 300, timeout=30)
            asked_at = len(telegram.sent)
            telegram.inject_message(FOLLOWER.telegram_id, "/filters")
            [reply] = await telegram.wait_for_sent(lambda r: r.chat_id == FOLLOWER.telegram_id, timeout=30)
            position = telegram.sent.index(reply)
            await runtime.drained(timeout=60)
        alerts_after_reply = len(telegram.sent) - position - 1
        # Between the update and the reply: only what was in flight plus the bot's handling time.
        assert position - asked_at < 150
        assert alerts_after_reply > 4_000
        assert len(telegram.sent) == 5_001 and telegram.stats.rejected_429 == 0
