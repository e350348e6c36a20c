"""Multiplier follow-ups end to end: the feed stand-in, the real runtime on real Redis and
PostgreSQL, the Telegram stand-in; and the tracker on its own with a clock of the test's."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import ReplyParameters

from bot.followups import FollowUpNotifier
from bot.runtime import Runtime, create_bot
from domain.events import PriceEvent
from domain.filters import Filters
from domain.matching import SubscriberIndex
from domain.multipliers import End, FollowUp, TrackingRules
from domain.subscriber import Subscriber
from managers.redis_manager import RedisManager
from services.multiplier import MultiplierTracker
from services.sender import MessageSender
from standins.dexscreener import DexScreenerServer
from standins.feed_server import FeedServer
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, SentRecord
from tests.conftest import Stores
from tests.test_token_pipeline_e2e import CHANNEL_FRAMES, Member, bot_on_feed, call_frame, filters

EAGER = Member(301, Filters())  # every token, every threshold
LATE = Member(302, filters(min_mcap="110k"))  # alerted only by the second call, at a higher market cap
FROM_FIVE = Member(303, Filters())  # follow-ups from 5x on
NONE = Member(304, Filters())  # no follow-ups
MEMBERS = [EAGER, LATE, FROM_FIVE, NONE]
PREFERENCES = {FROM_FIVE.telegram_id: 5, NONE.telegram_id: 0}

MOON = "M" * 40 + "pump"  # called at $100K, then at $120K
ROCKET = "K" * 40 + "pump"  # called at $100K, jumps to 12x
_MULTIPLE = re.compile(r"(\d+)x")


def price_frame(address: str, market_cap: float, second: int) -> dict[str, Any]:
    at = datetime(2026, 11, 21, 10, 0, tzinfo=UTC) + timedelta(seconds=second)
    return {
        "type": "price",
        "address": address,
        "price_usd": market_cap / 1e9,
        "market_cap_usd": market_cap,
        "ts": at.isoformat().replace("+00:00", "Z"),
    }


@asynccontextmanager
async def followups_bot(
    feed: FeedServer,
    telegram: FakeTelegramServer,
    dexscreener: DexScreenerServer,
    redis_url: str,
    database_url: str,
    tmp_path: Path,
    members: Iterable[Member] = MEMBERS,
) -> AsyncIterator[Runtime]:
    async with bot_on_feed(
        feed, telegram, redis_url, database_url, tmp_path, members, dexscreener_url=dexscreener.url
    ) as runtime:
        for telegram_id, minimum in PREFERENCES.items():
            await runtime.store.set_preferences(telegram_id, followup_min=minimum)
        await runtime.index_sync.settle()
        yield runtime


async def frames_read(runtime: Runtime, count: int) -> None:
    stream = runtime.streams[0]
    await stream.wait_for(lambda: stream.stats.events >= count, 30)


async def followups_settled(runtime: Runtime) -> None:
    """Every price read so far compared, its follow-ups claimed, queued and answered by Telegram."""
    assert runtime.followups is not None
    await runtime.followups.tracker.settled()
    await runtime.drained()


def alert_of(telegram: FakeTelegramServer, chat_id: int, token: str) -> SentRecord:
    [alert] = [r for r in telegram.messages_to(chat_id) if token in (r.raw_text or "") and r.reply_to is None]
    return alert


def followups_of(telegram: FakeTelegramServer, chat_id: int, token: str) -> list[int]:
    """The multiples told to `chat_id` about `token`, in order; each must reply to its alert."""
    alert = alert_of(telegram, chat_id, token)
    told = []
    for record in telegram.messages_to(chat_id):
        if record.reply_to is not None and token in (record.raw_text or ""):
            assert record.reply_to == alert.message_id, "a follow-up replies to that subscriber's own alert"
            told.append(multiple_of(record))
    return told


def multiple_of(record: SentRecord) -> int:
    match = _MULTIPLE.search(record.text or "")
    assert match is not None, record.text
    return int(match.group(1))


async def test_each_subscriber_is_told_each_threshold_once_as_a_reply_and_a_restart_repeats_none(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    async with FakeTelegramServer() as telegram, DexScreenerServer() as dexscreener:
        async with FeedServer(CHANNEL_FRAMES) as feed:
            async with followups_bot(feed, telegram, dexscreener, redis_url, database_url, tmp_path) as runtime:
                assert runtime.followups is not None
                tracker = runtime.followups.tracker
                await feed.push(call_frame(MOON, "-2010", 0, mcap=100_000))
                await feed.push(call_frame(MOON, "-2011", 1, mcap=120_000))
                await feed.push(call_frame(ROCKET, "-2012", 2, mcap=100_000))
                read = len(CHANNEL_FRAMES) + 3
                await frames_read(runtime, read)
                await runtime.drained()
                await tracker.sync()
                moon, rocket = tracker.get(MOON), tracker.get(ROCKET)
                assert moon is not None and rocket is not None
                assert sorted(moon.chats.tolist()) == [m.telegram_id for m in MEMBERS]
                assert dict(zip(moon.chats.tolist(), moon.bases.tolist()))[LATE.telegram_id] == 120_000
                # 2.5x / 2.1x, 6x / 5x, down to 1.5x, up to 6.6x / 5.5x; and 1x -> 12x.
                for second, market_cap in enumerate([250_000, 600_000, 150_000, 660_000]):
                    await feed.push(price_frame(MOON, market_cap, second))
                await feed.push(price_frame(ROCKET, 1_200_000, 10))
                read += 5
                await frames_read(runtime, read)
                await followups_settled(runtime)

                assert followups_of(telegram, EAGER.telegram_id, MOON) == [2, 5]
                assert followups_of(telegram, LATE.telegram_id, MOON) == [2, 5]  # against its own $120K
                assert followups_of(telegram, FROM_FIVE.telegram_id, MOON) == [5]
                assert followups_of(telegram, NONE.telegram_id, MOON) == []
                assert followups_of(telegram, EAGER.telegram_id, ROCKET) == [10]
                assert followups_of(telegram, FROM_FIVE.telegram_id, ROCKET) == [10]
                assert followups_of(telegram, NONE.telegram_id, ROCKET) == []
                moon_text = next(r.text or "" for r in telegram.messages_to(EAGER.telegram_id) if r.reply_to)
                assert "2x" in moon_text and "$100K → $250K" in moon_text
                await tracker.flush()
                rows = await runtime.postgres.fetch(
                    "SELECT u.telegram_id, m.token_address, m.multiplier::int AS multiple, m.notified_at "
                    "FROM multiplier_entries m JOIN users u ON u.id = m.user_id"
                )
                assert sorted((r["telegram_id"], r["token_address"], r["multiple"]) for r in rows) == [
                    (EAGER.telegram_id, ROCKET, 10),
                    (EAGER.telegram_id, MOON, 2),
                    (EAGER.telegram_id, MOON, 5),
                    (LATE.telegram_id, MOON, 2),
                    (LATE.telegram_id, MOON, 5),
                    (FROM_FIVE.telegram_id, ROCKET, 10),
                    (FROM_FIVE.telegram_id, MOON, 5),
                ]
                assert all(r["notified_at"] is not None for r in rows)
                peak = await runtime.postgres.fetchval(
                    "SELECT peak_market_cap_usd FROM tracked_tokens WHERE token_address = $1", MOON
                )
                assert peak == 660_000

        sent_before = len(telegram.sent)
        async with FeedServer(CHANNEL_FRAMES) as feed:
            async with followups_bot(feed, telegram, dexscreener, redis_url, database_url, tmp_path) as runtime:
                assert runtime.followups is not None
                tracker = runtime.followups.tracker
                await tracker.sync()
                assert tracker.get(MOON) is not None and tracker.entries == 7
                # 6x again repeats nothing; 11x is new: 10x for those alerted at $100K, nothing
                # for the one alerted at $120K (9.2x: its 5x was told before the restart).
                await feed.push(price_frame(MOON, 600_000, 20))
                await feed.push(price_frame(MOON, 1_100_000, 21))
                await frames_read(runtime, len(CHANNEL_FRAMES) + 2)
                await followups_settled(runtime)
        after = [r for r in telegram.sent[sent_before:] if r.reply_to is not None]
        assert sorted((r.chat_id, multiple_of(r)) for r in after) == [
            (EAGER.telegram_id, 10),
            (FROM_FIVE.telegram_id, 10),
        ]
        assert followups_of(telegram, LATE.telegram_id, MOON) == [2, 5]


def as_subscriber(member: Member, followup_min: int = 2) -> Subscriber:
    return Subscriber(
        member.telegram_id,
        member.filters,
        plan_expires_at=datetime.now(UTC) + timedelta(days=30),
        followup_min=followup_min,
    )


# ---------------------------------------------------------------------------------- the tracker alone

T0 = datetime.now(UTC).replace(microsecond=0)
BASE = 100_000.0


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def price(address: str, market_cap: float) -> PriceEvent:
    return PriceEvent(address, market_cap / 1e9, market_cap, T0)


async def test_two_trackers_on_one_redis_send_each_follow_up_once(redis_url: str) -> None:
    """Two processes follow the same token and see the same prices: Redis lets one of them tell."""
    index = SubscriberIndex([as_subscriber(EAGER), as_subscriber(FROM_FIVE, followup_min=5)])
    redis = RedisManager.from_url(redis_url)
    await redis.start()
    async with FakeTelegramServer() as telegram:
        bots = [create_bot(DEFAULT_TOKEN, telegram.base_url) for _ in range(2)]
        senders = [MessageSender(bot) for bot in bots]
        trackers = [MultiplierTracker(redis, None, index) for _ in range(2)]
        for tracker, sender in zip(trackers, senders):
            await sender.start()
            tracker.notify = FollowUpNotifier(sender, index, tracker)
            # Message 999 is no message of theirs: the follow-up goes without the reply.
            tracker.add_entries(MOON, [EAGER.telegram_id, FROM_FIVE.telegram_id], [BASE, BASE], messages=[999, 999])
        for market_cap in (250_000, 600_000, 150_000, 660_000, 1_200_000):
            for tracker in trackers:
                tracker.on_price(price(MOON, market_cap))
            await asyncio.gather(*(tracker.settled() for tracker in trackers))
        for sender, bot in zip(senders, bots):
            await sender.stop(drain=True, timeout=10)
            await bot.session.close()
        told = sorted((r.chat_id, multiple_of(r)) for r in telegram.sent)
        assert told == [(EAGER.telegram_id, 2), (EAGER.telegram_id, 5), (EAGER.telegram_id, 10)] + [
            (FROM_FIVE.telegram_id, 5),
            (FROM_FIVE.telegram_id, 10),
        ]
        assert all(r.reply_to is None for r in telegram.sent)
        assert sum(t.stats.won for t in trackers) == 5 and sum(t.stats.lost for t in trackers) == 5
    await redis.close()


def followed(stores: Stores, rules: TrackingRules, clock: Clock) -> tuple[MultiplierTracker, list[FollowUp]]:
    index = SubscriberIndex([as_subscriber(EAGER), as_subscriber(Member(305, Filters()))])
    told: list[FollowUp] = []
    return MultiplierTracker(stores.redis, stores.postgres, index, told.append, rules=rules, clock=clock), told


async def test_following_ends_a_window_after_each_alert(stores: Stores) -> None:
    clock = Clock(T0)
    tracker, told = followed(stores, TrackingRules(window=timedelta(days=7), silent_after=timedelta(days=30)), clock)
    tracker.add_entries(MOON, [EAGER.telegram_id], [BASE], alerted_at=[T0])
    tracker.add_entries(MOON, [305], [BASE], alerted_at=[T0 + timedelta(days=3)])
    assert tracker.entries == 2
    clock.now = T0 + timedelta(days=7, hours=1)
    assert tracker.sweep() == {}  # the first alert's week is over, the second's is not
    assert tracker.entries == 1
    tracker.on_price(price(MOON, 300_000))
    await tracker.settled()
    assert [(f.chat_id, f.multiple) for f in told] == [(305, 3)]
    clock.now = T0 + timedelta(days=10)
    assert tracker.sweep() == {MOON: End.WINDOW}
    tracker.on_price(price(MOON, 2_000_000))
    await tracker.settled()
    assert len(told) == 1 and tracker.get(MOON) is None and tracker.entries == 0
    # A later delivery of the ended token does not bring it back.
    assert tracker.add_entries(MOON, [EAGER.telegram_id], [BASE]) == 0
    await tracker.flush()
    row = await stores.postgres.fetchrow(
        "SELECT ended_at, end_reason FROM tracked_tokens WHERE token_address = $1", MOON
    )
    assert row is not None and row["end_reason"] == "window" and row["ended_at"] == clock.now


async def test_a_token_far_below_its_peak_for_an_hour_is_dead(stores: Stores) -> None:
    clock = Clock(T0)
    tracker, told = followed(stores, TrackingRules(dead_share=0.1, dead_after=timedelta(hours=1)), clock)
    tracker.add_entries(MOON, [EAGER.telegram_id], [BASE], alerted_at=[T0])
    clock.now = T0 + timedelta(minutes=1)
    tracker.on_price(price(MOON, 300_000))  # 3x: the peak
    clock.now = T0 + timedelta(minutes=2)
    tracker.on_price(price(MOON, 29_000))  # below 10% of the peak from here on
    clock.now = T0 + timedelta(minutes=30)
    tracker.on_price(price(MOON, 25_000))
    clock.now = T0 + timedelta(hours=1, minutes=1)
    assert tracker.sweep() == {}
    clock.now = T0 + timedelta(hours=1, minutes=2)
    assert tracker.sweep() == {MOON: End.DEAD}
    tracker.on_price(price(MOON, 1_000_000))
    await tracker.settled()
    assert [f.multiple for f in told] == [3]
    assert tracker.stats.ended_dead == 1


async def test_a_token_without_any_price_for_a_day_is_silent_and_asked_for_meanwhile(stores: Stores) -> None:
    clock = Clock(T0)
    tracker, _ = followed(stores, TrackingRules(silent_after=timedelta(hours=24)), clock)
    tracker.add_entries(ROCKET, [EAGER.telegram_id], [BASE], alerted_at=[T0])
    clock.now = T0 + timedelta(seconds=59)
    assert tracker.stale(timedelta(seconds=60)) == []
    clock.now = T0 + timedelta(seconds=60)
    assert tracker.stale(timedelta(seconds=60)) == [ROCKET]  # DexScreener is asked for it
    clock.now = T0 + timedelta(hours=23, minutes=59)
    assert tracker.sweep() == {}
    clock.now = T0 + timedelta(hours=24)
    assert tracker.sweep() == {ROCKET: End.SILENT}


async def test_the_local_bot_api_refuses_a_reply_to_a_missing_message_unless_allowed() -> None:
    async with FakeTelegramServer() as telegram:
        bot = create_bot(DEFAULT_TOKEN, telegram.base_url)
        try:
            first = await bot.send_message(5, "alert")
            reply = await bot.send_message(5, "2x", reply_parameters=ReplyParameters(message_id=first.message_id))
            assert reply.reply_to_message is not None and reply.reply_to_message.message_id == first.message_id
            try:
                await bot.send_message(5, "2x", reply_parameters=ReplyParameters(message_id=999))
            except TelegramBadRequest as exc:
                assert "message to be replied not found" in exc.message
            else:
                raise AssertionError("a reply to a missing message was accepted")
            allowed = ReplyParameters(message_id=999, allow_sending_without_reply=True)
            plain = await bot.send_message(5, "2x", reply_parameters=allowed)
            assert plain.reply_to_message is None
        finally:
            await bot.session.close()
