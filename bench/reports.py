"""How long the daily report for many subscribers takes to build: queries, texts and charts.

    python -m bench.reports [--subscribers 10000] [--tokens 800] [--database-url URL]
                            [--send --redis-url URL]

Writes a synthetic day into a fresh database of its own (on the PostgreSQL of --database-url /
DATABASE_URL, else the local server, else the embedded one; dropped after), in a child process
so its memory does not count below: --tokens tokens alerted over the 24 hours before the slot
(20:00 UTC), each at one or two moments (a second call), with a price frame every 15 s or more
from its first alert on (fewer as it ages, as trading dies down: ~350 points a token), on a
pump-or-dump random walk; every subscriber got 2-25 of them (a delivery row each, sent).

Then measures what the report job does for the day, as it does it:

* load          ReportStore.daily: the alerts of the day not yet reported, with every alert's
                peak and current multiple, in one query
* texts         compose_daily for every subscriber (text in their language, the chart's rows)
* charts        ChartPainter.render for every subscriber: a chart each (per subscriber, not
                shared), drawn in one thread as the job draws them
* total         the three together: the report built for everyone

and prints the peak memory of this process (ru_maxrss) beside the memory before measuring.
With --send the whole job runs as well (claims, charts, the sender at paid-broadcast pace) to
the test Bot API in a process of its own; that needs a Redis (--redis-url / REDIS_URL), whose
database is left as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import random
import resource
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.database import bench_database
from bench.table import print_markdown
from bot.reports import ReportJobs, compose_daily
from domain.reports import SCHEDULES, ReportKind, report_day
from managers.postgres import PostgresManager
from services.charts import ChartPainter
from services.reports import ReportStore

SLOT = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)
POINT_SECONDS = 15.0  # a young token's trades; the gap grows with its age


def token_day(tokens: int, seed: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[list[tuple]]]:
    """Token rows, price rows, and per token its alert moments as (time, market cap, price)."""
    rng = random.Random(seed)
    start, _ = SCHEDULES[ReportKind.DAILY].window(SLOT)
    token_rows: list[tuple[Any, ...]] = []
    price_rows: list[tuple[Any, ...]] = []
    moments: list[list[tuple]] = []
    for i in range(tokens):
        address = f"Tok{i:06d}" + "x" * 34
        first = start + timedelta(seconds=rng.uniform(0, 24 * 3600 - 600))
        mcap = rng.lognormvariate(11, 1.0)  # median about $60K
        supply = 1e9
        token_rows.append((address, f"T{i}", first))
        # A few pump hard, most drift down: log steps with a per-token drift.
        drift = rng.choice((0.004, 0.001, -0.0005, -0.001, -0.002))
        points: list[tuple[datetime, float]] = []
        at, level = first, mcap
        while at <= SLOT:
            points.append((at, level))
            price_rows.append((address, at, level / supply, level))
            age_hours = (at - first).total_seconds() / 3600
            at += timedelta(seconds=POINT_SECONDS * (1 + 2 * age_hours) * rng.uniform(0.5, 1.5))
            level *= math.exp(rng.gauss(drift, 0.03))
        own = [points[0]]
        if len(points) > 20 and rng.random() < 0.5:  # a second call alerts those who wanted two
            own.append(points[rng.randrange(5, min(len(points), 200))])
        moments.append([(ts, value, value / supply) for ts, value in own])
    return token_rows, price_rows, moments


async def fill(dsn: str, subscribers: int, tokens: int, seed: int = 7) -> tuple[int, int, int]:
    token_rows, price_rows, moments = token_day(tokens, seed)
    rng = random.Random(seed + 1)
    conn = await asyncpg.connect(dsn)
    try:
        users = [(10_000_000 + i, "ru" if rng.random() < 0.2 else "en") for i in range(subscribers)]
        await conn.copy_records_to_table("users", records=users, columns=["telegram_id", "language"])
        ids = {r["telegram_id"]: r["id"] for r in await conn.fetch("SELECT id, telegram_id FROM users")}
        await conn.execute("INSERT INTO user_settings (user_id) SELECT id FROM users")
        await conn.copy_records_to_table("tokens", records=token_rows, columns=["address", "symbol", "created_at"])
        await conn.copy_records_to_table(
            "token_prices", records=price_rows, columns=["token_address", "ts", "price_usd", "market_cap_usd"]
        )
        alert_rows, delivery_rows = [], []
        for telegram_id, _ in users:
            for index in rng.sample(range(tokens), rng.randint(2, 25)):
                ts, mcap, price = rng.choice(moments[index])
                address = token_rows[index][0]
                alert_rows.append((ids[telegram_id], address, mcap, price, ts))
                delivery_rows.append((address, telegram_id, "sent", ts))
        await conn.copy_records_to_table(
            "alerts",
            records=alert_rows,
            columns=["user_id", "token_address", "market_cap_usd", "price_usd", "created_at"],
        )
        await conn.copy_records_to_table(
            "deliveries", records=delivery_rows, columns=["token_address", "chat_id", "status", "delivered_at"]
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return len(token_rows), len(price_rows), len(alert_rows)


def _fill_in_child(dsn: str, subscribers: int, tokens: int, out: Any) -> None:
    out.send(asyncio.run(fill(dsn, subscribers, tokens)))


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


async def build(dsn: str) -> list[list[str]]:
    """The report for everyone, step by step as the job does it; a table row per step."""
    postgres = PostgresManager(dsn, min_size=1, max_size=2)
    await postgres.start()
    try:
        store = ReportStore(postgres)
        painter = ChartPainter()
        start, end = SCHEDULES[ReportKind.DAILY].window(SLOT)
        began = time.perf_counter()
        reports = await store.daily(start, end, SLOT, report_day(SLOT))
        loaded = time.perf_counter()
        contents = [compose_daily(report, SLOT, report.recipient.language) for report in reports]
        worded = time.perf_counter()
        sizes = 0
        for content in contents:
            sizes += len(painter.render(content.chart))
        drawn = time.perf_counter()
    finally:
        await postgres.close()
    count = len(reports)
    alerts = sum(len(r.alerts) for r in reports)

    def row(step: str, seconds: float, note: str) -> list[str]:
        return [step, f"{count:,}", f"{seconds:,.1f}", f"{seconds / max(count, 1) * 1000:,.2f}", note]

    return [
        row("load (one query)", loaded - began, f"{alerts:,} alerts with peak and current multiples"),
        row("texts", worded - loaded, f"{sum(c.more is not None for c in contents):,} too long for a caption"),
        row("charts, per subscriber", drawn - worded, f"PNG {sizes / max(count, 1) / 1024:,.1f} KB on average"),
        row("total: built for everyone", drawn - began, "under a minute?" + (" yes" if drawn - began < 60 else " NO")),
    ]


async def send_all(dsn: str, redis_url: str) -> list[str]:
    """The whole job: claims, charts in their thread, the sender at paid-broadcast pace."""
    from bench.bot_api_process import BotApiProcess
    from managers.redis_manager import RedisManager
    from services.cache import CacheRegistry
    from services.sender import MessageSender
    from services.subscribers import SubscriberStore
    from standins.telegram import RateLimits

    redis = RedisManager.from_url(redis_url)
    await redis.start()
    postgres = PostgresManager(dsn, min_size=1, max_size=4)
    await postgres.start()
    caches = CacheRegistry(redis)
    await caches.start()
    try:
        async with BotApiProcess(limits=RateLimits.unlimited()) as api:
            bot = api.create_bot()
            sender = MessageSender(bot, paid_broadcast=True)
            await sender.start()
            jobs = ReportJobs(
                ReportStore(postgres), SubscriberStore(redis, postgres, caches, frozenset()), sender, clock=lambda: SLOT
            )
            began = time.perf_counter()
            try:
                summary = await jobs.run(ReportKind.DAILY, SLOT)
            finally:
                await jobs.close()
                await sender.stop(drain=True, timeout=30)
                await bot.session.close()
            took = time.perf_counter() - began
            await api.finish()
    finally:
        await caches.stop()
        await postgres.close()
        await redis.close()
    return [
        "whole job, sent (paid broadcast)",
        f"{summary.claimed:,}",
        f"{took:,.1f}",
        f"{took / max(summary.claimed, 1) * 1000:,.2f}",
        f"{summary.sent:,} sent, {summary.failed:,} failed",
    ]


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=800)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--send", action="store_true", help="also run the whole job, sending to the test Bot API")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args(argv)
    if min(args.subscribers, args.tokens) < 25:
        parser.error("--subscribers and --tokens must be at least 25")
    if args.send and not args.redis_url:
        parser.error("--send needs --redis-url or REDIS_URL")

    async with bench_database(args.database_url) as dsn:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_fill_in_child, args=(dsn, args.subscribers, args.tokens, send))
        child.start()
        tokens, prices, alerts = await asyncio.to_thread(receive.recv)
        child.join()
        print(
            f"day to {SLOT:%Y-%m-%d %H:%M} UTC: {args.subscribers:,} subscribers, {tokens:,} tokens, "
            f"{prices:,} price points, {alerts:,} alerts; {os.cpu_count()} cores",
            file=sys.stderr,
        )
        before = rss_mb()
        rows = await build(dsn)
        if args.send:
            rows.append(await send_all(dsn, args.redis_url))
        print_markdown(["step", "subscribers", "seconds", "ms per subscriber", "notes"], rows)
        print(f"\nmemory: {before:,.0f} MB before measuring (imports), peak {peak_mb():,.0f} MB (ru_maxrss)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
