"""How long "Test my filters" takes on a busy day: loading 24 hours of history and replaying it.

    python -m bench.replay [--tokens 5000] [--prices-per-token 40] [--channels 60] [--database-url URL]

Writes a synthetic day into a fresh database of its own (created on the PostgreSQL of
--database-url / DATABASE_URL, else the local server, else the embedded one; dropped after):
--tokens tokens, each called by 1-6 of --channels channels over the day, and
--prices-per-token price updates each after its first call. Then measures, per row:

* load ms       `load_replay_day`: the four queries and building the day (what a press costs
                when the day is not cached; presses within a minute share one load)
* replay ms     the pure replay of that day for one filter set (what every press costs)
* alerts, 2x    what that filter set would have had, as a sanity check that the day is real

Each figure is the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.database import bench_database
from bench.table import print_markdown
from domain.filters import Filters, set_filter
from managers.postgres import PostgresManager
from services.replay import load_replay_day, replay

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FILTER_SETS: dict[str, dict[str, str]] = {
    "none": {},
    "balanced": {"min_mcap": "30k", "max_mcap": "2m", "min_liquidity": "10k", "min_win_rate": "35"},
    "strict": {"min_mcap": "100k", "min_holders": "300", "min_win_rate": "50", "min_channels": "3"},
}


def build_filters(values: dict[str, str]) -> Filters:
    filters = Filters()
    for name, raw in values.items():
        filters = set_filter(filters, name, raw)
    return filters


def synthetic_day(
    tokens: int, channels: int, prices_per_token: int, seed: int = 7
) -> tuple[list[tuple], list[tuple], list[tuple], list[tuple]]:
    """Rows for channels, tokens, calls and token_prices, as the persistence writer stores them."""
    rng = random.Random(seed)
    channel_rows = [
        (
            f"-100{1_000_000 + i}",
            f"Channel {i}",
            f"chan{i}",
            round(rng.uniform(0.05, 0.9), 3),
            round(rng.uniform(0.5, 6), 2),
            rng.randint(10, 500),
        )
        for i in range(channels)
    ]
    token_rows, call_rows, price_rows = [], [], []
    for i in range(tokens):
        address = f"Tok{i:06d}" + "x" * 34
        first = NOW - timedelta(seconds=rng.uniform(60, 24 * 3600))
        mcap = rng.lognormvariate(11, 1.2)  # median about $60K
        price = mcap / 1e9
        token_rows.append((address, f"T{i}", first - timedelta(minutes=rng.uniform(1, 600))))
        callers = rng.sample(channel_rows, rng.randint(1, 6))
        at = first
        for channel in callers:
            drift = rng.uniform(0.8, 1.3)
            call_rows.append(
                (
                    address,
                    channel[0],
                    at,
                    mcap * drift,
                    price * drift,
                    mcap * rng.uniform(0.1, 0.3),
                    rng.randint(20, 2000),
                )
            )
            at += timedelta(seconds=rng.uniform(5, 1800))
        level = price
        for k in range(prices_per_token):
            level *= rng.uniform(0.85, 1.2)
            ts = first + timedelta(seconds=(k + 1) * rng.uniform(10, 600))
            if ts <= NOW:
                price_rows.append((address, ts, level, level * 1e9))
    return channel_rows, token_rows, call_rows, price_rows


async def fill(dsn: str, tokens: int, channels: int, prices_per_token: int) -> tuple[int, int]:
    channel_rows, token_rows, call_rows, price_rows = synthetic_day(tokens, channels, prices_per_token)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "channels", records=channel_rows, columns=["id", "name", "username", "win_rate", "avg_gain", "calls"]
        )
        await conn.copy_records_to_table("tokens", records=token_rows, columns=["address", "symbol", "created_at"])
        await conn.copy_records_to_table(
            "calls",
            records=call_rows,
            columns=[
                "token_address",
                "channel_id",
                "called_at",
                "market_cap_usd",
                "price_usd",
                "liquidity_usd",
                "holders",
            ],
        )
        await conn.copy_records_to_table(
            "token_prices", records=price_rows, columns=["token_address", "ts", "price_usd", "market_cap_usd"]
        )
        # History counts as recorded for the whole day (migration 0003 "ran" two days ago).
        await conn.execute(
            "UPDATE schema_migrations SET applied_at = $1 WHERE name = 'replay_history'", NOW - timedelta(days=2)
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return len(call_rows), len(price_rows)


async def measure(dsn: str, repeat: int) -> tuple[float, list[list[str]]]:
    postgres = PostgresManager(dsn, min_size=1, max_size=2)
    await postgres.start()
    try:
        loads = []
        for _ in range(repeat):
            started = time.perf_counter()
            day = await load_replay_day(postgres, NOW)
            loads.append((time.perf_counter() - started) * 1000)
        load_ms = statistics.median(loads)
        rows = []
        for name, values in FILTER_SETS.items():
            filters = build_filters(values)
            timings = []
            for _ in range(repeat):
                started = time.perf_counter()
                result = replay(filters, day.calls, day.prices, day.channels, window_start=day.start)
                timings.append((time.perf_counter() - started) * 1000)
            rows.append(
                [
                    name,
                    f"{len(day.calls):,}",
                    f"{sum(len(p) for p in day.prices.values()):,}",
                    f"{load_ms:,.0f}",
                    f"{statistics.median(timings):,.1f}",
                    f"{result.alerts:,}",
                    f"{result.reached_2x:,}",
                ]
            )
        return load_ms, rows
    finally:
        await postgres.close()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=5_000)
    parser.add_argument("--channels", type=int, default=60)
    parser.add_argument("--prices-per-token", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args(argv)
    if min(args.tokens, args.channels, args.prices_per_token, args.repeat) < 1 or args.channels < 6:
        parser.error("counts must be positive, and --channels at least 6")

    async with bench_database(args.database_url) as dsn:
        calls, prices = await fill(dsn, args.tokens, args.channels, args.prices_per_token)
        print(
            f"day: {args.tokens:,} tokens, {calls:,} calls, {prices:,} price updates, {args.channels} channels; "
            f"median of {args.repeat} runs",
            file=sys.stderr,
        )
        _, rows = await measure(dsn, args.repeat)
        print_markdown(["filters", "calls read", "price points read", "load ms", "replay ms", "alerts", "2x"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
