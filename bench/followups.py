"""Follow-ups: price updates a second on one core with 25,000 followed tokens and 2.5 million
entries (subscriber x token bases), the service's path beside two slower ones, same run.

    python -m bench.followups [--tokens 25000] [--entries 2500000] [--updates 500000]
                              [--redis-url URL] [--seed 1]

Rows:

* service          MultiplierTracker.on_price: one comparison with the token's trigger, the
                   token's numpy arrays only when a price may have reached a threshold
* feed frame       the same from the `price` frame's text: parsed, put on the event queue (whose
                   price listener the tracker is), on a tracker of its own
* arrays, always   the same arrays compared on every price (no trigger)
* per-entry loop   one Python object per entry, the one-at-a-time rule on each (a sample of
                   the updates: it is slow)

Columns: updates/s and us/update over the whole run on one core; follow-ups due (thresholds the
updates made due, claimed afterwards); memory = what the entries take (tracemalloc, after
building them); build = seconds to build them. Then the Redis claims of the follow-ups due (one
Lua script per 500) when a Redis is reachable (--redis-url / REDIS_URL / the local server, db
14; only keys `followup:*` of the bench's made-up tokens are written, and deleted after), and
the process's peak RSS.

The tokens' sizes are skewed as alerts are (a few tokens alerted to thousands, most to a few
dozen); each entry's base is its token's market cap at that subscriber's alert. Prices walk
randomly around the bases (a few percent per update) with enough drift that about one token in
ten passes 2x during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import resource
import socket
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bench.table import print_markdown
from domain.events import PriceEvent
from domain.feed_adapters import parse_alert_frame
from domain.matching import SubscriberIndex
from domain.multipliers import levels, to_announce
from domain.subscriber import Subscriber
from managers.redis_manager import RedisManager
from services.event_queue import EventQueue
from services.multiplier import KEY_PREFIX, MultiplierTracker
from standins.feedgen import make_address

BENCH_DB = 14
SUBSCRIBERS = 20_000
NOW = datetime.now(UTC)


@dataclass
class World:
    addresses: list[str]
    sizes: np.ndarray  # entries per token
    chats: list[np.ndarray]
    bases: list[np.ndarray]
    updates: list[tuple[int, float]]  # (token index, market cap)


def build_world(tokens: int, entries: int, updates: int, seed: int) -> World:
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(0.0, 1.2, tokens)
    sizes = np.maximum(1, np.round(raw / raw.sum() * entries)).astype(np.int64)
    sizes[np.argmax(sizes)] += entries - int(sizes.sum())  # exactly `entries`
    made = random.Random(seed)
    addresses = [make_address(made, pump=True) for _ in range(tokens)]
    start = rng.lognormal(math.log(80_000), 1.0, tokens)
    chats, bases = [], []
    for i, size in enumerate(sizes.tolist()):
        chats.append(rng.choice(SUBSCRIBERS, size=size, replace=size > SUBSCRIBERS).astype(np.int64) + 1)
        bases.append(start[i] * rng.lognormal(0.0, 0.25, size))
    # Each update moves one token (uniformly picked) a few percent; a drift per token makes
    # some rise past 2x, 5x, 10x over the run.
    picks = rng.integers(0, tokens, updates)
    drift = rng.normal(0.0, 0.004, tokens)
    steps = rng.normal(0.0, 0.03, updates) + drift[picks]
    level = np.log(start)
    caps = np.empty(updates)
    for n, (token, step) in enumerate(zip(picks.tolist(), steps.tolist())):
        level[token] += step
        caps[n] = level[token]
    return World(addresses, sizes, chats, bases, list(zip(picks.tolist(), np.exp(caps).tolist())))


def subscribers() -> SubscriberIndex:
    plan = datetime(2100, 1, 1, tzinfo=UTC)
    return SubscriberIndex(Subscriber(i, plan_expires_at=plan) for i in range(1, SUBSCRIBERS + 1))


def measured(build: Callable[[], Any]) -> tuple[Any, float, str]:
    """(what `build` returns, seconds it took, "MiB held afterwards (peak while building)")."""
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    built = build()
    seconds = time.perf_counter() - started
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return built, seconds, f"{held / 2**20:,.0f} MiB (peak {peak / 2**20:,.0f})"


def service_tracker(world: World, index: SubscriberIndex) -> MultiplierTracker:
    tracker = MultiplierTracker(RedisManager.from_url(None), None, index, clock=lambda: NOW)
    for address, chats, bases in zip(world.addresses, world.chats, world.bases):
        tracker.add_entries(address, chats, bases, alerted_at=NOW)
    return tracker


def run_service(tracker: MultiplierTracker, world: World) -> tuple[float, int]:
    events = [PriceEvent(world.addresses[t], cap / 1e9, cap, NOW) for t, cap in world.updates]
    on_price = tracker.on_price
    started = time.perf_counter()
    for event in events:
        on_price(event)
    return time.perf_counter() - started, tracker.claims_waiting


def run_frames(tracker: MultiplierTracker, world: World, count: int) -> float:
    """Feed frames as the stream hands them on: parsed, put on the event queue, whose price
    listener is the tracker (a worker's share of the queue is drained alongside)."""
    stamp = NOW.isoformat().replace("+00:00", "Z")
    frames = [
        json.dumps({"type": "price", "address": world.addresses[t], "price_usd": cap / 1e9, "market_cap_usd": cap,
                    "ts": stamp})
        for t, cap in world.updates[:count]
    ]  # fmt: skip
    queue = EventQueue()
    queue.price_listeners.append(tracker.on_price)

    async def run() -> float:
        started = time.perf_counter()
        for n, frame in enumerate(frames):
            event = parse_alert_frame(frame)
            assert event is not None
            await queue.put(event)
            if n % 256 == 255:
                await queue.get_many(1_000)
        return time.perf_counter() - started

    return asyncio.run(run())


def run_always(world: World, count: int) -> tuple[float, int]:
    """The arrays compared on every price, floors kept as the service keeps them."""
    floors = [np.zeros(len(b), np.int8) for b in world.bases]
    due = 0
    started = time.perf_counter()
    for token, cap in world.updates[:count]:
        reached = levels(cap, world.bases[token])
        rising = reached > floors[token]
        if rising.any():
            due += int(rising.sum())
            np.maximum(floors[token], reached.astype(np.int8), out=floors[token])
    return time.perf_counter() - started, due


class Entry:
    __slots__ = ("chat", "base", "last")

    def __init__(self, chat: int, base: float) -> None:
        self.chat, self.base, self.last = chat, base, 0


def naive_entries(world: World) -> list[list[Entry]]:
    return [
        [Entry(c, b) for c, b in zip(chats.tolist(), bases.tolist())] for chats, bases in zip(world.chats, world.bases)
    ]


def run_naive(entries: list[list[Entry]], world: World, count: int) -> tuple[float, int]:
    due = 0
    started = time.perf_counter()
    for token, cap in world.updates[:count]:
        for entry in entries[token]:
            threshold = to_announce(entry.last, cap, entry.base, 2)
            if threshold is not None:
                entry.last = threshold
                due += 1
    return time.perf_counter() - started, due


def redis_url(given: str | None) -> str | None:
    url = given or os.environ.get("REDIS_URL")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return f"redis://127.0.0.1:6379/{BENCH_DB}"
    except OSError:
        return None


async def claim_all(tracker: MultiplierTracker, url: str, addresses: list[str]) -> tuple[float, int]:
    redis = RedisManager.from_url(url)
    await redis.start()
    tracker.redis = redis
    try:
        started = time.perf_counter()
        won = await tracker.claim_pending()
        seconds = time.perf_counter() - started
    finally:
        async with redis.guarded() as client:
            for i in range(0, len(addresses), 1000):
                await client.delete(*(KEY_PREFIX + a for a in addresses[i : i + 1000]))
        await redis.close()
    return seconds, won


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=25_000)
    parser.add_argument("--entries", type=int, default=2_500_000)
    parser.add_argument("--updates", type=int, default=500_000)
    parser.add_argument("--frame-updates", type=int, default=200_000)
    parser.add_argument("--always-updates", type=int, default=100_000)
    parser.add_argument("--naive-updates", type=int, default=20_000)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-naive", action="store_true", help="skip the per-entry loop (it needs ~1 GB)")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the figure says

    print(
        f"building {args.tokens:,} tokens, {args.entries:,} entries, {args.updates:,} price updates...", file=sys.stderr
    )
    world = build_world(args.tokens, args.entries, args.updates, args.seed)
    sizes = world.sizes
    median, p99 = int(np.median(sizes)), int(np.percentile(sizes, 99))
    print(f"entries per token: median {median}, p99 {p99}, max {int(sizes.max())}", file=sys.stderr)
    rows: list[list[str]] = []
    index = subscribers()
    tracker, built, held = measured(lambda: service_tracker(world, index))
    seconds, due = run_service(tracker, world)
    n = len(world.updates)
    rows.append(
        ["service (trigger, then arrays)", f"{n:,}", rate(n, seconds), f"{seconds / n * 1e6:.2f}", f"{due:,}",
         held, f"{built:.1f} s"]
    )  # fmt: skip
    count = min(args.frame_updates, n)
    fresh = service_tracker(world, index)
    seconds = run_frames(fresh, world, count)
    rows.append(
        ["feed frame: parse, queue, service", f"{count:,}", rate(count, seconds), f"{seconds / count * 1e6:.2f}",
         f"{fresh.claims_waiting:,}*", "same", "-"]
    )  # fmt: skip
    del fresh
    checks = tracker.stats.checks
    count = min(args.always_updates, n)
    seconds, always_due = run_always(world, count)
    rows.append(
        ["arrays on every price", f"{count:,}", rate(count, seconds), f"{seconds / count * 1e6:.2f}",
         f"{always_due:,}*", "same", "-"]
    )  # fmt: skip
    if not args.no_naive:
        entries, built_naive, held_naive = measured(lambda: naive_entries(world))
        count = min(args.naive_updates, n)
        seconds, naive_due = run_naive(entries, world, count)
        rows.append(
            ["per-entry loop (objects)", f"{count:,}", rate(count, seconds), f"{seconds / count * 1e6:.2f}",
             f"{naive_due:,}*", held_naive, f"{built_naive:.1f} s"]
        )  # fmt: skip
        del entries
    print_markdown(["path", "updates", "updates/s (1 core)", "us/update", "follow-ups due", "memory", "build"], rows)
    print()
    print(
        f"{args.tokens:,} tokens, {args.entries:,} entries; the service compared arrays on {checks:,} of "
        f"{n:,} updates ({checks / n:.1%}). *: over the first updates only, so fewer are due."
    )
    url = redis_url(args.redis_url)
    if url is not None and due:
        claim_seconds, won = asyncio.run(claim_all(tracker, url, world.addresses))
        print(f"Redis claims: {won:,} follow-ups won in {claim_seconds:.2f} s ({rate(won, claim_seconds)}/s).")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of the process: {peak / 1024:,.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
