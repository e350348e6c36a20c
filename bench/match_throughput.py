"""Match throughput: the vectorised pipeline beside the original per-subscriber loop, same run.

    python -m bench.match_throughput [--redis-url URL] [--events N] [--sizes 100,1000,10000]
                                     [--engines pipeline,outbox,loop]

Uses the Redis in --redis-url / REDIS_URL, else the local server, else the embedded stand-in,
on logical database 14, which it empties. Prints a table:

* events/s      call events fully processed per second (parse, queue, match, dedup, hand-off)
* round trips   Redis network round trips per event (a pipeline or script counts once)
* commands      Redis commands per event
* p50/p99 ms    frame received -> alert handed to the sender, for alerts; the pipeline's are
                measured in a second pass with frames arriving steadily at 200 a second
* alerts/event  how many subscribers a call alerted on average (the filter mix's selectivity)

Engines: `pipeline` claims and hands the alerts to a counter; `outbox` is the service's own
path, which also renders each alert and queues it in the Redis stream in the claim's script (a
task empties the stream as it grows, as the delivery queue would); `loop` is the baseline: the
loop the original design describes, for each subscriber GET its processed_token record, apply
the filters, SET the decision (accepted 14 days / rejected 1 h).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
import redis.asyncio.connection as redis_connection
from aiogram import Bot

from bench.table import print_markdown
from domain.events import CallEvent, Channel, ChannelStatsEvent
from domain.feed_adapters import parse_alert_frame
from domain.filters import Filters, TokenFacts, token_matches
from domain.matching import SubscriberIndex
from domain.subscriber import Subscriber
from managers.redis_manager import RedisManager
from services.alert_renderer import AlertRenderer
from services.cache import CacheRegistry
from services.channels import ChannelDirectory
from services.dedup import AlertLedger
from services.event_queue import EventQueue
from services.outbox import STREAM_KEY, Outbox
from services.pipeline import AlertBatch, CallPipeline, ProcessingWorkers
from services.sender import MessageSender
from standins.feedgen import load_sample

BENCH_DB = 14
LATENCY_PASS_RATE = 200  # frames a second, ~12x the original design's stated load
LATENCY_PASS_EVENTS = 1_000
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


class RoundTrips:
    """Counts what the client actually sends: one count per network write of commands."""

    count = 0

    @classmethod
    def install(cls) -> None:
        original = redis_connection.AbstractConnection.send_packed_command

        async def counted(self: Any, command: Any, check_health: bool = True) -> None:
            cls.count += 1
            await original(self, command, check_health)

        redis_connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]


# Two mixes. "selective": what subscribers who want few, good alerts set (presets with channel
# quality bounds, narrow custom windows); about 0.5% of subscribers match a call. "loose": the
# same shape with wide bounds, about 3.5% match; there the cost per alert dominates.
MIXES: dict[str, dict[str, Filters]] = {
    "selective": {
        "safe": Filters(
            min_mcap=100_000, max_mcap=2_000_000, min_liquidity=25_000, min_holders=400, min_win_rate=55, min_channels=2
        ),
        "balanced": Filters(
            min_mcap=50_000, max_mcap=1_000_000, min_liquidity=10_000, min_holders=200, min_win_rate=40, min_avg_gain=2
        ),
        "degen": Filters(min_mcap=15_000, max_mcap=300_000, min_holders=50, max_age=30, min_win_rate=20),
    },
    "loose": {
        "safe": Filters(
            min_mcap=100_000, max_mcap=2_000_000, min_liquidity=20_000, min_holders=300, min_win_rate=45, min_channels=2
        ),
        "balanced": Filters(
            min_mcap=40_000, max_mcap=1_000_000, min_liquidity=8_000, min_holders=150, min_win_rate=30, min_avg_gain=1.5
        ),
        "degen": Filters(min_mcap=10_000, max_mcap=300_000, max_age=60),
    },
}


def subscriber_mix(count: int, channel_ids: list[str], mix: str = "selective", seed: int = 3) -> list[Subscriber]:
    rng = random.Random(seed)
    presets = MIXES[mix]
    selective = mix == "selective"
    expires = NOW + timedelta(days=30)
    subscribers: list[Subscriber] = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.3:
            filters = presets["safe"]
        elif roll < 0.6:
            filters = presets["balanced"]
        elif roll < 0.75:
            filters = presets["degen"]
        else:
            low = rng.choice([20_000, 50_000, 80_000, 150_000])
            filters = Filters(
                min_mcap=low,
                max_mcap=low * rng.choice([3, 5] if selective else [5, 10, 30]),
                min_holders=rng.choice([100, 250] if selective else [None, 100, 250]),
                min_win_rate=rng.choice([35, 45, 55] if selective else [None, 25, 40, 55]),
                min_avg_gain=rng.choice([None, 1.5, 2.0]),
                channels=frozenset(rng.sample(channel_ids, 5)) if rng.random() < 0.2 else None,
                min_channels=rng.choice([1, 2, 2] if selective else [1, 1, 2]),
            )
        subscribers.append(Subscriber(telegram_id=10_000_000 + i, filters=filters, plan_expires_at=expires))
    return subscribers


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def call_frames(events: int, seed: int = 5) -> tuple[list[str], list[dict[str, Any]]]:
    """`events` call frames shaped like a live feed: most calls are small, young, thin tokens.

    The channels (and their statistics) are the bundled sample's; a channel that calls more
    often tends to have a lower win rate, as in the real call channels. Each token is called
    by one to three channels, so re-checks of a known token are measured too.
    """
    rng = random.Random(seed)
    sample = load_sample()
    latest: dict[str, dict[str, Any]] = {}
    for frame in sample:
        if frame["type"] == "channel":
            latest[str(frame["id"])] = frame
    channels = list(latest.values())
    weights = [1.5 - float(c.get("win_rate") or 0) for c in channels]
    frames: list[str] = []
    token_index = 0
    while len(frames) < events:
        token_index += 1
        called = NOW - timedelta(minutes=rng.uniform(0, 600))
        created = called - timedelta(minutes=rng.expovariate(1 / 90))
        market_cap = _log_uniform(rng, 3_000, 5_000_000)
        token = {
            # Base58 has no 0: the feed adapter refuses an address with one.
            "address": f"{token_index:040d}".replace("0", "z") + "pump",
            "symbol": f"T{token_index}",
            "name": f"Token {token_index}",
            "chain": "solana",
            "market_cap_usd": round(market_cap, 2),
            "liquidity_usd": round(market_cap * rng.uniform(0.05, 0.3), 2) if rng.random() < 0.7 else None,
            "holders": int(_log_uniform(rng, 5, 3_000)) if rng.random() < 0.8 else None,
            "price_usd": market_cap / 1e9,
            "created_at": created.isoformat().replace("+00:00", "Z") if rng.random() < 0.85 else None,
        }
        for channel in rng.choices(channels, weights=weights, k=rng.choice([1, 1, 2, 3])):
            if len(frames) == events:
                break
            frames.append(
                json.dumps(
                    {
                        "type": "call",
                        "token": token,
                        "channel": {
                            "id": str(channel["id"]),
                            "name": channel.get("name"),
                            "username": channel.get("username"),
                        },
                        "called_at": called.isoformat().replace("+00:00", "Z"),
                    }
                )
            )
            called += timedelta(minutes=rng.uniform(1, 30))
    return frames, channels


@dataclass
class Row:
    engine: str
    mix: str
    subscribers: int
    events: int
    seconds: float
    round_trips: int
    commands: int
    alerts: int
    latencies_ms: list[float]

    def cells(self) -> list[str]:
        p50 = statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")
        p99 = sorted(self.latencies_ms)[int(0.99 * (len(self.latencies_ms) - 1))] if self.latencies_ms else float("nan")
        return [
            self.engine,
            self.mix,
            f"{self.subscribers:,}",
            f"{self.events:,}",
            f"{self.events / self.seconds:,.0f}",
            f"{self.round_trips / self.events:.2f}",
            f"{self.commands / self.events:.2f}",
            f"{p50:.2f}",
            f"{p99:.2f}",
            f"{self.alerts / self.events:.1f}",
        ]


async def redis_commands(client: aioredis.Redis) -> int:
    info = await client.info("stats")
    return int(info.get("total_commands_processed", 0))


class StreamDrain:
    """Empties the outbox stream every 50 ms, as the delivery queue's acknowledgements would, so a
    flood of alerts does not pile up in Redis; its commands are left out of the counts."""

    def __init__(self, manager: RedisManager) -> None:
        self.manager = manager
        self.commands = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.manager.client.unlink(STREAM_KEY)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            await self.manager.client.unlink(STREAM_KEY)
            self.commands += 1


async def run_pipeline(
    mix: str,
    url: str | None,
    subscribers: list[Subscriber],
    frames: list[str],
    channel_frames: list[dict[str, Any]],
    *,
    outbox: bool = False,
) -> Row:
    manager = RedisManager.from_url(url)
    await manager.start()
    await manager.client.flushdb(asynchronous=True)
    caches = CacheRegistry(manager)
    directory = ChannelDirectory(manager, None, caches)
    latencies: list[float] = []
    alerts = 0

    def deliver(batch: AlertBatch) -> None:
        nonlocal alerts
        alerts += len(batch.telegram_ids)
        # Every alert of the batch is handed over at this moment.
        latency = (time.time() - batch.received_at) * 1000
        latencies.extend([latency] * len(batch.telegram_ids))

    index = SubscriberIndex(subscribers)
    bot: Bot | None = None
    alert_outbox: AlertRenderer | None = None
    drain: StreamDrain | None = None
    if outbox:
        # The sender is never started: with Redis up, alerts only go to the stream.
        bot = Bot("1:bench")
        alert_outbox = AlertRenderer(Outbox(manager, None, MessageSender(bot), consumer="bench"), index)
        drain = StreamDrain(manager)
        await drain.start()
    service = CallPipeline(
        index=index,
        ledger=AlertLedger(manager),
        channels=directory,
        renderer=alert_outbox,
        deliver=deliver,
        clock=lambda: NOW,
    )
    for frame in channel_frames:
        event = parse_alert_frame(json.dumps(frame))
        assert isinstance(event, ChannelStatsEvent)
        await service.handle(event)
    service.index.match(TokenFacts(), NOW, [])  # build the columns before timing
    queue = EventQueue()
    workers = ProcessingWorkers(queue, service, workers=4)
    await workers.start()
    commands_before = await redis_commands(manager.client) if url else 0
    trips_before = RoundTrips.count
    drained_before = drain.commands if drain else 0
    # Throughput: every frame offered at once; the queue and workers go as fast as they can.
    started = time.perf_counter()
    for text in frames:
        event = parse_alert_frame(text, time.time())
        assert event is not None
        await queue.put(event)
    while not workers.idle:
        await asyncio.sleep(0.001)
    seconds = time.perf_counter() - started
    drains = (drain.commands if drain else 0) - drained_before
    trips = RoundTrips.count - trips_before - drains
    commands = (await redis_commands(manager.client) - commands_before - 1 - drains) if url else 0
    flood_alerts = alerts
    # Latency: frames arriving at a steady rate, as a live feed delivers them; queueing delay
    # under a flood says nothing about how fast one frame goes through.
    latencies.clear()
    await manager.client.flushdb(asynchronous=True)
    service.ledger.forget_local()
    interval = 1 / LATENCY_PASS_RATE
    next_at = time.perf_counter()
    for text in frames[:LATENCY_PASS_EVENTS]:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        next_at += interval
        event = parse_alert_frame(text, time.time())
        assert event is not None
        await queue.put(event)
    while not workers.idle:
        await asyncio.sleep(0.001)
    await workers.stop()
    if drain is not None:
        await drain.stop()
    if bot is not None:
        await bot.session.close()
    await manager.close()
    return Row(
        "pipeline + outbox" if outbox else "vectorised pipeline",
        mix,
        len(subscribers),
        len(frames),
        seconds,
        trips,
        max(commands, 0),
        flood_alerts,
        list(latencies),
    )


async def run_per_subscriber_loop(
    mix: str, url: str | None, subscribers: list[Subscriber], frames: list[str], channel_frames: list[dict[str, Any]]
) -> Row:
    """The original design: one Redis lookup (and one write) per subscriber per token."""
    manager = RedisManager.from_url(url)
    await manager.start()
    client = manager.client
    await client.flushdb(asynchronous=True)
    stats: dict[str, Channel] = {}
    for frame in channel_frames:
        stats[str(frame["id"])] = Channel(
            str(frame["id"]),
            username=frame.get("username"),
            win_rate=frame.get("win_rate"),
            avg_gain=frame.get("avg_gain"),
        )
    latencies: list[float] = []
    alerts = 0
    commands_before = await redis_commands(client) if url else 0
    trips_before = RoundTrips.count
    started = time.perf_counter()
    for text in frames:
        received = time.perf_counter()
        event = parse_alert_frame(text, received)
        assert isinstance(event, CallEvent)
        token = event.token
        facts = TokenFacts(token.market_cap_usd, token.liquidity_usd, token.holders, token.created_at)
        channel = stats.get(event.channel.id) or event.channel
        for subscriber in subscribers:
            key = f"processed_token:{token.address}:{subscriber.telegram_id}"
            record = await client.get(key)
            checked = json.loads(record)["channels_checked"] if record else []
            if record and json.loads(record)["status"] == "accepted":
                continue
            callers = [stats.get(c) or Channel(c) for c in checked] + [channel]
            if subscriber.receives_alerts(NOW) and token_matches(subscriber.filters, facts, event.called_at, callers):
                await client.set(
                    key, json.dumps({"status": "accepted", "channels_checked": checked + [channel.id]}), ex=14 * 86400
                )
                alerts += 1
                latencies.append((time.perf_counter() - received) * 1000)
            else:
                await client.set(
                    key, json.dumps({"status": "rejected", "channels_checked": checked + [channel.id]}), ex=3600
                )
    seconds = time.perf_counter() - started
    trips = RoundTrips.count - trips_before
    commands = (await redis_commands(client) - commands_before - 1) if url else 0
    await manager.close()
    return Row(
        "per-subscriber loop", mix, len(subscribers), len(frames), seconds, trips, max(commands, 0), alerts, latencies
    )


def default_redis_url() -> str | None:
    url = os.environ.get("REDIS_URL")
    if url:
        return url.rsplit("/", 1)[0] + f"/{BENCH_DB}" if url.count("/") > 2 else f"{url}/{BENCH_DB}"
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return f"redis://127.0.0.1:6379/{BENCH_DB}"
    except OSError:
        return None


def print_table(rows: list[Row], out: Callable[[str], None] = print) -> None:
    header = [
        "engine",
        "mix",
        "subscribers",
        "events",
        "events/s",
        "round trips/event",
        "commands/event",
        "p50 ms",
        "p99 ms",
        "alerts/event",
    ]
    print_markdown(header, [row.cells() for row in rows], out)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--events", type=int, default=3_000, help="call events for the pipeline")
    parser.add_argument(
        "--baseline-budget",
        type=int,
        default=60_000,
        help="subscriber-checks the per-subscriber loop may do per size (it is slow)",
    )
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--engines", default="pipeline,loop", help="of pipeline, outbox, loop (see above)")
    args = parser.parse_args(argv)
    engines = set(args.engines.split(","))
    url = args.redis_url or default_redis_url()
    RoundTrips.install()
    print(f"Redis: {url or 'embedded stand-in (fakeredis)'}; Python {sys.version.split()[0]}", file=sys.stderr)
    rows: list[Row] = []
    for size in (int(s) for s in args.sizes.split(",")):
        frames, channel_frames = call_frames(args.events)
        channel_ids = [str(f["id"]) for f in channel_frames]
        for mix in ("selective", "loose"):
            subscribers = subscriber_mix(size, channel_ids, mix)
            for outbox in (False, True):
                if ("outbox" if outbox else "pipeline") in engines:
                    rows.append(await run_pipeline(mix, url, subscribers, frames, channel_frames, outbox=outbox))
        if "loop" in engines:
            subscribers = subscriber_mix(size, channel_ids, "selective")
            baseline_events = max(3, min(args.events, args.baseline_budget // size))
            rows.append(
                await run_per_subscriber_loop("selective", url, subscribers, frames[:baseline_events], channel_frames)
            )
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
