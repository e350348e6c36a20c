"""How fast the bot reacts to a user while it broadcasts alerts at Telegram's 30 a second.

    python -m bench.responsiveness [--actions 120] [--chats 2000] [--think 1.0]
                                   [--redis-url URL] [--database-url URL] [--quick]

The whole service runs (`Runtime`: dispatcher, middlewares, the sender with its digests and the
pacing of the handlers' own requests) against the test Bot API, which enforces Telegram's limits,
in a process of its own (bench/bot_api_process.py). Alerts are fed to the real sender so that it
always has a backlog: it sends at 30 a second to --chats chats and to the scripted user, whose
chat gets one alert in USER_SHARE (more than its one a second, so its alerts wait and merge into
digests). Meanwhile a scripted user, running beside the server, goes --actions times round the
menus (a press, a typed filter value, /status, ...), waiting --think seconds after each reaction,
as a person would. Every time is the server's clock, from the moment the update is put in the
bot's queue to:

* first reaction   the bot's first request for that update (its callback answer, edit or reply)
* callback answer  answerCallbackQuery, for presses
* screen           the press's edit of its message (or a new message), for presses
* reply            the answering message, for typed messages

Targets: p95 of the first reaction under 300 ms, of the callback answer under 200 ms. Stores:
PostgreSQL in a fresh database of its own on --database-url / DATABASE_URL (dropped after), else
the embedded one; Redis on --redis-url, a logical database other than 0 that the bench empties
first (a subscriber left there from an earlier run would not be in the fresh PostgreSQL), else
the in-memory stand-in.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from bench.bot_api_process import BotApiProcess, ServerResult
from bench.table import print_markdown
from bot.config import Settings
from bot.runtime import Runtime
from services.sender import Lane, OutgoingMessage
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, RateLimits, SentRecord

USER = 7
FIRST_CHAT = 1_000_000
USER_SHARE = 15  # one alert in this many goes to the scripted user
BACKLOG = 90  # alerts kept queued in the sender (three seconds of them), so it never idles
ALERT_MARK = "bench alert"
WARMUP_SENDS = 90  # the broadcast runs this many sends before the user starts
REACTION_TIMEOUT = 10.0
TARGETS = {"first reaction": 300.0, "callback answer": 200.0}

# The user's round of the menus: (what, which), over and over. A press names a button label.
ROUND: tuple[tuple[str, str], ...] = (
    ("press", "Filters"),
    ("press", "Min holders"),
    ("say", "{value}"),
    ("press", "Back"),
    ("say", "/status"),
    ("press", "Back"),
    ("press", "Help"),
    ("press", "Back"),
    ("say", "/filters"),
    ("press", "Language"),
    ("press", "English"),
)


@dataclass(frozen=True)
class Script:
    user_id: int
    actions: int
    think: float
    seed: int = 7


@dataclass(frozen=True)
class Sample:
    kind: str  # "press" or "say"
    what: str
    first: float | None  # ms to the bot's first request for the update
    answer: float | None  # ms to the callback answer (presses)
    done: float | None  # ms to the screen (presses) or the reply (typed messages)


@dataclass(frozen=True)
class Measured:
    samples: list[Sample]
    started: float  # server clock: the first action
    ended: float  # server clock: the last reaction


# ------------------------------------------------------------------ the scripted user (in the server's process)


def _is_alert(record: SentRecord) -> bool:
    return ALERT_MARK in (record.raw_text or "")


def _button(server: FakeTelegramServer, user_id: int, label: str) -> tuple[int, str]:
    """(message id, callback data) of the newest message to the user with a button labelled `label`."""
    for record in reversed(server.messages_to(user_id)):
        message = server.message(user_id, record.message_id) or {}
        for row in (message.get("reply_markup") or {}).get("inline_keyboard", []):
            for button in row:
                if label in button["text"]:
                    return record.message_id, button["callback_data"]
    raise LookupError(f"the bot offered no button {label!r}")


async def scripted_user(script: Script, server: FakeTelegramServer) -> Measured:
    """Wait for the bot to poll and the broadcast to run, then act and time every reaction."""
    await server.wait_for_request("getUpdates", timeout=60)
    await server.wait_for(lambda: len(server.sent) >= WARMUP_SENDS, 120, description="the broadcast")
    rng = random.Random(script.seed)
    user = script.user_id
    samples = [await _act(server, user, "say", "/start")]
    started = server.clock()
    for i in range(script.actions):
        await asyncio.sleep(script.think * rng.uniform(0.8, 1.2))
        kind, what = ROUND[i % len(ROUND)]
        samples.append(await _act(server, user, kind, what.format(value=rng.randint(10, 900))))
    return Measured(samples[1:], started, server.clock())


async def _act(server: FakeTelegramServer, user: int, kind: str, what: str) -> Sample:
    sent_from, edits_from = len(server.sent), len(server.edits)
    query_id: str | None = None
    message_id = 0
    started = server.clock()
    if kind == "say":
        server.inject_message(user, what, first_name="Bench")
    else:
        message_id, data = _button(server, user, what)
        query_id = server.callback_query_id_of(server.inject_callback(user, message_id, data))

    def reply() -> float | None:
        for record in server.sent[sent_from:]:
            if record.chat_id == user and not _is_alert(record):
                return record.monotonic
        return None

    def screen() -> float | None:
        edited = [r.monotonic for r in server.edits[edits_from:] if r.chat_id == user and r.message_id == message_id]
        times = [t for t in (min(edited, default=None), reply()) if t is not None]
        return min(times, default=None)

    def answered() -> float | None:
        return next((a.monotonic for a in server.answered_callbacks if a.callback_query_id == query_id), None)

    def complete() -> bool:
        return reply() is not None if kind == "say" else answered() is not None and screen() is not None

    try:
        await server.wait_for(complete, REACTION_TIMEOUT, description=f"the reaction to {kind} {what!r}")
    except AssertionError:
        pass  # counted as missing below

    def ms(moment: float | None) -> float | None:
        return None if moment is None else (moment - started) * 1000

    if kind == "say":
        done = ms(reply())
        return Sample(kind, what, done, None, done)
    answer, shown = ms(answered()), ms(screen())
    first = min((t for t in (answer, shown) if t is not None), default=None)
    return Sample(kind, what, first, answer, shown)


# ------------------------------------------------------------------ the bot side


async def feed_alerts(runtime: Runtime, chats: int, stop: asyncio.Event) -> int:
    """Keep BACKLOG alerts queued in the real sender: chat after chat, the user every USER_SHARE-th."""
    assert runtime.sender is not None
    sender, sent = runtime.sender, 0
    while not stop.is_set():
        while sender.pending() < BACKLOG:
            chat = USER if sent % USER_SHARE == 0 else FIRST_CHAT + sent % chats
            line = f"{ALERT_MARK} {sent}"
            sender.submit(OutgoingMessage(chat, f"🚨 <b>{line}</b>", lane=Lane.FREE_ALERT, digest_line=line))
            sent += 1
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except TimeoutError:
            pass
    return sent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def fresh_database(server_url: str | None) -> AsyncIterator[str | None]:
    """A database of its own on `server_url`, dropped after; None (the embedded one) without a URL."""
    if server_url is None:
        yield None
        return
    name = f"alertbot_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(server_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def redis_database(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdecimal() else 0


async def empty_redis(url: str) -> None:
    client = aioredis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def run(
    script: Script, chats: int, redis_url: str | None, database_url: str | None
) -> tuple[Measured, ServerResult, int]:
    work = Path(tempfile.mkdtemp(prefix="abbench"))
    if redis_url is not None:
        await empty_redis(redis_url)
    companion = functools.partial(scripted_user, script)
    async with fresh_database(database_url) as dsn, BotApiProcess(limits=RateLimits(), companion=companion) as api:
        assert api.base_url is not None
        settings = Settings(
            _env_file=None,
            bot_token=DEFAULT_TOKEN,
            telegram_api_url=api.base_url,
            redis_url=redis_url,
            database_url=dsn,
            webhook_url=None,
            stream_url=None,
            dexscreener_url=None,
            http_port=_free_port(),
            log_dir=work / "logs",
        )
        runtime = Runtime(settings, data_dir=work, ephemeral_data=True)
        runtime.shutdown_drain_seconds = 0.5
        await runtime.start()
        stop = asyncio.Event()
        feeder: asyncio.Task[int] | None = None
        try:
            feeder = asyncio.create_task(feed_alerts(runtime, chats, stop))
            await runtime.begin_receiving()
            print(f"broadcasting to {chats:,} chats; the user acts {script.actions} times...", file=sys.stderr)
            measured: Measured = await api.companion_result(timeout=script.actions * (script.think + 15) + 180)
        finally:
            stop.set()
            submitted = await feeder if feeder is not None else 0
            await runtime.stop()
        result = await api.finish()
    return measured, result, submitted


# ------------------------------------------------------------------ the table


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def rows(measured: Measured) -> list[list[str]]:
    samples = measured.samples
    presses = [s for s in samples if s.kind == "press"]
    says = [s for s in samples if s.kind == "say"]
    series = [
        ("first reaction", "all actions", [s.first for s in samples]),
        ("callback answer", "presses", [s.answer for s in presses]),
        ("screen", "presses", [s.done for s in presses]),
        ("reply", "typed messages", [s.done for s in says]),
    ]
    table = []
    for name, of, values in series:
        got = [v for v in values if v is not None]
        target = TARGETS.get(name)
        p95 = percentile(got, 0.95) if got else None
        verdict = "-" if target is None or p95 is None else ("met" if p95 < target else "MISSED")
        table.append(
            [
                name,
                of,
                f"{len(got)}",
                f"{len(values) - len(got)}",
                f"{percentile(got, 0.5):.0f}" if got else "-",
                f"{p95:.0f}" if p95 is not None else "-",
                f"{max(got):.0f}" if got else "-",
                f"< {target:.0f}" if target else "-",
                verdict,
            ]
        )
    return table


def print_report(measured: Measured, result: ServerResult, chats: int) -> None:
    window = [a for a in result.sent if measured.started <= a.monotonic <= measured.ended]
    seconds = measured.ended - measured.started
    user_alerts = sum(1 for a in window if a.chat_id == USER)
    print_markdown(
        ["time to", "of", "samples", "missing", "p50 ms", "p95 ms", "max ms", "target p95", "verdict"], rows(measured)
    )
    print()
    print(
        f"during the {seconds:.0f} s the user acted: {len(window) / seconds:.1f} messages/s accepted "
        f"(to {len({a.chat_id for a in window}):,} chats; {user_alerts} to the user, alerts and digests "
        f"and replies), 429s from the server: {result.stats['rejected_429']}, "
        f"edits: {result.stats['edited']}, callback answers: {result.stats['callbacks_answered']}"
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actions", type=int, default=None, help="the user's actions (default 120; --quick 33)")
    parser.add_argument("--chats", type=int, default=2_000, help="other chats the broadcast goes to")
    parser.add_argument("--think", type=float, default=1.0, help="seconds the user waits after each reaction")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="a Redis database (not 0) the bench empties and uses (default: the in-memory stand-in)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL server for a fresh database (default: DATABASE_URL, else embedded)",
    )
    parser.add_argument("--quick", action="store_true", help="a shorter run, for a check")
    args = parser.parse_args(argv)
    actions = args.actions if args.actions is not None else (33 if args.quick else 120)
    if actions < 1 or args.chats < 1 or args.think < 0:
        parser.error("--actions and --chats must be positive, --think not negative")
    if args.redis_url is not None and redis_database(args.redis_url) == 0:
        parser.error("--redis-url: name a database of the bench's own, not 0 (the bench empties it), e.g. .../5")
    started = time.perf_counter()
    measured, result, submitted = await run(
        Script(USER, actions, args.think), args.chats, args.redis_url, args.database_url
    )
    print(f"{submitted:,} alerts submitted; run took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print_report(measured, result, args.chats)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
