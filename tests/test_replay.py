"""Filter replay ("test my filters"): the pure rule on a hand-worked day, the same day read back
from PostgreSQL as the persistence writer stores it, and the button end to end in two languages."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import FilterCB
from bot.config import Settings
from bot.container import build_services
from bot.routers.replay import render_report
from bot.runtime import build_dispatcher, create_bot
from domain.events import CallEvent, Channel, PriceEvent, TokenInfo
from domain.filters import Filters
from domain.matching import SubscriberIndex
from managers.postgres import PostgresManager
from services.persistence import PersistenceWriter
from services.replay import (
    PricePoint,
    ReplayCall,
    ReplayDay,
    ReplayDayCache,
    ReplayReport,
    ReplayResult,
    load_replay_day,
    replay,
    replay_for,
)
from services.subscribers import Subscriber
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, RateLimits, SentRecord
from tests.conftest import Stores

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
WINDOW = NOW - timedelta(hours=24)  # the replay window is (WINDOW, NOW]

# ------------------------------------------------------------------------------- the recorded day
#
# Channels (current statistics): A win rate 60% (passes min_win_rate 50), B exactly 50% (passes:
# the bound is inclusive), C never described (no statistics: fails min_win_rate).
# Filters: min_mcap 20k, min_win_rate 50, min_channels 2: a token alerts at the first call
# after which two channels of A/B have called it, if that call says its market cap is >= 20k.
#
# Hours are relative to "now"; the window is the last 24 hours.
#
# ONE   A -10h (30k), B -9h (40k, price 0.00004): alerts at -9h, base 0.00004. It was at
#       0.0001 (2.5x) at -9.5h and again exactly at -9h, neither strictly after the alert;
#       after it, 0.000072 at -8h = 1.8x.                                   alert, no 2x
# TWO   A -6h (50k), B -5h (60k, price 0.00006): alerts at -5h; 0.00015 at -2h = 2.5x.
#                                                                          alert, 2x
# THREE A -4h (15k), B -3h (18k): A and B have called it, but the token is under 20k;
#       C -2h (25k, price 0.000025) describes it at 25k: alerts at -2h (C itself fails, A and B
#       make two); 0.00004 at -1h = 1.6x (and 0.0005 = 20x at -2.5h, before the alert).
#                                                                          alert, no 2x
# FOUR  A -1h (100k), C -0.5h (100k): only A passes the channel filters.   no alert
# FIVE  A -30h, B -26h (50k): would have alerted 26 hours ago, before the window; C's call at
#       -1h brings it into the window but never alerts it again; 10x at -0.5h does not count.
#                                                                          not counted
# SIX   A -25h (before the window), B -20h (40k, no price): A's earlier call still counts for
#       min_channels, so it alerts at -20h, in the window. No price at the call: the base is
#       the market cap, 40k; 110k at -10h = 2.75x.                         alert, 2x
# SEVEN A -30h, B -28h (80k), 5x at -27h: nothing of it in the window.     not counted
#
# Expected: 4 alerts (ONE, TWO, THREE, SIX), 2 of them reached 2x (TWO, SIX).
# Replayed over every call with no window, FIVE and SEVEN alert too: 6 alerts, 4 reached 2x.

FILTERS = Filters(min_mcap=20_000, min_win_rate=50, min_channels=2)
EXPECTED_ALERTS = 4
EXPECTED_2X = 2

A, B, C = "-1001", "-1002", "-1003"
CHANNEL_STATS = [
    Channel(id=A, name="Alpha", username="alphacalls", win_rate=0.6, avg_gain=3.0, calls=40),
    Channel(id=B, name="Beta", username="betacalls", win_rate=0.5, avg_gain=2.0, calls=30),
]


def address(symbol: str) -> str:
    return (symbol * 44)[:40] + "pump"


@dataclass(frozen=True)
class DayCall:
    symbol: str
    channel: str
    hours: float
    mcap: float
    price: float | None  # None: the call did not say


@dataclass(frozen=True)
class DayPrice:
    symbol: str
    hours: float
    price: float
    mcap: float


DAY_CALLS = [
    DayCall("ONE", A, -10, 30_000, 0.00003),
    DayCall("ONE", B, -9, 40_000, 0.00004),
    DayCall("TWO", A, -6, 50_000, 0.00005),
    DayCall("TWO", B, -5, 60_000, 0.00006),
    DayCall("THREE", A, -4, 15_000, 0.000015),
    DayCall("THREE", B, -3, 18_000, 0.000018),
    DayCall("THREE", C, -2, 25_000, 0.000025),
    DayCall("FOUR", A, -1, 100_000, 0.0001),
    DayCall("FOUR", C, -0.5, 100_000, 0.0001),
    DayCall("FIVE", A, -30, 50_000, 0.00005),
    DayCall("FIVE", B, -26, 50_000, 0.00005),
    DayCall("FIVE", C, -1, 50_000, 0.00005),
    DayCall("SIX", A, -25, 30_000, 0.00003),
    DayCall("SIX", B, -20, 40_000, None),
    DayCall("SEVEN", A, -30, 70_000, 0.00007),
    DayCall("SEVEN", B, -28, 80_000, 0.00008),
]
DAY_PRICES = [
    DayPrice("ONE", -9.5, 0.0001, 100_000),
    DayPrice("ONE", -9, 0.0001, 100_000),
    DayPrice("ONE", -8, 0.000072, 72_000),
    DayPrice("ONE", -7, 0.00005, 50_000),
    DayPrice("TWO", -4, 0.00008, 80_000),
    DayPrice("TWO", -2, 0.00015, 150_000),
    DayPrice("TWO", -1, 0.0001, 100_000),
    DayPrice("THREE", -2.5, 0.0005, 500_000),
    DayPrice("THREE", -1, 0.00004, 40_000),
    DayPrice("FOUR", -0.25, 0.001, 1_000_000),
    DayPrice("FIVE", -0.5, 0.0005, 500_000),
    DayPrice("SIX", -10, 0.00011, 110_000),
    DayPrice("SIX", -5, 0.00006, 60_000),
    DayPrice("SEVEN", -27, 0.0004, 400_000),
]


def at(now: datetime, hours: float) -> datetime:
    return now + timedelta(hours=hours)


def token_created(now: datetime) -> datetime:
    return now - timedelta(days=2)


def replay_calls(now: datetime) -> list[ReplayCall]:
    # Deliberately not in time order: replay orders them itself.
    return [
        ReplayCall(
            token_address=address(c.symbol),
            channel_id=c.channel,
            called_at=at(now, c.hours),
            symbol=c.symbol,
            market_cap_usd=c.mcap,
            liquidity_usd=9_000,
            holders=250,
            price_usd=c.price,
            token_created_at=token_created(now),
        )
        for c in reversed(DAY_CALLS)
    ]


def replay_prices(now: datetime) -> dict[str, list[PricePoint]]:
    prices: dict[str, list[PricePoint]] = {}
    for p in DAY_PRICES:
        prices.setdefault(address(p.symbol), []).append(PricePoint(at(now, p.hours), p.price, p.mcap))
    return prices


def replay_channels() -> dict[str, Channel]:
    return {s.id: s for s in CHANNEL_STATS}


def by_symbol(result: ReplayResult) -> dict[str, tuple[float, float | None]]:
    """symbol -> (hours before NOW of the alert, best multiple rounded)."""
    return {
        a.symbol or "": (
            round((a.alerted_at - NOW).total_seconds() / 3600, 2),
            None if a.best_multiple is None else round(a.best_multiple, 4),
        )
        for a in result.tokens
    }


# ------------------------------------------------------------------------------- (a) the pure rule


def test_hand_worked_day() -> None:
    result = replay(FILTERS, replay_calls(NOW), replay_prices(NOW), replay_channels(), window_start=WINDOW)
    assert (result.alerts, result.reached_2x) == (EXPECTED_ALERTS, EXPECTED_2X)
    assert by_symbol(result) == {
        "ONE": (-9, 1.8),  # 2.5x only before / at the alert moment
        "TWO": (-5, 2.5),
        "THREE": (-2, 1.6),
        "SIX": (-20, 2.75),  # market-cap base: 110k / 40k
    }
    six = next(a for a in result.tokens if a.symbol == "SIX")
    assert (six.basis, six.base, six.channel_ids) == ("market_cap", 40_000, (A, B))
    three = next(a for a in result.tokens if a.symbol == "THREE")
    assert (three.basis, three.base, three.channel_ids) == ("price", 0.000025, (A, B, C))
    assert [a.symbol for a in result.tokens] == ["SIX", "ONE", "TWO", "THREE"]  # alert order
    assert [a.symbol for a in result.top(3)] == ["SIX", "TWO", "ONE"]


def test_without_a_window_every_call_counts() -> None:
    result = replay(FILTERS, replay_calls(NOW), replay_prices(NOW), replay_channels())
    assert (result.alerts, result.reached_2x) == (6, 4)
    assert by_symbol(result)["FIVE"] == (-26, 10.0)
    assert by_symbol(result)["SEVEN"] == (-28, 5.0)


def test_each_filter_kind_is_the_live_rule() -> None:
    calls, prices, channels = replay_calls(NOW), replay_prices(NOW), replay_channels()

    def alerted(filters: Filters) -> set[str]:
        return {a.symbol or "" for a in replay(filters, calls, prices, channels, window_start=WINDOW).tokens}

    # No filters: every token alerts at its first call in the window (FIVE and SIX were already
    # alerted by their calls before it, SEVEN has none in it).
    assert alerted(Filters()) == {"ONE", "TWO", "THREE", "FOUR"}
    # One channel is enough: ONE, TWO and FOUR alert at their first call; THREE only once a
    # call describes it above 20k, even though that call's channel (C) fails min_win_rate.
    assert alerted(Filters(min_mcap=20_000, min_win_rate=50)) == {"ONE", "TWO", "THREE", "FOUR"}
    assert alerted(Filters(min_win_rate=55, min_channels=2)) == set()  # B is at 50%
    # Without A, SIX's first passing call is B's, in the window; FIVE's B call was before it.
    assert alerted(Filters(channels=frozenset({"@betacalls"}))) == {"ONE", "TWO", "THREE", "SIX"}
    assert alerted(Filters(exclude_channels=frozenset({A}))) == {"ONE", "TWO", "THREE", "FOUR", "SIX"}
    assert alerted(Filters(max_mcap=20_000)) == {"THREE"}
    assert alerted(Filters(min_holders=251)) == set()
    assert alerted(Filters(min_liquidity=9_000, min_holders=250)) == {"ONE", "TWO", "THREE", "FOUR"}
    # Created 2 days before now: FOUR's calls come more than 46.5 hours after its creation.
    assert alerted(Filters(max_age=60 * 24 * 2 - 90)) == {"ONE", "TWO", "THREE"}
    # Unknown token fields never pass a filter that needs them.
    unknown = [ReplayCall(address("X"), A, NOW - timedelta(hours=1))]
    assert replay(Filters(min_mcap=1), unknown, {}, channels).alerts == 0
    assert replay(Filters(), unknown, {}, channels).tokens[0].best_multiple is None


def test_agrees_with_the_live_matcher_on_random_days() -> None:
    """The live index (domain.matching), driven call by call as the pipeline does, alerts the
    same tokens at the same calls as replay."""
    rng = random.Random(7)
    channel_ids = [f"-10{i}" for i in range(6)]
    channels = {
        cid: Channel(
            cid, username=f"chan{i}x", win_rate=rng.choice([None, 0.2, 0.5, 0.8]), avg_gain=rng.choice([None, 1.5, 3.0])
        )
        for i, cid in enumerate(channel_ids[:5])  # the last one is never described
    }
    for _ in range(40):
        filters = Filters(
            min_mcap=rng.choice([None, 20_000, 50_000]),
            max_mcap=rng.choice([None, 200_000]),
            min_holders=rng.choice([None, 100]),
            min_win_rate=rng.choice([None, 40, 60]),
            min_avg_gain=rng.choice([None, 2.0]),
            max_age=rng.choice([None, 120]),
            channels=rng.choice([None, frozenset({"@chan1x", channel_ids[2]})]),
            exclude_channels=rng.choice([None, frozenset({channel_ids[3]})]),
            min_channels=rng.choice([1, 2, 3]),
        )
        calls = [
            ReplayCall(
                address(rng.choice("PQRST")),
                rng.choice(channel_ids),
                NOW - timedelta(minutes=rng.randrange(0, 600)),
                market_cap_usd=rng.choice([None, 10_000, 30_000, 90_000, 300_000]),
                holders=rng.choice([None, 50, 500]),
                token_created_at=NOW - timedelta(minutes=rng.randrange(600, 800)),
            )
            for _ in range(30)
        ]
        index = SubscriberIndex([Subscriber(telegram_id=1, filters=filters, is_admin=True)])
        live: dict[str, datetime] = {}
        callers: dict[str, dict[str, Channel]] = {}
        for call in sorted(calls, key=lambda c: c.called_at):
            seen = callers.setdefault(call.token_address, {})
            unknown = Channel(call.channel_id)
            seen.setdefault(call.channel_id, channels.get(call.channel_id) or unknown)
            if call.token_address not in live and index.match(call.facts(), call.called_at, list(seen.values())):
                live[call.token_address] = call.called_at
        replayed = replay(filters, calls, {}, channels)
        assert {a.token_address: a.alerted_at for a in replayed.tokens} == live, filters


def test_report_text_zero_alerts_partial_history_and_escaping() -> None:
    def day(history_start: datetime | None) -> ReplayDay:
        return ReplayDay(NOW - timedelta(hours=24), NOW, (), {}, {}, history_start)

    none = ReplayReport(ReplayResult(0, 0, ()), day(NOW - timedelta(hours=5)))
    reply = render_report(none, "en")
    assert "no</b> alerts" in reply and "/unset" in reply and "only 5 hours" in reply
    assert "ни одного" in render_report(none, "ru") and "5 ч" in render_report(none, "ru")
    assert "no call history" in render_report(ReplayReport(ReplayResult(0, 0, ()), day(None)), "en")

    result = replay(FILTERS, replay_calls(NOW), replay_prices(NOW), replay_channels(), window_start=WINDOW)
    odd = ReplayCall(address("Z"), A, NOW - timedelta(hours=2), symbol="<b>Z</b>", price_usd=1.0)
    escaped = replay(Filters(), [odd], {address("Z"): [PricePoint(NOW, 3.0)]}, {})
    full = render_report(ReplayReport(result, day(NOW - timedelta(days=3))), "en")
    assert "brought <b>4</b> alerts; <b>2</b> of them reached 2x" in full
    assert "• TWO: 2.5x" in full and "• ONE: 1.8x" in full and "only" not in full
    one = render_report(ReplayReport(escaped, day(NOW - timedelta(days=3))), "en")
    assert "<b>1</b> alert;" in one and "&lt;b&gt;Z&lt;/b&gt;: 3.0x" in one


# ------------------------------------------------------------------------------- (b) PostgreSQL


async def write_day(postgres: PostgresManager, now: datetime) -> PersistenceWriter:
    """The recorded day, through the writer the pipeline uses, in the order the feed brought it."""
    writer = PersistenceWriter(postgres)
    for stats in CHANNEL_STATS:
        writer.channel(stats, stats_at=now - timedelta(days=3))
    events: list[tuple[datetime, CallEvent | PriceEvent]] = []
    for c in DAY_CALLS:
        token = TokenInfo(
            address=address(c.symbol),
            symbol=c.symbol,
            name=c.symbol.title(),
            market_cap_usd=c.mcap,
            liquidity_usd=9_000,
            holders=250,
            price_usd=c.price,
            created_at=token_created(now),
        )
        channel = Channel(c.channel, name=None if c.channel == C else "named")
        events.append((at(now, c.hours), CallEvent(token=token, channel=channel, called_at=at(now, c.hours))))
    for p in DAY_PRICES:
        events.append((at(now, p.hours), PriceEvent(address(p.symbol), p.price, p.mcap, at(now, p.hours))))
    for when, event in sorted(events, key=lambda item: item[0]):
        if isinstance(event, CallEvent):
            writer.channel(event.channel)  # as the channel directory does
            writer.token(event.token, when)
            writer.call(event)
        else:
            writer.price(event)
    await writer.flush()
    return writer


async def record_history_since(postgres: PostgresManager, since: datetime) -> None:
    """As if the bot had been recording the history since `since` (migration 0003 ran then)."""
    await postgres.execute("UPDATE schema_migrations SET applied_at = $1 WHERE name = 'replay_history'", since)


async def test_the_day_read_back_from_postgres_replays_the_same(stores: Stores) -> None:
    postgres = stores.postgres
    await write_day(postgres, NOW)
    await record_history_since(postgres, NOW - timedelta(days=3))

    # The writer kept each call's snapshot and every price update.
    row = await postgres.fetchrow(
        "SELECT liquidity_usd, holders, price_usd FROM calls WHERE token_address = $1 AND channel_id = $2",
        address("SIX"),
        B,
    )
    assert (float(row["liquidity_usd"]), row["holders"], row["price_usd"]) == (9_000, 250, None)
    assert await postgres.fetchval("SELECT count(*) FROM token_prices") == len(DAY_PRICES)
    assert (
        float(await postgres.fetchval("SELECT price_usd FROM tokens WHERE address = $1", address("TWO"))) == 0.0001
    )  # latest price

    report = await replay_for(postgres, FILTERS, NOW, cache=None)
    assert (report.result.alerts, report.result.reached_2x) == (EXPECTED_ALERTS, EXPECTED_2X)
    pure = replay(FILTERS, replay_calls(NOW), replay_prices(NOW), replay_channels(), window_start=WINDOW)
    assert by_symbol(report.result) == by_symbol(pure)
    assert report.day.complete and report.day.covered_hours == 24

    day = report.day
    # Only the window's tokens: SEVEN, called only more than 24 hours ago, is not read at all;
    # FIVE's and SIX's calls before the window are, as callers.
    assert {c.symbol for c in day.calls} == {"ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX"}
    assert len(day.calls) == len(DAY_CALLS) - 2
    # Prices: only after each token's first call in the window, and only points no later one
    # beats (TWO's 0.00008 at -4h is beaten at -2h): the answers stay the same.
    two = [(p.ts, p.price_usd) for p in day.prices[address("TWO")]]
    assert two == [(at(NOW, -2), 0.00015), (at(NOW, -1), 0.0001)]
    assert address("SEVEN") not in day.prices
    # SIX's points after its first call in the window (-20h), not after its first call (-25h).
    assert [p.ts for p in day.prices[address("SIX")]] == [at(NOW, -10), at(NOW, -5)]
    assert set(day.channels) == {A, B, C} and day.channels[C].win_rate is None

    # The window moves: an hour earlier, FOUR (-1h, -0.5h) is not yet called, THREE's alert
    # (-2h) is an hour old, TWO's 2x at -2h still comes after its alert.
    earlier = await replay_for(postgres, FILTERS, NOW - timedelta(hours=1), cache=None)
    assert (earlier.result.alerts, earlier.result.reached_2x) == (4, 2)
    # Almost a day later only C's call of FOUR at -0.5h is in the window; A's at -1h is not,
    # but still counts as a caller, so FOUR alerts with two channels.
    later = await replay_for(postgres, Filters(min_channels=2), NOW + timedelta(hours=23.25), cache=None)
    assert [(a.symbol, a.channel_ids) for a in later.result.tokens] == [("FOUR", (A, C))]


async def test_history_younger_than_the_window_is_said(stores: Stores) -> None:
    await write_day(stores.postgres, NOW)
    await record_history_since(stores.postgres, NOW - timedelta(hours=6))
    day = await load_replay_day(stores.postgres, NOW)
    assert not day.complete and round(day.covered_hours) == 6
    result = replay(FILTERS, day.calls, day.prices, day.channels, window_start=day.start)
    assert "only 6 hours" in render_report(ReplayReport(result, day), "en")


async def test_an_empty_history(stores: Stores) -> None:
    report = await replay_for(stores.postgres, FILTERS, NOW, cache=None)
    assert (report.result.alerts, report.day.history_start) == (0, None)


async def test_the_loaded_day_is_shared_for_a_minute(stores: Stores) -> None:
    cache = ReplayDayCache(ttl=60)
    await write_day(stores.postgres, NOW)
    first = await replay_for(stores.postgres, FILTERS, NOW, cache=cache)
    await stores.postgres.execute("DELETE FROM token_prices")
    # Many presses at once: one day, read before the delete.
    again = await asyncio.gather(
        *(replay_for(stores.postgres, FILTERS, NOW + timedelta(seconds=5), cache=cache) for _ in range(10))
    )
    assert all(r.day is first.day for r in again)
    # Another moment, or an expired entry, reads afresh.
    fresh = await replay_for(stores.postgres, FILTERS, NOW + timedelta(minutes=10), cache=cache)
    assert fresh.day is not first.day and fresh.result.reached_2x == 0
    cache.ttl = 0
    assert (await replay_for(stores.postgres, FILTERS, NOW, cache=cache)).day is not first.day


async def test_history_older_than_a_week_is_pruned(stores: Stores) -> None:
    writer = await write_day(stores.postgres, NOW)
    # 7 days after NOW, the prices older than NOW - 0.75h are gone (the points at -0.5h and
    # -0.25h stay); calls are kept, as the record of who called what.
    deleted = await writer.prune(NOW + timedelta(days=7) - timedelta(hours=0.75))
    assert deleted == len(DAY_PRICES) - 2
    assert await stores.postgres.fetchval("SELECT count(*) FROM calls") == len(DAY_CALLS)
    assert await stores.postgres.fetchval("SELECT count(*) FROM token_prices") == 2
    assert await PersistenceWriter(stores.postgres, history_days=None).prune(NOW + timedelta(days=30)) == 0


# ------------------------------------------------------------------------ the statistics of the time
#
# B's statistics as each day began (channel_stats_history): on 19 November the feed said 30%,
# so SIX, alerted at -20h (19 Nov 16:00) only with B passing, does not alert, nor does FIVE at
# -26h (19 Nov 10:00), before the window; on 20 November the feed had said nothing and the bot
# measured 55%, so ONE, TWO and THREE (all on 20 Nov) alert as with today's 50%, and FIVE too, at
# C's call at -1h, with A and B passing then: it reached 10x at -0.5h. A has no snapshot: today's
# statistics.

B_DAYS = [
    (date(2026, 11, 19), Channel(B, name="Beta", username="betacalls", win_rate=0.3, avg_gain=2.0)),
    (date(2026, 11, 20), Channel(B, name="Beta", username="betacalls", win_rate=0.55, avg_gain=2.0)),
]


def test_each_call_sees_its_days_statistics() -> None:
    calls, prices, channels = replay_calls(NOW), replay_prices(NOW), replay_channels()
    result = replay(FILTERS, calls, prices, channels, window_start=WINDOW, snapshots={B: B_DAYS})
    assert by_symbol(result) == {"ONE": (-9, 1.8), "TWO": (-5, 2.5), "THREE": (-2, 1.6), "FIVE": (-1, 10.0)}
    # Only days after the calls: today's statistics, as without snapshots.
    later = {B: [(date(2026, 11, 21), Channel(B, win_rate=0.0))]}
    assert replay(FILTERS, calls, prices, channels, window_start=WINDOW, snapshots=later).alerts == EXPECTED_ALERTS


async def test_replay_reads_the_days_snapshots(stores: Stores) -> None:
    postgres = stores.postgres
    await write_day(postgres, NOW)
    await record_history_since(postgres, NOW - timedelta(days=3))
    for day, feed_rate, rate in ((date(2026, 11, 19), 0.3, 0.7), (date(2026, 11, 20), None, 0.55)):
        await postgres.execute(
            "INSERT INTO channel_stats_history (channel_id, day, feed_win_rate, feed_avg_gain, win_rate, avg_gain,"
            " calls, resolved, wins, unresolved, unpriced, computed_at) VALUES ($1, $2, $3, 2.0, $4, 1.5, 20, 20, 11,"
            " 0, 0, $5)",
            B,
            day,
            feed_rate,
            rate,
            datetime.combine(day, datetime.min.time(), UTC),
        )
    report = await replay_for(postgres, FILTERS, NOW, cache=None)
    assert [(d, c.win_rate) for d, c in report.day.snapshots[B]] == [(d, c.win_rate) for d, c in B_DAYS]
    assert report.day.snapshots[B][0][1].username == "betacalls"
    assert {a.symbol for a in report.result.tokens} == {"ONE", "TWO", "THREE", "FIVE"}
    # No snapshot yet: the current statistics, as before.
    await postgres.execute("DELETE FROM channel_stats_history")
    report = await replay_for(postgres, FILTERS, NOW, cache=None)
    assert (report.result.alerts, report.result.reached_2x) == (EXPECTED_ALERTS, EXPECTED_2X)


# ------------------------------------------------------------------------------- (c) the button


REPLY_TIMEOUT = 10.0


@dataclass
class Env:
    server: FakeTelegramServer
    bot: Bot
    postgres: PostgresManager

    async def ask(self, user_id: int, message: str, language_code: str = "en") -> SentRecord:
        before = len(self.server.messages_to(user_id))
        self.server.inject_message(user_id, message, language_code=language_code, first_name="Ann")
        replies = await self.server.wait_for_sent(
            lambda r: r.chat_id == user_id, count=before + 1, timeout=REPLY_TIMEOUT
        )
        return replies[before]

    async def press_replay(self, user_id: int) -> SentRecord:
        """The bot offers the button (as the Filters screen will), the user presses it."""
        data = FilterCB(action="replay").pack()
        markup = InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Test my filters", callback_data=data)]]
        )
        offered = await self.bot.send_message(user_id, "Your filters", reply_markup=markup)
        before = len(self.server.messages_to(user_id))
        self.server.inject_callback(user_id, offered.message_id, data)
        replies = await self.server.wait_for_sent(
            lambda r: r.chat_id == user_id, count=before + 1, timeout=REPLY_TIMEOUT
        )
        await self.server.wait_for(
            lambda: any(a.user_id == user_id for a in self.server.answered_callbacks),
            REPLY_TIMEOUT,
            description="the press answered",
        )
        return replies[before]


@pytest.fixture
async def env(stores: Stores) -> AsyncIterator[Env]:
    async with FakeTelegramServer(limits=RateLimits.unlimited()) as server:
        settings = Settings(_env_file=None, bot_token=DEFAULT_TOKEN, telegram_api_url=server.base_url)
        services = build_services(stores.redis, stores.postgres, stores.caches, settings.admin_id_set)
        bot = create_bot(DEFAULT_TOKEN, server.base_url)
        dp: Dispatcher = build_dispatcher(services, settings=settings, redis=stores.redis)
        polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
        try:
            yield Env(server, bot, stores.postgres)
        finally:
            await dp.stop_polling()
            await asyncio.wait_for(polling, timeout=10)
            await bot.session.close()


async def set_filters(env: Env, user_id: int, language_code: str, commands: Sequence[str]) -> None:
    await env.ask(user_id, "/start", language_code)
    for command in commands:
        await env.ask(user_id, command, language_code)


FILTER_COMMANDS = ["/set min_mcap 20k", "/set min_win_rate 50", "/set min_channels 2"]


async def test_the_button_answers_with_the_counts_in_english_and_russian(env: Env) -> None:
    now = datetime.now(UTC)
    await write_day(env.postgres, now)
    await record_history_since(env.postgres, now - timedelta(days=3))

    await set_filters(env, 7, "en", FILTER_COMMANDS)
    reply = await env.press_replay(7)
    assert reply.text is not None
    assert f"brought {EXPECTED_ALERTS} alerts; {EXPECTED_2X} of them reached 2x after the alert" in reply.text
    assert "Best of them:" in reply.text
    assert reply.text.index("SIX: 2.8x") < reply.text.index("TWO: 2.5x") < reply.text.index("ONE: 1.8x")
    assert "THREE: 1.6x" in reply.text and "FOUR" not in reply.text and "only" not in reply.text
    answered = [a for a in env.server.answered_callbacks if a.user_id == 7]
    assert answered and "Replaying" in (answered[0].text or "")

    await set_filters(env, 8, "ru", FILTER_COMMANDS)
    reply = await env.press_replay(8)
    assert reply.text is not None
    assert f"пришло бы оповещений: {EXPECTED_ALERTS}" in reply.text
    assert f"сделали 2x после оповещения: {EXPECTED_2X}" in reply.text
    assert "Лучшие из них:" in reply.text and "TWO: 2.5x" in reply.text

    # Filters nothing passes: told so, and how to loosen them.
    await env.ask(7, "/set min_mcap 5m")
    reply = await env.press_replay(7)
    assert reply.text is not None and "no alerts" in reply.text and "/unset" in reply.text
