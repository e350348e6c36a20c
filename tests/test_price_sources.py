"""Prices for followed tokens: DexScreener polled in batches within its rate (counted at the local
DexScreener), its answer's shape, and PumpPortal trade subscriptions following the tokens."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.events import PriceEvent
from domain.feed_adapters import FrameError, parse_dexscreener_tokens, pumpportal_parser
from domain.matching import SubscriberIndex
from domain.multipliers import FollowUp, TrackingRules
from domain.subscriber import Subscriber
from managers.redis_manager import RedisManager
from managers.stream import StreamManager, SubscriptionSet
from services.event_queue import EventQueue
from services.multiplier import MultiplierTracker
from services.price_sources import TRADE_METHOD, DexScreenerPoller, TradeSubscriptions
from standins import feedgen
from standins.dexscreener import DexScreenerServer, Pair
from standins.feed_server import FeedServer
from tests.test_feed_adapters import pp_trade

_rng = random.Random(13)
TOKENS = [feedgen.make_address(_rng, pump=True) for _ in range(100)]
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FAST_STREAM = {"min_connect_interval": 0.05, "backoff_base": 0.05, "backoff_max": 0.2, "silence_timeout": 30.0}


class Collected:
    def __init__(self) -> None:
        self.events: list[PriceEvent] = []

    async def __call__(self, event: PriceEvent) -> None:
        self.events.append(event)


def test_the_answer_gives_each_token_its_most_liquid_pair() -> None:
    server = DexScreenerServer()
    token, other = TOKENS[0], TOKENS[1]
    server.add_pair(Pair(token, 0.0001, 100_000, liquidity_usd=2_000, dex_id="raydium"))
    server.add_pair(Pair(token, 0.0002, 200_000, liquidity_usd=50_000, dex_id="pumpswap"))
    server.add_pair(Pair(other, 0.5, None, liquidity_usd=10, fdv=5e8))
    answer = [pair.wire("solana", 150.0) for pairs in server.pairs.values() for pair in pairs]
    answer.append({**answer[0], "chainId": "ethereum"})  # another chain: skipped
    answer.append({**answer[0], "priceUsd": "n/a"})  # no price: skipped
    events = parse_dexscreener_tokens(json.loads(json.dumps(answer)), [token, other], NOW)
    by_token = {event.address: event for event in events}
    assert by_token[token].price_usd == 0.0002 and by_token[token].market_cap_usd == 200_000
    assert by_token[other].market_cap_usd == 5e8  # no marketCap: the fdv
    assert {event.source for event in events} == {"dexscreener"} and events[0].ts == NOW
    assert parse_dexscreener_tokens(answer, ["unasked"], NOW) == []
    with pytest.raises(FrameError):
        parse_dexscreener_tokens({"pairs": []}, [token], NOW)


async def test_stale_tokens_are_asked_for_thirty_a_request_and_not_again_soon() -> None:
    asked = TOKENS[:65]
    sink = Collected()
    async with DexScreenerServer() as server:
        for n, token in enumerate(asked[:-1]):  # the last one trades nowhere
            server.set_price(token, 1e-5 * (n + 1), 10_000.0 * (n + 1))
        poller = DexScreenerPoller(server.url, lambda: asked, sink)
        assert await poller.poll_once() == 64
        assert [len(request) for request in server.requests] == [30, 30, 5]
        assert [a for request in server.requests for a in request] == asked
        assert {e.address: e.market_cap_usd for e in sink.events}[asked[9]] == 100_000.0
        assert await poller.poll_once() == 0 and len(server.requests) == 3  # asked a moment ago
        await poller.stop()


async def test_the_poller_keeps_to_its_rate_limit() -> None:
    sink = Collected()
    async with DexScreenerServer() as server:
        poller = DexScreenerPoller(server.url, lambda: TOKENS, sink, rate=2)  # 2 requests a minute
        await poller.start()
        try:
            await server.wait_for_requests(2)
            while not poller.waiting:  # the third request waits for the limiter...
                await asyncio.sleep(0.01)
            assert len(server.requests) == 2  # ...and was never made
            assert not poller.limiter.has_capacity()
        finally:
            await poller.stop()
    assert server.rejected_429 == 0


async def test_a_429_pauses_the_poller() -> None:
    sink = Collected()
    async with DexScreenerServer(rate_per_minute=1) as server:
        poller = DexScreenerPoller(server.url, lambda: TOKENS[:60], sink)
        await poller.poll_once()
        assert len(server.requests) == 1 and server.rejected_429 == 1
        assert poller.stats.rate_limited == 1 and poller.stats.requests == 2
        await poller.stop()


def subscriber(telegram_id: int) -> Subscriber:
    return Subscriber(telegram_id, plan_expires_at=datetime.now(UTC) + timedelta(days=30))


async def test_a_polled_price_reaches_the_tracker_through_the_queue(redis_url: str) -> None:
    redis = RedisManager.from_url(redis_url)
    await redis.start()
    told: list[FollowUp] = []
    tracker = MultiplierTracker(redis, None, SubscriberIndex([subscriber(7)]), told.append)
    token = TOKENS[0]
    tracker.add_entries(token, [7], [100_000.0])
    queue = EventQueue()
    queue.price_listeners.append(tracker.on_price)
    async with DexScreenerServer() as server:
        server.set_price(token, 0.00025, 250_000.0)
        poller = DexScreenerPoller(server.url, lambda: tracker.stale(timedelta(0)), queue.put)
        assert await poller.poll_once() == 1
        await poller.stop()
    await tracker.settled()
    assert [(f.chat_id, f.multiple) for f in told] == [(7, 2)]
    assert queue.qsize() == 1  # the pipeline stores the price as any other
    await redis.close()


def methods(received: list[Any], name: str) -> list[Any]:
    return [m for m in received if isinstance(m, dict) and m.get("method") == name]


async def test_trade_subscriptions_follow_the_followed_tokens_and_trades_price_them(redis_url: str) -> None:
    redis = RedisManager.from_url(redis_url)
    await redis.start()
    told: list[FollowUp] = []
    clock_now = [datetime.now(UTC)]
    tracker = MultiplierTracker(
        redis,
        None,
        SubscriberIndex([subscriber(7)]),
        told.append,
        rules=TrackingRules(window=timedelta(days=7)),
        clock=lambda: clock_now[0],
    )
    token = TOKENS[3]
    queue = EventQueue()
    queue.price_listeners.append(tracker.on_price)
    async with FeedServer([]) as feed:
        stream = StreamManager(
            feed.url,
            pumpportal_parser(lambda: 150.0),
            queue.put,
            subscriptions=SubscriptionSet(),
            name="pumpportal",
            **FAST_STREAM,
        )
        trades = TradeSubscriptions(lambda: stream, tracker.addresses)
        await trades.refresh()  # nothing followed: nothing asked
        await stream.start()
        try:
            await feed.wait_for_clients(1)
            tracker.add_entries(token, [7], [100_000.0])
            await trades.refresh()
            await feed.wait_for_received(lambda m: isinstance(m, dict) and m.get("method") == TRADE_METHOD)
            assert methods(feed.received, TRADE_METHOD) == [{"method": TRADE_METHOD, "keys": [token]}]
            # $250K at SOL $150: a 2.5x trade.
            await feed.push(pp_trade(mint=token, marketCapSol=250_000 / 150))
            await stream.wait_for(lambda: stream.stats.events >= 1, 10)
            await tracker.settled()
            assert [(f.chat_id, f.multiple) for f in told] == [(7, 2)]
            clock_now[0] += timedelta(days=8)
            tracker.sweep()
            await trades.refresh()
            unsubscribe = "unsubscribeTokenTrade"
            await feed.wait_for_received(lambda m: isinstance(m, dict) and m.get("method") == unsubscribe)
            assert methods(feed.received, unsubscribe) == [{"method": unsubscribe, "keys": [token]}]
        finally:
            await stream.stop()
    await redis.close()
