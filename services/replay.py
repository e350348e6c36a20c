"""Filter replay ("test my filters"): what a subscriber's filters would have brought in the last day.

`replay` is the rule, pure, deciding as the live pipeline does; `load_replay_day` reads the day
from PostgreSQL; `FilterReplay` shares one loaded day for a minute. What replay cannot know:
docs/architecture.md, "Filter replay".
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import asyncpg

from domain.channel_stats import RatedChannel
from domain.events import Channel
from domain.filters import Filters, TokenFacts, token_matches
from managers.postgres import PostgresManager
from services.channel_stats import feed_channel_of_row, figures_of_row, load_snapshots, rated_of_snapshot

logger = logging.getLogger("alertbot.replay")

TARGET_MULTIPLE = 2.0
DEFAULT_HOURS = 24
# Calls of a window's tokens made before the window still count as callers (min_channels), and
# a token that would have alerted before the window does not alert again in it, as live.
DEFAULT_LOOKBACK = timedelta(days=7)
CACHE_TTL_SECONDS = 60.0
# Reading a day of history is heavier than a normal query; still bounded, so a press is answered.
LOAD_TIMEOUT_SECONDS = 30.0
MIGRATION_NAME = "replay_history"

Basis = Literal["price", "market_cap"]
# Per channel, its statistics as each recorded day began (as filters saw it), by day.
Snapshots = Mapping[str, Sequence[tuple[date, Channel]]]


@dataclass(frozen=True)
class ReplayCall:
    """One recorded call: the token as that call described it, and who called it when."""

    token_address: str
    channel_id: str
    called_at: datetime
    symbol: str | None = None
    market_cap_usd: float | None = None
    liquidity_usd: float | None = None
    holders: int | None = None
    price_usd: float | None = None
    token_created_at: datetime | None = None  # on-chain creation (the max_age filter)

    def facts(self) -> TokenFacts:
        return TokenFacts(self.market_cap_usd, self.liquidity_usd, self.holders, self.token_created_at)


@dataclass(frozen=True)
class PricePoint:
    ts: datetime
    price_usd: float | None = None
    market_cap_usd: float | None = None


@dataclass(frozen=True)
class ReplayAlert:
    """A token the filters would have alerted, and how it did afterwards."""

    token_address: str
    symbol: str | None
    alerted_at: datetime
    channel_ids: tuple[str, ...]  # the calling channels at the alert, first caller first
    basis: Basis | None  # what the multiple is measured on; None: the call had neither figure
    base: float | None  # the price (or market cap) at the alerting call
    best_multiple: float | None  # the highest later price / base; None when nothing came after

    @property
    def reached_2x(self) -> bool:
        return self.best_multiple is not None and self.best_multiple >= TARGET_MULTIPLE


@dataclass(frozen=True)
class ReplayResult:
    alerts: int
    reached_2x: int
    tokens: tuple[ReplayAlert, ...]  # in alert order

    def top(self, count: int = 5) -> list[ReplayAlert]:
        """The best `count` alerts by multiple (alerts with no known multiple last)."""
        ranked = sorted(self.tokens, key=lambda a: (a.best_multiple is None, -(a.best_multiple or 0.0), a.alerted_at))
        return ranked[:count]


def replay(
    filters: Filters,
    calls: Sequence[ReplayCall],
    prices: Mapping[str, Sequence[PricePoint]],
    channels: Mapping[str, Channel],
    *,
    window_start: datetime | None = None,
    snapshots: Snapshots | None = None,
) -> ReplayResult:
    """The alerts `filters` would have given on `calls`, and which of them reached 2x.

    As live: calls are taken in `called_at` order; at each call the token is checked as that
    call describes it (token-level filters), with every distinct channel that called it so far
    (per-channel filters, min_channels), and it alerts the first time it passes, once.
    A channel missing from `channels` is known by its id only, so it fails any statistics filter.
    With `snapshots`, each call sees its callers' statistics of the call's (UTC) day: the latest
    snapshot at or before that day, else the channel as `channels` has it (today's).

    Calls at or before `window_start` are history: they make callers, and a token that would
    have alerted then is not alerted again, but only alerts after `window_start` are counted.

    The base is the alerting call's price (its market cap when it has no price); a token
    "reached 2x" when some point of `prices` strictly after the alert is at least twice that.
    `prices` may hold only the points that are not beaten later (see `load_replay_day`): the
    highest point after any moment is the same.
    """
    ordered = sorted(enumerate(calls), key=lambda item: (item[1].called_at, item[0]))
    callers: dict[str, dict[str, Channel]] = {}
    first_called: dict[str, dict[str, datetime]] = {}
    decided: set[str] = set()  # alerted, in the window or before it
    alerts: list[ReplayAlert] = []
    for _, call in ordered:
        address = call.token_address
        if address in decided:
            continue
        token_callers = callers.setdefault(address, {})
        if call.channel_id not in token_callers:
            token_callers[call.channel_id] = channels.get(call.channel_id) or Channel(call.channel_id)
            first_called.setdefault(address, {})[call.channel_id] = call.called_at
        seen: Iterable[Channel] = token_callers.values()
        if snapshots:
            day = call.called_at.astimezone(UTC).date()
            seen = [_as_of(snapshots, channel, day) for channel in token_callers.values()]
        if not token_matches(filters, call.facts(), call.called_at, seen):
            continue
        decided.add(address)
        if window_start is not None and call.called_at <= window_start:
            continue  # alerted before the window: the window never sees it
        alerts.append(_alert(call, tuple(first_called[address]), prices.get(address, ())))
    return ReplayResult(alerts=len(alerts), reached_2x=sum(1 for a in alerts if a.reached_2x), tokens=tuple(alerts))


def _as_of(snapshots: Snapshots, channel: Channel, day: date) -> Channel:
    """`channel` as its latest snapshot at or before `day` has it; as it is when there is none."""
    days = snapshots.get(channel.id)
    if not days:
        return channel
    position = bisect.bisect_right(days, day, key=lambda item: item[0])
    return days[position - 1][1] if position else channel


def _alert(call: ReplayCall, channel_ids: tuple[str, ...], points: Sequence[PricePoint]) -> ReplayAlert:
    basis: Basis | None
    if call.price_usd is not None and call.price_usd > 0:
        basis, base = "price", call.price_usd
    elif call.market_cap_usd is not None and call.market_cap_usd > 0:
        basis, base = "market_cap", call.market_cap_usd
    else:
        basis, base = None, None
    best: float | None = None
    if basis is not None and base is not None:
        for point in points:
            if point.ts <= call.called_at:  # strictly after the alert: a 2x before it was not the user's
                continue
            value = point.price_usd if basis == "price" else point.market_cap_usd
            if value is not None and (best is None or value > best):
                best = value
    return ReplayAlert(
        token_address=call.token_address,
        symbol=call.symbol,
        alerted_at=call.called_at,
        channel_ids=channel_ids,
        basis=basis,
        base=base,
        best_multiple=None if best is None or base is None else best / base,
    )


# --------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ReplayDay:
    """Everything `replay` needs for the window (`start`, `end`], as read from PostgreSQL."""

    start: datetime
    end: datetime
    calls: tuple[ReplayCall, ...]  # the window's tokens' calls, from `lookback` before it on
    prices: Mapping[str, tuple[PricePoint, ...]]
    channels: Mapping[str, Channel]  # as filters see them now
    history_start: datetime | None  # from when calls and prices are both recorded; None: no calls
    snapshots: Snapshots = field(default_factory=dict)  # the calling channels' statistics by day

    @property
    def complete(self) -> bool:
        """The history covers the whole window."""
        return self.history_start is not None and self.history_start <= self.start

    @property
    def covered_hours(self) -> float:
        if self.history_start is None:
            return 0.0
        return max(0.0, (self.end - max(self.history_start, self.start)).total_seconds() / 3600)


@dataclass(frozen=True)
class ReplayReport:
    result: ReplayResult
    day: ReplayDay


# The tokens called in the window, with every call of theirs from `lookback` before it on, as
# each call described the token. $1 = window start, $2 = window end (now), $3 = lookback start.
CALLS_SQL = """
WITH window_tokens AS (
    SELECT DISTINCT token_address FROM calls WHERE called_at > $1 AND called_at <= $2
)
SELECT c.token_address, c.channel_id, c.called_at, c.market_cap_usd, c.liquidity_usd, c.holders, c.price_usd,
       t.symbol, t.created_at AS token_created_at
FROM calls c
JOIN window_tokens w ON w.token_address = c.token_address
JOIN tokens t ON t.address = c.token_address
WHERE c.called_at > $3 AND c.called_at <= $2
ORDER BY c.called_at, c.id
"""
# Price points of the window's tokens after their first call in the window (no alert can come
# earlier). Only points no later point beats, on price or on market cap, are sent: the highest
# point after any moment is among them, and a token's day of trades shrinks to a few rows.
PRICES_SQL = """
WITH first_calls AS (
    SELECT token_address, min(called_at) AS first_at FROM calls
    WHERE called_at > $1 AND called_at <= $2 GROUP BY token_address
), points AS (
    SELECT p.token_address, p.ts, p.price_usd, p.market_cap_usd,
           max(p.price_usd) OVER later AS later_price, max(p.market_cap_usd) OVER later AS later_mcap
    FROM token_prices p JOIN first_calls f ON f.token_address = p.token_address
    WHERE p.ts > f.first_at AND p.ts <= $2
    WINDOW later AS (PARTITION BY p.token_address ORDER BY p.ts DESC
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
)
SELECT token_address, ts, price_usd, market_cap_usd FROM points
WHERE (price_usd IS NOT NULL AND (later_price IS NULL OR price_usd > later_price))
   OR (market_cap_usd IS NOT NULL AND (later_mcap IS NULL OR market_cap_usd > later_mcap))
ORDER BY token_address, ts
"""
CHANNELS_SQL = """
SELECT id, name, username, win_rate, avg_gain, calls, computed_win_rate, computed_avg_gain, computed_median_gain,
       computed_calls, computed_resolved, computed_wins, computed_unresolved, computed_unpriced
FROM channels WHERE id = ANY($1::text[])
"""
# Recording is complete from when this history began (migration 0003) and calls were kept.
HISTORY_START_SQL = """
SELECT (SELECT applied_at FROM schema_migrations WHERE name = $1) AS recorded_from,
       (SELECT min(called_at) FROM calls) AS first_call
"""


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


async def load_replay_day(
    postgres: PostgresManager, now: datetime, hours: int = DEFAULT_HOURS, *, lookback: timedelta = DEFAULT_LOOKBACK
) -> ReplayDay:
    """The calls of the `hours` before `now` (and their tokens' earlier calls), the price points
    that matter after them, and the calling channels' statistics: current, and each day's
    snapshot over the calls' days (services.channel_stats).

    Read in one repeatable-read transaction, so the queries see the same moment.
    """
    start = now - timedelta(hours=hours)
    async with postgres.acquire(timeout=LOAD_TIMEOUT_SECONDS) as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            call_rows = await conn.fetch(CALLS_SQL, start, now, start - lookback, timeout=LOAD_TIMEOUT_SECONDS)
            price_rows = await conn.fetch(PRICES_SQL, start, now, timeout=LOAD_TIMEOUT_SECONDS)
            channel_ids = sorted({row["channel_id"] for row in call_rows})
            channel_rows = await conn.fetch(CHANNELS_SQL, channel_ids, timeout=LOAD_TIMEOUT_SECONDS)
            first_day = min((row["called_at"] for row in call_rows), default=now).astimezone(UTC).date()
            snapshot_rows = await load_snapshots(
                conn, channel_ids, first_day, now.astimezone(UTC).date(), timeout=LOAD_TIMEOUT_SECONDS
            )
            history = await conn.fetchrow(HISTORY_START_SQL, MIGRATION_NAME, timeout=LOAD_TIMEOUT_SECONDS)
    # A busy day is tens of thousands of rows: built in a worker thread, so the event loop (and
    # the alerts it sends) keeps getting its turns meanwhile.
    return await asyncio.to_thread(_build_day, start, now, call_rows, price_rows, channel_rows, snapshot_rows, history)


def _build_day(
    start: datetime,
    now: datetime,
    call_rows: Sequence[asyncpg.Record],
    price_rows: Sequence[asyncpg.Record],
    channel_rows: Sequence[asyncpg.Record],
    snapshot_rows: Sequence[asyncpg.Record],
    history: asyncpg.Record | None,
) -> ReplayDay:
    calls = tuple(
        ReplayCall(
            token_address=row["token_address"],
            channel_id=row["channel_id"],
            called_at=row["called_at"],
            symbol=row["symbol"],
            market_cap_usd=_float(row["market_cap_usd"]),
            liquidity_usd=_float(row["liquidity_usd"]),
            holders=row["holders"],
            price_usd=_float(row["price_usd"]),
            token_created_at=row["token_created_at"],
        )
        for row in call_rows
    )
    prices: dict[str, list[PricePoint]] = {}
    for row in price_rows:
        prices.setdefault(row["token_address"], []).append(
            PricePoint(row["ts"], _float(row["price_usd"]), _float(row["market_cap_usd"]))
        )
    channels = {
        row["id"]: RatedChannel(feed_channel_of_row(row), figures_of_row(row)).effective for row in channel_rows
    }
    snapshots: dict[str, list[tuple[date, Channel]]] = {}
    for row in snapshot_rows:  # by channel, then day
        current = channels.get(row["channel_id"]) or Channel(row["channel_id"])
        snapshots.setdefault(current.id, []).append((row["day"], rated_of_snapshot(row, current).effective))
    first_call: datetime | None = history["first_call"] if history is not None else None
    recorded_from: datetime | None = history["recorded_from"] if history is not None else None
    history_start = None if first_call is None else max(first_call, recorded_from or first_call)
    return ReplayDay(
        start=start,
        end=now,
        calls=calls,
        prices={k: tuple(v) for k, v in prices.items()},
        channels=channels,
        history_start=history_start,
        snapshots={k: tuple(v) for k, v in snapshots.items()},
    )


@dataclass
class _Entry:
    loaded_at: float  # time.monotonic()
    hours: int
    day: ReplayDay


@dataclass
class ReplayDayCache:
    """The last day loaded per database, reused for `ttl` seconds.

    Everyone pressing the button within a minute shares one load (the history moves little in a
    minute); a load in progress is awaited by the presses that come meanwhile instead of
    starting another. Keyed weakly by the PostgresManager, so a closed one is forgotten.
    """

    ttl: float = CACHE_TTL_SECONDS
    _entries: weakref.WeakKeyDictionary[PostgresManager, _Entry] = field(default_factory=weakref.WeakKeyDictionary)
    _locks: weakref.WeakKeyDictionary[PostgresManager, asyncio.Lock] = field(default_factory=weakref.WeakKeyDictionary)

    def clear(self) -> None:
        self._entries.clear()

    def _fresh(self, postgres: PostgresManager, now: datetime, hours: int) -> ReplayDay | None:
        entry = self._entries.get(postgres)
        if entry is None or entry.hours != hours or time.monotonic() - entry.loaded_at > self.ttl:
            return None
        # A caller asking about another moment (tests, a back-dated `now`) gets its own load.
        if abs((entry.day.end - now).total_seconds()) > self.ttl:
            return None
        return entry.day

    async def get(self, postgres: PostgresManager, now: datetime, hours: int = DEFAULT_HOURS) -> ReplayDay:
        day = self._fresh(postgres, now, hours)
        if day is not None:
            return day
        lock = self._locks.setdefault(postgres, asyncio.Lock())
        async with lock:
            day = self._fresh(postgres, now, hours)  # loaded by whoever held the lock before us
            if day is None:
                day = await load_replay_day(postgres, now, hours)
                self._entries[postgres] = _Entry(time.monotonic(), hours, day)
        return day


async def replay_for(
    postgres: PostgresManager,
    filters: Filters,
    now: datetime,
    *,
    hours: int = DEFAULT_HOURS,
    cache: ReplayDayCache | None = None,
) -> ReplayReport:
    """`filters` replayed over the `hours` before `now`; `cache=None` reads the database afresh."""
    day = await cache.get(postgres, now, hours) if cache is not None else await load_replay_day(postgres, now, hours)
    # About 0.1 s of pure Python on a busy day: in a worker thread, for the same reason as above.
    result = await asyncio.to_thread(
        replay, filters, day.calls, day.prices, day.channels, window_start=day.start, snapshots=day.snapshots
    )
    return ReplayReport(result, day)


class FilterReplay:
    """Replays on one database, sharing its loaded day between the presses of the last `ttl` seconds."""

    def __init__(self, postgres: PostgresManager, *, ttl: float = CACHE_TTL_SECONDS) -> None:
        self.postgres = postgres
        self.cache = ReplayDayCache(ttl=ttl)

    async def report(self, filters: Filters, now: datetime, *, hours: int = DEFAULT_HOURS) -> ReplayReport:
        return await replay_for(self.postgres, filters, now, hours=hours, cache=self.cache)
