"""Channel statistics computed by the bot: call outcomes folded in, figures per channel, a snapshot a day.

The rules are domain/channel_stats.py's; here they run as a few set-based statements, so the
cost does not grow with Python loops over calls. `refresh` (the scheduled job, every 15
minutes) does, in one transaction that only one process runs at a time:

1. fold: each call still in its window (and each new one) gets the highest price of its token
   since the last run into `call_outcomes`, before price history is pruned; prices since
   FOLD_OVERLAP before the last run are read again, for rows the persistence writer wrote late;
2. figures: every channel's figures from its outcomes into `channels.computed_*` (only rows
   whose figures changed are written);
3. snapshot: the first run of a UTC day keeps each channel's figures in `channel_stats_history`.

Then the changed figures reach the channel directory (Redis, every process's cache), so filters
use them at once. Running it twice, or in two processes, gives the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from domain.channel_stats import GAIN_CAP, WINDOW, ChannelFigures, RatedChannel
from domain.events import Channel
from managers.postgres import PostgresManager

logger = logging.getLogger("alertbot.channel_stats")

REFRESH_MINUTES = 15
# Prices written up to this late (the persistence writer waits out PostgreSQL outages) still
# count; a call's outcome is final this long after its window ends.
FOLD_OVERLAP = timedelta(minutes=30)
REFRESH_TIMEOUT_SECONDS = 300.0
# One refresh at a time across processes: pg_try_advisory_xact_lock on this key (b"chstats").
LOCK_KEY = int.from_bytes(b"chstats", "big")

# $1 now, $2 window, $3 overlap. New calls: those within the window (older ones' first prices
# are pruned already). Base and peak: price, or market cap when the call gave no price.
FOLD_SQL = """
WITH todo AS (
    SELECT c.id AS call_id, c.channel_id, c.token_address, c.called_at,
           CASE WHEN c.price_usd > 0 THEN 'price' ELSE 'market_cap' END AS basis,
           CASE WHEN c.price_usd > 0 THEN c.price_usd ELSE c.market_cap_usd END AS base,
           NULL::timestamptz AS seen_until
    FROM calls c
    WHERE c.called_at > $1::timestamptz - $2::interval AND c.called_at <= $1::timestamptz
      AND (c.price_usd > 0 OR c.market_cap_usd > 0)
      AND NOT EXISTS (SELECT 1 FROM call_outcomes o WHERE o.call_id = c.id)
    UNION ALL
    SELECT o.call_id, o.channel_id, o.token_address, o.called_at, o.basis, o.base, o.seen_until
    FROM call_outcomes o WHERE NOT o.final
)
INSERT INTO call_outcomes AS o
    (call_id, channel_id, token_address, called_at, basis, base, peak, reached_2x_at, seen_until, final)
SELECT t.call_id, t.channel_id, t.token_address, t.called_at, t.basis, t.base, f.peak, f.first_2x, $1,
       $1 >= t.called_at + $2::interval + $3::interval
FROM todo t
LEFT JOIN LATERAL (
    SELECT max(v.value) AS peak, min(v.ts) FILTER (WHERE v.value >= 2 * t.base) AS first_2x
    FROM token_prices p
    CROSS JOIN LATERAL (
        SELECT p.ts, CASE WHEN t.basis = 'price' THEN p.price_usd ELSE p.market_cap_usd END AS value
    ) v
    WHERE p.token_address = t.token_address
      AND p.ts > GREATEST(t.called_at, t.seen_until - $3::interval)
      AND p.ts <= LEAST($1, t.called_at + $2::interval)
) f ON true
ON CONFLICT (call_id) DO UPDATE SET
    peak = GREATEST(o.peak, EXCLUDED.peak),
    reached_2x_at = LEAST(o.reached_2x_at, EXCLUDED.reached_2x_at),
    seen_until = GREATEST(o.seen_until, EXCLUDED.seen_until),
    final = o.final OR EXCLUDED.final
"""

# Each channel's figures from its outcomes, as domain.channel_stats.channel_figures counts them.
# $1 now, $2 window, $3 cap, $4/$5 the calls' period [start, end) (null: unbounded).
FIGURES_CTE = """
measured AS (
    SELECT channel_id, multiple, won, over, won OR (over AND multiple IS NOT NULL) AS resolved
    FROM (
        SELECT channel_id,
               -- GREATEST and LEAST skip nulls: a call with no price keeps none
               CASE WHEN peak IS NOT NULL THEN GREATEST(1, peak / base) END AS multiple,
               coalesce(peak >= 2 * base, false) AS won,
               called_at + $2::interval <= $1::timestamptz AS over
        FROM call_outcomes
        WHERE called_at <= $1::timestamptz
          AND ($4::timestamptz IS NULL OR called_at >= $4) AND ($5::timestamptz IS NULL OR called_at < $5)
    ) o
), figures AS (
    SELECT channel_id,
           count(*)::integer AS calls,
           count(*) FILTER (WHERE resolved)::integer AS resolved,
           count(*) FILTER (WHERE won)::integer AS wins,
           count(*) FILTER (WHERE NOT over AND NOT won)::integer AS unresolved,
           count(*) FILTER (WHERE over AND multiple IS NULL)::integer AS unpriced,
           round(avg(LEAST(multiple, $3::numeric)) FILTER (WHERE resolved), 6) AS avg_gain,
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY multiple) FILTER (WHERE resolved))::numeric, 6)
               AS median_gain
    FROM measured GROUP BY channel_id
)
"""

UPDATE_FIGURES_SQL = f"""
WITH {FIGURES_CTE}, rated AS (
    SELECT f.*, round(f.wins::numeric / NULLIF(f.resolved, 0), 6) AS win_rate FROM figures f
)
UPDATE channels c SET
    computed_win_rate = r.win_rate, computed_avg_gain = r.avg_gain, computed_median_gain = r.median_gain,
    computed_calls = r.calls, computed_resolved = r.resolved, computed_wins = r.wins,
    computed_unresolved = r.unresolved, computed_unpriced = r.unpriced, computed_at = $1
FROM rated r
WHERE c.id = r.channel_id
  AND (c.computed_win_rate, c.computed_avg_gain, c.computed_median_gain, c.computed_calls, c.computed_resolved,
       c.computed_wins, c.computed_unresolved, c.computed_unpriced)
      IS DISTINCT FROM
      (r.win_rate, r.avg_gain, r.median_gain, r.calls, r.resolved, r.wins, r.unresolved, r.unpriced)
RETURNING c.id, c.computed_win_rate, c.computed_avg_gain, c.computed_median_gain, c.computed_calls,
          c.computed_resolved, c.computed_wins, c.computed_unresolved, c.computed_unpriced
"""

# The first run of a UTC day keeps the figures as the day began; later runs leave them.
SNAPSHOT_SQL = """
INSERT INTO channel_stats_history (channel_id, day, feed_win_rate, feed_avg_gain, feed_calls, win_rate, avg_gain,
                                   median_gain, calls, resolved, wins, unresolved, unpriced, computed_at)
SELECT id, ($1::timestamptz AT TIME ZONE 'UTC')::date, win_rate, avg_gain, calls, computed_win_rate,
       computed_avg_gain, computed_median_gain, computed_calls, computed_resolved, computed_wins,
       computed_unresolved, computed_unpriced, $1
FROM channels WHERE computed_at IS NOT NULL
ON CONFLICT (channel_id, day) DO NOTHING
"""

_COMPUTED = "computed_win_rate, computed_avg_gain, computed_median_gain, computed_calls, computed_resolved, computed_wins, computed_unresolved, computed_unpriced"  # noqa: E501
BOARD_SQL = f"""
SELECT id, name, username, win_rate, avg_gain, calls, {_COMPUTED}
FROM channels WHERE computed_resolved > 0
"""
PERIOD_SQL = f"""
WITH {FIGURES_CTE}
SELECT c.id, c.name, c.username, c.win_rate, c.avg_gain, c.calls,
       round(f.wins::numeric / NULLIF(f.resolved, 0), 6) AS computed_win_rate, f.avg_gain AS computed_avg_gain,
       f.median_gain AS computed_median_gain, f.calls AS computed_calls, f.resolved AS computed_resolved,
       f.wins AS computed_wins, f.unresolved AS computed_unresolved, f.unpriced AS computed_unpriced
FROM figures f JOIN channels c ON c.id = f.channel_id
ORDER BY c.id
"""


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def figures_of_row(row: Mapping[str, Any], prefix: str = "computed_") -> ChannelFigures | None:
    """The bot's figures from a row with `{prefix}win_rate`, ... columns; None when never computed."""
    if row[f"{prefix}calls"] is None:
        return None
    return ChannelFigures(
        calls=row[f"{prefix}calls"],
        resolved=row[f"{prefix}resolved"],
        wins=row[f"{prefix}wins"],
        unresolved=row[f"{prefix}unresolved"],
        unpriced=row[f"{prefix}unpriced"],
        win_rate=_float(row[f"{prefix}win_rate"]),
        avg_gain=_float(row[f"{prefix}avg_gain"]),
        median_gain=_float(row[f"{prefix}median_gain"]),
    )


def feed_channel_of_row(row: Mapping[str, Any]) -> Channel:
    """The channel as the feed described it, from a `channels` row."""
    return Channel(
        id=row["id"],
        name=row["name"],
        username=row["username"],
        win_rate=_float(row["win_rate"]),
        avg_gain=_float(row["avg_gain"]),
        calls=row["calls"],
    )


class FiguresListener(Protocol):
    """Told each refresh's changed figures (the channel directory)."""

    async def figures_changed(self, figures: Mapping[str, ChannelFigures]) -> None: ...


@dataclass(frozen=True)
class RefreshResult:
    ran: bool  # False: another process was refreshing
    folded: int = 0  # call outcomes written
    changed: Mapping[str, ChannelFigures] = field(default_factory=dict)
    snapshots: int = 0


def _count(status: str) -> int:
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, IndexError):
        return 0


class ChannelStatistics:
    """The bot's own channel figures: computed by `refresh`, read by /channels and the reports."""

    def __init__(
        self,
        postgres: PostgresManager,
        listener: FiguresListener | None = None,
        *,
        window: timedelta = WINDOW,
        overlap: timedelta = FOLD_OVERLAP,
        cap: float = GAIN_CAP,
    ) -> None:
        self.postgres = postgres
        self.listener = listener
        self.window = window
        self.overlap = overlap
        self.cap = cap

    async def refresh(self, now: datetime | None = None) -> RefreshResult:
        """Fold outcomes, recompute the figures, keep the day's snapshot, tell the listener."""
        now = now or datetime.now(UTC)
        async with self.postgres.acquire() as conn:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_KEY):
                    logger.info("channel statistics are being refreshed by another process")
                    return RefreshResult(ran=False)
                folded = await conn.execute(FOLD_SQL, now, self.window, self.overlap, timeout=REFRESH_TIMEOUT_SECONDS)
                rows = await conn.fetch(
                    UPDATE_FIGURES_SQL, now, self.window, self.cap, None, None, timeout=REFRESH_TIMEOUT_SECONDS
                )
                snapshots = await conn.execute(SNAPSHOT_SQL, now, timeout=REFRESH_TIMEOUT_SECONDS)
        changed = {row["id"]: f for row in rows if (f := figures_of_row(row)) is not None}
        if changed and self.listener is not None:
            await self.listener.figures_changed(changed)
        result = RefreshResult(True, _count(folded), changed, _count(snapshots))
        logger.info(
            "channel statistics: %d call outcomes folded, %d channels changed, %d snapshots",
            result.folded,
            len(result.changed),
            result.snapshots,
        )
        return result

    async def rated(self) -> list[RatedChannel]:
        """Every channel with a resolved call, with its current figures (for /channels)."""
        rows = await self.postgres.fetch(BOARD_SQL)
        return [RatedChannel(feed_channel_of_row(row), figures_of_row(row)) for row in rows]

    async def figures_between(
        self, start: datetime | None, end: datetime | None, *, now: datetime | None = None
    ) -> list[RatedChannel]:
        """Each channel's figures over its calls made in [`start`, `end`) (None: unbounded),
        as those calls stand at `now` (default: now): e.g. the weekly channel report.

        The rules are the live figures' (wins, losses, unresolved and unpriced calls, capped mean
        and median), only over the period's calls; a call of the period younger than 7 days may
        still be unresolved. Channels without a call in the period are left out; by channel id.
        """
        rows = await self.postgres.fetch(
            PERIOD_SQL,
            now or datetime.now(UTC),
            self.window,
            self.cap,
            start,
            end,
            timeout=REFRESH_TIMEOUT_SECONDS,
        )
        return [RatedChannel(feed_channel_of_row(row), figures_of_row(row)) for row in rows]


# ------------------------------------------------------------------------------ the day's figures

# Snapshots of `channel_ids` from each one's latest at or before $2 (a date) on, up to $3.
SNAPSHOTS_SQL = """
SELECT h.channel_id, h.day, h.feed_win_rate, h.feed_avg_gain, h.feed_calls, h.win_rate, h.avg_gain,
       h.median_gain, h.calls, h.resolved, h.wins, h.unresolved, h.unpriced
FROM channel_stats_history h
WHERE h.channel_id = ANY($1::text[]) AND h.day <= $3
  AND h.day >= COALESCE(
      (SELECT max(e.day) FROM channel_stats_history e WHERE e.channel_id = h.channel_id AND e.day <= $2), $2)
ORDER BY h.channel_id, h.day
"""


async def load_snapshots(
    conn: asyncpg.Connection, channel_ids: Sequence[str], first: date, last: date, *, timeout: float | None = None
) -> list[asyncpg.Record]:
    """Rows of `channel_stats_history` that cover the days `first`..`last` for `channel_ids`."""
    return list(await conn.fetch(SNAPSHOTS_SQL, list(channel_ids), first, last, timeout=timeout))


def rated_of_snapshot(row: Mapping[str, Any], current: Channel) -> RatedChannel:
    """A snapshot as the filters saw the channel that day (names and usernames: today's)."""
    feed = Channel(
        id=current.id,
        name=current.name,
        username=current.username,
        win_rate=_float(row["feed_win_rate"]),
        avg_gain=_float(row["feed_avg_gain"]),
        calls=row["feed_calls"],
    )
    return RatedChannel(feed, figures_of_row(row, prefix=""))
