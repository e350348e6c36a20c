"""The token pipeline end to end: the feed double, the real runtime, the Bot API double."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.runtime import Runtime
from domain.filters import Filters, set_filter
from domain.subscriber import Subscriber
from standins.feed_server import FeedServer
from standins.feedgen import load_sample
from standins.oracle import expected_alerts
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer

ADMIN = 900
FAST_STREAM = {"min_connect_interval": 0.05, "backoff_base": 0.05, "backoff_max": 0.2, "silence_timeout": 30.0}


def filters(**values: str) -> Filters:
    result = Filters()
    for name, value in values.items():
        result = set_filter(result, name, value)
    return result


@dataclass(frozen=True)
class Member:
    telegram_id: int
    filters: Filters
    plan_days: int | None = 30
    paused: bool = False


MEMBERS = [
    Member(101, filters(min_mcap="500k")),
    Member(102, filters(min_channels="7")),
    Member(103, filters(min_channels="5", min_win_rate="40", max_mcap="1m")),
    Member(104, Filters(), plan_days=None),  # no plan: never alerted
    Member(105, Filters(), paused=True),  # paused: never alerted
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def bot_on_feed(
    feed: FeedServer,
    telegram: FakeTelegramServer,
    redis_url: str,
    database_url: str,
    tmp_path: Path,
    members: Iterable[Member],
    **settings_overrides: Any,
) -> AsyncIterator[Runtime]:
    # The admin's "bot started" message would count among the messages these tests tally.
    settings_overrides.setdefault("monitor_start_notice", False)
    settings = Settings(
        _env_file=None,
        bot_token=DEFAULT_TOKEN,
        telegram_api_url=telegram.base_url,
        redis_url=redis_url,
        database_url=database_url,
        stream_url=feed.url,
        http_port=free_port(),
        log_dir=tmp_path / "logs",
        admin_ids=[ADMIN],
        **settings_overrides,
    )
    # One worker keeps processing in feed order, so the expected alerts are exactly defined.
    runtime = Runtime(settings, pipeline_workers=1, stream_options=FAST_STREAM)
    await runtime.start()
    try:
        store = runtime.store
        assert store is not None and runtime.index_sync is not None
        for member in members:
            await store.register(
                member.telegram_id, username=None, first_name=f"U{member.telegram_id}", language_code="en"
            )
            await store.update_filters(member.telegram_id, member.filters, name="min_mcap")
            if member.plan_days:
                await runtime.ledger.grant(member.telegram_id, member.plan_days, granted_by=ADMIN)
            if member.paused:
                await store.set_paused(member.telegram_id, True)
        await runtime.index_sync.settle()
        await runtime.begin_receiving()
        await feed.wait_for_clients(1, timeout=30)  # frames pushed from now on reach the bot
        yield runtime
    finally:
        await runtime.stop()


def alerts_by_chat(telegram: FakeTelegramServer, addresses: set[str]) -> dict[int, list[str]]:
    """Token alerts the server accepted, per chat, recognised by the token address they carry
    (a digest message carries several, in the order they were alerted)."""
    found: dict[int, list[str]] = {}
    for record in telegram.sent:
        text = record.raw_text or ""
        carried = sorted((text.index(a), a) for a in addresses if a in text)
        found.setdefault(record.chat_id, []).extend(a for _, a in carried)
    return {chat: alerts for chat, alerts in found.items() if alerts}


def as_subscribers(members: Iterable[Member], now: datetime) -> list[Subscriber]:
    return [
        Subscriber(
            m.telegram_id,
            m.filters,
            paused=m.paused,
            plan_expires_at=now + timedelta(days=m.plan_days) if m.plan_days else None,
        )
        for m in members
    ]


def malformed_frames(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    shapes = [
        lambda: "{not json",
        lambda: json.dumps(
            {
                "type": "call",
                "token": {"symbol": "NOADDR"},
                "channel": {"id": "-1"},
                "called_at": "2026-11-20T10:00:00Z",
            }
        ),
        lambda: json.dumps({"type": "call", "token": {"address": "X" * 44}, "called_at": "2026-11-20T10:00:00Z"}),
        lambda: json.dumps({"type": "price", "address": "Y" * 44, "price_usd": "lots", "ts": "2026-11-20T10:00:00Z"}),
        lambda: json.dumps([1, 2, 3]),
        lambda: json.dumps({"type": "call", "token": "not an object", "channel": {"id": "-1"}, "called_at": "x"}),
        lambda: "\x00\x01\x02" * rng.randint(1, 50),
        lambda: json.dumps({"type": "channel"}),
        lambda: json.dumps(
            {"type": "call", "token": {"address": "Z" * 44}, "channel": {"id": "-1"}, "called_at": "yesterday"}
        ),
        lambda: "[" * 10_000,
    ]
    return [shapes[i % len(shapes)]() for i in range(count)]


@pytest.mark.parametrize("with_malformed", [False, True], ids=["clean", "1000-malformed"])
async def test_subscribers_get_exactly_the_alerts_their_filters_pass(
    redis_url: str, database_url: str, tmp_path: Path, with_malformed: bool
) -> None:
    sample = load_sample()
    frames: list[dict | str] = list(sample)
    if with_malformed:
        rng = random.Random(4)
        for bad in malformed_frames(1000):
            frames.insert(rng.randrange(len(frames) + 1), bad)
    now = datetime.now(UTC)
    expected = expected_alerts(sample, as_subscribers(MEMBERS, now), now)
    assert [len(expected[m.telegram_id]) for m in MEMBERS] == [6, 8, 7, 0, 0]
    addresses = {f["token"]["address"] for f in sample if f["type"] == "call"}
    async with FakeTelegramServer() as telegram, FeedServer(frames) as feed:
        async with bot_on_feed(feed, telegram, redis_url, database_url, tmp_path, MEMBERS) as runtime:
            [stream] = runtime.streams
            await stream.wait_for(lambda: stream.stats.frames >= len(frames), timeout=60)
            await runtime.drained(timeout=60)
            got = alerts_by_chat(telegram, addresses)
            for member in MEMBERS:
                assert got.get(member.telegram_id, []) == expected[member.telegram_id], member
            assert stream.stats.malformed == (1000 if with_malformed else 0)
            assert stream.health()["connected"]
            assert telegram.stats.rejected_429 == 0


def call_frame(address: str, channel: str, minute: int, *, name: str = "Token", mcap: float = 80_000) -> dict:
    at = datetime(2026, 11, 21, 9, 0, tzinfo=UTC) + timedelta(minutes=minute)
    return {
        "type": "call",
        "token": {
            "address": address,
            "symbol": "TKN",
            "name": name,
            "chain": "solana",
            "market_cap_usd": mcap,
            "liquidity_usd": 9_000.0,
            "holders": 300,
            "price_usd": mcap / 1e9,
            "created_at": (at - timedelta(minutes=20)).isoformat().replace("+00:00", "Z"),
        },
        "channel": {"id": channel, "name": None, "username": None},  # named by its channel frame
        "called_at": at.isoformat().replace("+00:00", "Z"),
    }


CHANNEL_FRAMES = [
    {
        "type": "channel",
        "id": "-2001",
        "name": "Sharp",
        "username": "sharpcalls",
        "win_rate": 0.7,
        "avg_gain": 3.1,
        "calls": 40,
    },
    *(
        {
            "type": "channel",
            "id": f"-20{i:02d}",
            "name": f"Weak {i}",
            "username": None,
            "win_rate": 0.1,
            "avg_gain": 1.1,
            "calls": 200,
        }
        for i in range(10, 16)
    ),
]
FOLLOWER = Member(201, Filters())  # any token
PICKY = Member(202, filters(min_win_rate="50"))  # only when a sharp channel calls


async def test_five_channels_one_alert_and_rejected_then_upgraded(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    async with FakeTelegramServer() as telegram, FeedServer(CHANNEL_FRAMES) as feed:
        async with bot_on_feed(feed, telegram, redis_url, database_url, tmp_path, [FOLLOWER, PICKY]) as runtime:
            five, upgraded = "F" * 40 + "pump", "U" * 40 + "pump"
            for minute, channel in enumerate(["-2010", "-2011", "-2012", "-2013", "-2001"]):
                await feed.push(call_frame(five, channel, minute))
            await feed.push(call_frame(upgraded, "-2014", 10))  # weak channel: PICKY rejects
            await feed.push(call_frame(upgraded, "-2015", 11))  # still weak: still rejected
            await feed.push(call_frame(upgraded, "-2001", 12))  # sharp: PICKY now passes
            await feed.push(call_frame(upgraded, "-2010", 13))  # a later call never repeats
            await runtime.streams[0].wait_for(lambda: runtime.streams[0].stats.events >= len(CHANNEL_FRAMES) + 9, 30)
            await runtime.drained()
            got = alerts_by_chat(telegram, {five, upgraded})
            assert got[FOLLOWER.telegram_id] == [five, upgraded]
            assert got[PICKY.telegram_id] == [five, upgraded]
            picky_alert = [r for r in telegram.messages_to(PICKY.telegram_id) if upgraded in (r.raw_text or "")][0]
            assert "Sharp" in (picky_alert.text or "") and "Weak 14" in (picky_alert.text or "")
            # Tokens, calls and alerts reached PostgreSQL too, without holding the alerts up.
            assert runtime.persistence is not None and runtime.postgres is not None
            await runtime.persistence.flush()
            rows = await runtime.postgres.fetch(
                "SELECT u.telegram_id, a.token_address, a.channel_ids FROM alerts a JOIN users u ON u.id = a.user_id "
                "ORDER BY a.id"
            )
            assert {(r["telegram_id"], r["token_address"]) for r in rows} == {
                (FOLLOWER.telegram_id, five),
                (FOLLOWER.telegram_id, upgraded),
                (PICKY.telegram_id, five),
                (PICKY.telegram_id, upgraded),
            }
            picky_row = next(
                r for r in rows if r["telegram_id"] == PICKY.telegram_id and r["token_address"] == upgraded
            )
            assert picky_row["channel_ids"] == ["-2014", "-2015", "-2001"]
            calls = await runtime.postgres.fetchval("SELECT count(*) FROM calls WHERE token_address = $1", upgraded)
            assert calls == 4


async def test_a_restart_between_two_calls_never_repeats_an_alert(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    token = "R" * 40 + "pump"
    async with FakeTelegramServer() as telegram:
        async with FeedServer(CHANNEL_FRAMES) as feed:
            async with bot_on_feed(feed, telegram, redis_url, database_url, tmp_path, [FOLLOWER]) as runtime:
                await feed.push(call_frame(token, "-2010", 0))
                await runtime.streams[0].wait_for(
                    lambda: runtime.streams[0].stats.events >= len(CHANNEL_FRAMES) + 1, 30
                )
                await runtime.drained()
        assert alerts_by_chat(telegram, {token}) == {FOLLOWER.telegram_id: [token]}
        async with FeedServer(CHANNEL_FRAMES) as feed:
            async with bot_on_feed(feed, telegram, redis_url, database_url, tmp_path, [FOLLOWER]) as runtime:
                await feed.push(call_frame(token, "-2011", 5))
                other = "S" * 40 + "pump"
                await feed.push(call_frame(other, "-2011", 6))  # proves the restarted bot is alerting
                await runtime.streams[0].wait_for(
                    lambda: runtime.streams[0].stats.events >= len(CHANNEL_FRAMES) + 2, 30
                )
                await runtime.drained()
        assert alerts_by_chat(telegram, {token, other}) == {FOLLOWER.telegram_id: [token, other]}


async def test_hostile_token_name_arrives_escaped_and_is_sent(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    hostile = '<script>alert(1)</script></code><a href="https://evil.example">x</a>&amp;\u202e\x00\x07' + "W" * 300
    token = "H" * 40 + "pump"
    async with FakeTelegramServer() as telegram, FeedServer(CHANNEL_FRAMES) as feed:
        async with bot_on_feed(feed, telegram, redis_url, database_url, tmp_path, [FOLLOWER]):
            frame = call_frame(token, "-2001", 0, name=hostile)
            frame["token"]["symbol"] = "<b>PWN</b>"
            await feed.push(frame)
            [alert] = await telegram.wait_for_sent(lambda r: token in (r.raw_text or ""), timeout=30)
            raw = alert.raw_text or ""
            assert "<script>" not in raw
            assert "&lt;script&gt;" in raw and "&lt;b&gt;PWN&lt;/b&gt;" in raw
            assert "\u202e" not in raw and "\x00" not in raw and "W" * 100 not in raw
            assert 'href="https://evil.example"' not in raw


async def test_a_dropped_feed_reconnects_and_alerts_continue(redis_url: str, database_url: str, tmp_path: Path) -> None:
    before, after = "B" * 40 + "pump", "A" * 40 + "pump"
    async with FakeTelegramServer() as telegram, FeedServer(CHANNEL_FRAMES) as feed:
        async with bot_on_feed(feed, telegram, redis_url, database_url, tmp_path, [FOLLOWER]) as runtime:
            await feed.push(call_frame(before, "-2010", 0))
            await telegram.wait_for_sent(lambda r: before in (r.raw_text or ""), timeout=30)
            await feed.drop_connections()
            await feed.wait_for_connections(2, timeout=30)
            await feed.wait_for_clients(1, timeout=30)
            await feed.push(call_frame(after, "-2010", 1))
            await telegram.wait_for_sent(lambda r: after in (r.raw_text or ""), timeout=30)
            stream = runtime.streams[0]
            assert stream.stats.reconnects >= 1
            await runtime.drained()
            # The replayed channel frames after the reconnect were recognised, not re-processed as new.
            assert alerts_by_chat(telegram, {before, after}) == {FOLLOWER.telegram_id: [before, after]}
