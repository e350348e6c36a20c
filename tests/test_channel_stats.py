"""Channel statistics the bot computes: the rules on a hand-worked channel, the same channel
through PostgreSQL as the job folds it over eleven days (prices pruned behind it), the job run
twice, the feed's figures winning in the channel directory and the matcher, and a period's figures."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from domain.channel_stats import (
    CallOutcome,
    ChannelFigures,
    RatedChannel,
    best_channels,
    channel_figures,
    effective_channel,
)
from domain.events import CallEvent, Channel, ChannelStatsEvent, PriceEvent, TokenInfo
from domain.filters import Filters, TokenFacts
from domain.matching import SubscriberIndex
from domain.subscriber import Subscriber
from managers.postgres import PostgresManager
from services.cache import CacheRegistry
from services.channel_stats import LOCK_KEY, ChannelStatistics
from services.channels import ChannelDirectory, channel_figures_key
from services.persistence import PersistenceWriter
from tests.conftest import Stores

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SUPPLY = 1e9  # price = market cap / supply

# ------------------------------------------------------------------------ the hand-worked channel
#
# Channel A's ten calls, at NOW (market caps; "peak" = the highest within 7 days after the call):
#
#  call  called        at call  peak in its 7 days          peak multiple  state at NOW
#  a     10 days ago   40k      100k (+2d); 400k at +8d     2.5            win
#        does not count, after its window
#  b     9 days ago    50k      60k (+1d); 200k at +7d1h    1.2            loss
#  c     8 days ago    20k      500k (+3d)                  25 (10 capped) win
#  d     8 days ago    30k      15k (+1h): never above       1.0            loss
#  e     7 days ago    10k      19k (+6d)                   1.9            loss (its 7 days just ended)
#  f     2 days ago    10k      30k (+1d)                   3.0            win (resolved early)
#  g     1 day ago     10k      15k (+2h)                   1.5            unresolved
#  h     3 hours ago   10k      no price yet                -              unresolved
#  i     8 days ago    10k      no price ever               -              unpriced (left out)
#  j     3 days ago    40k      80k (+4h), exactly 2x       2.0            win (2x counts)
#
# resolved = a b c d e f j = 7, wins = a c f j = 4  ->  win rate 4/7 = 57.14%
# capped mean of resolved multiples = (2.5 + 1.2 + 10 + 1.0 + 1.9 + 3.0 + 2.0) / 7 = 21.6 / 7 = 3.0857
# median (uncapped) of 1.0 1.2 1.9 2.0 2.5 3.0 25 = 2.0
# unresolved = g h = 2, unpriced = i = 1, calls = 10

EXPECTED_A = ChannelFigures(
    calls=10,
    resolved=7,
    wins=4,
    unresolved=2,
    unpriced=1,
    win_rate=4 / 7,
    avg_gain=21.6 / 7,
    median_gain=2.0,
)

A, B, C = "-1001", "-1002", "-1003"


@dataclass(frozen=True)
class Call:
    name: str
    channel: str
    hours: float  # before NOW (negative)
    mcap: float
    priced: bool = True  # the call gave a price (else the market cap is the base)


@dataclass(frozen=True)
class Point:
    name: str
    hours: float  # after the call
    mcap: float


CALLS = [
    Call("a", A, -240, 40_000),
    Call("b", A, -216, 50_000),
    Call("c", A, -192, 20_000),
    Call("d", A, -192, 30_000, priced=False),
    Call("e", A, -168, 10_000),
    Call("f", A, -48, 10_000),
    Call("g", A, -24, 10_000),
    Call("h", A, -3, 10_000),
    Call("i", A, -192, 10_000),
    Call("j", A, -72, 40_000, priced=False),
    # B: three calls, one win, one loss, one open: too few to rank.
    Call("k", B, -200, 10_000),
    Call("l", B, -190, 10_000),
    Call("m", B, -10, 10_000),
]
POINTS = [
    Point("a", 1, 60_000),
    Point("a", 48, 100_000),
    Point("a", 192, 400_000),  # after a's window
    Point("b", 24, 60_000),
    Point("b", 169, 200_000),  # after b's window
    Point("c", 72, 500_000),
    Point("d", 1, 15_000),
    Point("e", 144, 19_000),
    Point("f", 24, 30_000),
    Point("g", 2, 15_000),
    Point("j", 4, 80_000),
    Point("k", 5, 25_000),
    Point("l", 5, 12_000),
]


def address(name: str) -> str:
    return (name.upper() * 44)[:40] + "pump"


def called_at(call: Call) -> datetime:
    return NOW + timedelta(hours=call.hours)


def outcomes(channel: str) -> list[CallOutcome]:
    """The hand-worked table as the domain takes it."""
    result = []
    for call in CALLS:
        if call.channel != channel:
            continue
        start = called_at(call)
        peaks = [
            p.mcap
            for p in POINTS
            if p.name == call.name
            and timedelta(0) < timedelta(hours=p.hours) <= timedelta(days=7)
            and start + timedelta(hours=p.hours) <= NOW
        ]
        result.append(CallOutcome(start, call.mcap, max(peaks) if peaks else None))
    return result


def assert_figures(actual: ChannelFigures | None, expected: ChannelFigures) -> None:
    assert actual is not None
    counts = ("calls", "resolved", "wins", "unresolved", "unpriced")
    assert [getattr(actual, n) for n in counts] == [getattr(expected, n) for n in counts]
    for name in ("win_rate", "avg_gain", "median_gain"):
        got, want = getattr(actual, name), getattr(expected, name)
        assert (got is None and want is None) or math.isclose(got, want, abs_tol=1e-6), (name, got, want)


# ------------------------------------------------------------------------------- the pure rules


def test_the_hand_worked_channel() -> None:
    figures = channel_figures(outcomes(A), NOW)
    assert_figures(figures, EXPECTED_A)
    states = {call.name: o.state(NOW) for call, o in zip([c for c in CALLS if c.channel == A], outcomes(A))}
    assert states == {
        "a": "win",
        "b": "loss",
        "c": "win",
        "d": "loss",
        "e": "loss",
        "f": "win",
        "g": "unresolved",
        "h": "unresolved",
        "i": "unpriced",
        "j": "win",
    }
    # A minute earlier e's 7 days were not over: it was still open.
    earlier = channel_figures(outcomes(A), NOW - timedelta(minutes=1))
    assert (earlier.resolved, earlier.unresolved) == (6, 3)
    # Nothing resolved: no figures, only counts.
    young = channel_figures([CallOutcome(NOW, 10.0, 15.0), CallOutcome(NOW, 10.0)], NOW)
    assert (young.calls, young.unresolved, young.win_rate, young.avg_gain, young.median_gain) == (
        2,
        2,
        None,
        None,
        None,
    )
    # Another cap.
    assert math.isclose(channel_figures(outcomes(A), NOW, cap=3.0).avg_gain or 0, (2.5 + 1.2 + 3 + 1 + 1.9 + 3 + 2) / 7)


def test_the_feeds_figures_win_figure_by_figure() -> None:
    ours = ChannelFigures(10, 7, 4, 2, 1, 0.5714, 3.09, 2.0)
    feed = Channel(A, "Alpha", "alphacalls", win_rate=0.41)
    seen = effective_channel(feed, ours)
    assert (seen.win_rate, seen.avg_gain, seen.calls, seen.name, seen.refs) == (
        0.41,
        3.09,
        10,
        "Alpha",
        frozenset({A, "@alphacalls"}),
    )
    assert effective_channel(Channel(A, win_rate=0.41, avg_gain=2.7, calls=118), ours) == Channel(
        A, win_rate=0.41, avg_gain=2.7, calls=118
    )
    assert effective_channel(feed, None) is feed
    assert RatedChannel(feed, ours).effective == seen


def test_best_channels_rank_only_those_with_enough_resolved_calls() -> None:
    def rated(channel_id: str, resolved: int, wins: int, avg: float) -> RatedChannel:
        return RatedChannel(
            Channel(channel_id), ChannelFigures(resolved, resolved, wins, 0, 0, wins / resolved, avg, avg)
        )

    oracle = rated("-1", 3, 3, 9.0)  # three lucky calls
    steady = rated("-2", 40, 20, 2.5)
    also_half = rated("-3", 12, 6, 3.0)  # same rate as steady, fewer calls
    better = rated("-4", 10, 6, 1.5)
    never = RatedChannel(Channel("-5"), ChannelFigures(4, 0, 0, 4, 0, None, None, None))
    board = best_channels([oracle, steady, also_half, better, never, RatedChannel(Channel("-6"))], min_resolved=10)
    assert [r.channel.id for r in board.ranked] == ["-4", "-2", "-3"]
    assert [r.channel.id for r in board.too_few] == ["-1"]
    assert len(best_channels([steady, also_half, better], 10, limit=2).ranked) == 2


# ------------------------------------------------------------------------------- through PostgreSQL


async def write_calls(postgres: PostgresManager) -> PersistenceWriter:
    """The calls and every price point, as the pipeline's persistence writer stores them."""
    writer = PersistenceWriter(postgres)
    writer.channel(Channel(C, "Gamma", "gammacalls", win_rate=0.9, calls=500), stats_at=NOW - timedelta(days=20))
    for call in CALLS:
        token = TokenInfo(
            address(call.name),
            symbol=call.name.upper(),
            market_cap_usd=call.mcap,
            price_usd=call.mcap / SUPPLY if call.priced else None,
        )
        channel = Channel(call.channel, name={A: "Alpha", B: "Beta"}[call.channel], username=None)
        writer.channel(channel)
        writer.token(token, called_at(call))
        writer.call(CallEvent(token=token, channel=channel, called_at=called_at(call)))
    for point in POINTS:
        call = next(c for c in CALLS if c.name == point.name)
        ts = called_at(call) + timedelta(hours=point.hours)
        if ts <= NOW:
            writer.price(PriceEvent(address(point.name), point.mcap / SUPPLY, point.mcap, ts))
    await writer.flush()
    return writer


async def run_the_job_until(statistics: ChannelStatistics, writer: PersistenceWriter, until: datetime) -> None:
    """The job every 12 hours from eleven days before NOW, the week-old prices pruned before each run."""
    moment = NOW - timedelta(days=11)
    while moment <= until:
        await writer.prune(moment)
        assert (await statistics.refresh(moment)).ran
        moment += timedelta(hours=12)


async def stored_figures(postgres: PostgresManager, channel_id: str) -> ChannelFigures | None:
    rated = {r.channel.id: r for r in await ChannelStatistics(postgres).figures_between(None, None, now=NOW)}
    stored = {r.channel.id: r for r in await ChannelStatistics(postgres).rated()}
    if channel_id in stored:
        # The figures the job stored are the ones a fresh computation gives.
        assert stored[channel_id].figures == rated[channel_id].figures
    return stored[channel_id].figures if channel_id in stored else None


async def test_the_job_gives_the_hand_worked_figures_and_again_the_same(stores: Stores) -> None:
    postgres = stores.postgres
    writer = await write_calls(postgres)
    statistics = ChannelStatistics(postgres)
    await run_the_job_until(statistics, writer, NOW)

    # The first week's prices are gone, the outcomes kept them.
    assert await postgres.fetchval("SELECT min(ts) FROM token_prices") >= NOW - timedelta(days=7)
    assert_figures(await stored_figures(postgres, A), EXPECTED_A)
    assert_figures(
        await stored_figures(postgres, B),
        ChannelFigures(3, 2, 1, 1, 0, 0.5, (2.5 + 1.2) / 2, (2.5 + 1.2) / 2),
    )
    outcome = await postgres.fetchrow(
        "SELECT o.* FROM call_outcomes o JOIN calls c ON c.id = o.call_id WHERE c.token_address = $1", address("j")
    )
    assert (outcome["basis"], float(outcome["base"]), float(outcome["peak"])) == ("market_cap", 40_000, 80_000)
    assert outcome["reached_2x_at"] == NOW - timedelta(hours=72 - 4) and outcome["final"] is False
    a_row = await postgres.fetchrow(
        "SELECT o.* FROM call_outcomes o JOIN calls c ON c.id = o.call_id WHERE c.token_address = $1", address("a")
    )
    assert a_row["basis"] == "price" and a_row["final"] and float(a_row["peak"]) * SUPPLY == pytest.approx(100_000)
    # i never had a price: unpriced, its row kept with no peak; h and m have none yet.
    assert await postgres.fetchval("SELECT count(*) FROM call_outcomes WHERE peak IS NULL") == 3
    # The feed-described channel with no calls has no computed figures.
    assert await postgres.fetchval("SELECT computed_at FROM channels WHERE id = $1", C) is None

    async def everything() -> list[list[object]]:
        tables = []
        for query in (
            "SELECT * FROM call_outcomes ORDER BY call_id",
            "SELECT * FROM channels ORDER BY id",
            "SELECT * FROM channel_stats_history ORDER BY channel_id, day",
        ):
            tables.append(
                [
                    tuple((k, v) for k, v in dict(row).items() if k != "updated_at")
                    for row in await postgres.fetch(query)
                ]
            )
        return tables

    before = await everything()
    again = await statistics.refresh(NOW)
    assert again.ran and again.changed == {}
    assert await everything() == before


async def test_a_snapshot_a_day_as_the_day_began(stores: Stores) -> None:
    postgres = stores.postgres
    writer = await write_calls(postgres)
    await run_the_job_until(ChannelStatistics(postgres), writer, NOW)
    rows = await postgres.fetch(
        "SELECT day, resolved, wins, computed_at, feed_win_rate FROM channel_stats_history WHERE channel_id = $1 "
        "ORDER BY day",
        A,
    )
    # Runs at 12:00 and 00:00: each day's snapshot is its 00:00 run (the first day's, 12:00).
    assert [r["day"] for r in rows] == [date(2026, 11, 10) + timedelta(days=n) for n in range(11)]
    assert all(r["computed_at"].hour == 0 for r in rows[1:])
    today = rows[-1]
    # As 20 November began, e (called 19 Nov 12:00 - 7 days) was still open: 6 resolved, 4 wins.
    assert (today["day"], today["resolved"], today["wins"], today["feed_win_rate"]) == (date(2026, 11, 20), 6, 4, None)
    # 9 days ago only a, b and c were called; a and c reached 2x within a day or three.
    assert [(r["resolved"], r["wins"]) for r in rows[:5]] == [(0, 0), (0, 0), (0, 0), (1, 1), (1, 1)]


async def test_two_processes_at_once_refresh_once(stores: Stores) -> None:
    postgres = stores.postgres
    await write_calls(postgres)
    first, second = ChannelStatistics(postgres), ChannelStatistics(postgres)
    async with postgres.transaction() as conn:
        # Another process holds the lock: this one leaves the work to it.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        assert not (await first.refresh(NOW)).ran
    assert (await second.refresh(NOW)).ran


async def test_the_period_figures_for_the_weekly_report(stores: Stores) -> None:
    postgres = stores.postgres
    writer = await write_calls(postgres)
    statistics = ChannelStatistics(postgres)
    await run_the_job_until(statistics, writer, NOW)
    # The calls of the last 4 days: f, g, h, j of A (f and j won; g, h open) and m of B (open).
    week = {r.channel.id: r for r in await statistics.figures_between(NOW - timedelta(days=4), NOW, now=NOW)}
    assert set(week) == {A, B}
    assert_figures(week[A].figures, ChannelFigures(4, 2, 2, 2, 0, 1.0, 2.5, 2.5))
    assert week[A].channel.name == "Alpha"
    assert_figures(week[B].figures, ChannelFigures(1, 0, 0, 1, 0, None, None, None))


# ------------------------------------------------------------------------ the directory and filters


async def test_filters_see_the_feeds_figures_first_and_the_bots_elsewhere(stores: Stores) -> None:
    postgres = stores.postgres
    writer = await write_calls(postgres)
    directory = ChannelDirectory(stores.redis, postgres, stores.caches, writer)
    # A's feed frame gives only a win rate; B was never described by the feed.
    await directory.update_stats(ChannelStatsEvent(Channel(A, "Alpha", "alphacalls", win_rate=0.3)))
    await writer.flush()
    await run_the_job_until(ChannelStatistics(postgres, directory), writer, NOW)

    seen = await directory.info([A, B, C])
    assert seen[A].win_rate == 0.3  # the feed's
    assert seen[A].avg_gain == pytest.approx(21.6 / 7, abs=1e-6)  # the bot's: the feed gave none
    assert seen[A].calls == 10
    assert seen[B].win_rate == 0.5 and seen[C].win_rate == 0.9 and seen[C].avg_gain is None

    # Another process: from Redis, then (Redis records gone) from PostgreSQL, the same.
    for clear in (False, True):
        if clear:
            await stores.redis.delete(channel_figures_key(A), channel_figures_key(B), f"channel:{A}:info")
        other = ChannelDirectory(stores.redis, postgres, CacheRegistry(stores.redis))
        assert await other.info([A, B, C]) == seen
    stored = json.loads(await stores.redis.get(channel_figures_key(A)) or "null")
    assert stored["resolved"] == 7

    # The matcher: avg gain at least 3 passes A (the bot's 3.09) and fails B (1.85); win rate
    # at least 40% fails A (the feed's 30%, though the bot measures 57%).
    index = SubscriberIndex(
        [
            Subscriber(telegram_id=1, filters=Filters(min_avg_gain=3), is_admin=True),
            Subscriber(telegram_id=2, filters=Filters(min_win_rate=40), is_admin=True),
        ]
    )
    token = TokenFacts(50_000, None, None, None)
    callers = await directory.callers([A], {})
    assert index.match(token, NOW, callers) == [1]
    assert index.match(token, NOW, await directory.callers([B], {})) == [2]

    # A new feed frame for A's average gain wins over the bot's from then on, here and after a
    # refresh that changes the bot's figures (g's 7 days are over: a loss).
    await directory.update_stats(ChannelStatsEvent(Channel(A, avg_gain=1.5)))
    assert (await directory.info([A]))[A].avg_gain == 1.5
    later = await ChannelStatistics(postgres, directory).refresh(NOW + timedelta(days=6, hours=1))
    assert later.changed[A].resolved == 8
    assert (await directory.info([A]))[A].avg_gain == 1.5
    figures = (await directory.records([A]))[A].figures
    assert figures is not None and figures.resolved == 8


async def test_the_sql_counts_as_the_rules_do_on_random_calls(stores: Stores) -> None:
    """The job's statements and domain.channel_stats agree, call by call state and figure by figure."""
    rng = random.Random(13)
    postgres = stores.postgres
    channel_ids = [f"-10{n}" for n in range(5)]
    for channel_id in channel_ids:
        await postgres.execute("INSERT INTO channels (id) VALUES ($1)", channel_id)
    expected: dict[str, list[CallOutcome]] = {}
    for n in range(300):
        channel_id = rng.choice(channel_ids)
        token = f"T{n:039d}pump"
        at = NOW - timedelta(minutes=rng.randrange(0, 14 * 24 * 60))
        base = rng.choice([1.0, 0.5, 10_000.0, 37_500.0])
        peak = rng.choice([None, base * rng.choice([0.3, 1.0, 1.99, 2.0, 2.5, 9.9, 10.0, 10.1, 250.0])])
        await postgres.execute("INSERT INTO tokens (address) VALUES ($1)", token)
        call_id = await postgres.fetchval(
            "INSERT INTO calls (token_address, channel_id, called_at, price_usd) VALUES ($1, $2, $3, $4) RETURNING id",
            token,
            channel_id,
            at,
            base,
        )
        await postgres.execute(
            "INSERT INTO call_outcomes (call_id, channel_id, token_address, called_at, basis, base, peak, seen_until) "
            "VALUES ($1, $2, $3, $4, 'price', $5, $6, $7)",
            call_id,
            channel_id,
            token,
            at,
            base,
            peak,
            NOW,
        )
        expected.setdefault(channel_id, []).append(CallOutcome(at, base, peak))
    statistics = ChannelStatistics(postgres)
    for now in (NOW, NOW - timedelta(days=3), NOW + timedelta(days=4)):
        got = {r.channel.id: r.figures for r in await statistics.figures_between(None, None, now=now)}
        for channel_id, calls in expected.items():
            assert_figures(got[channel_id], channel_figures([c for c in calls if c.called_at <= now], now))
