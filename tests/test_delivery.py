"""The delivery engine against the test Bot API (which enforces Telegram's limits), real Redis
and real PostgreSQL: exactly once across restarts, lanes, digests, photos, gone recipients."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiogram import Bot
from prometheus_client import generate_latest

from domain.alert_text import render_alert, render_digest, render_digest_line
from domain.events import CallerLine, Channel, TokenInfo
from domain.messages import Alert
from services.metrics import Metrics
from services.outbox import GROUP, STREAM_KEY, Outbox, decode_alert, encode_alert
from services.sender import DigestPolicy, Lane, MessageSender, Outcome, OutgoingMessage
from standins.telegram import FakeTelegramServer, RateLimits
from tests.conftest import Stores


@dataclass
class Engine:
    sender: MessageSender
    queue: Outbox

    async def stop(self) -> None:
        """As the runtime stops: no more reading, sends in flight finish, answers acknowledged."""
        await self.queue.stop_reading()
        await self.sender.stop(drain=False)
        await self.queue.close()


async def start_engine(
    bot: Bot,
    stores: Stores,
    *,
    consumer: str = "sender-a",
    claim_idle: float = 60.0,
    window: int = 1_000,
    **sender_options: object,
) -> Engine:
    sender = MessageSender(bot, **sender_options)  # type: ignore[arg-type]
    await sender.start()
    queue = Outbox(stores.redis, stores.postgres, sender, consumer=consumer, claim_idle=claim_idle, window=window)
    await queue.start()
    return Engine(sender, queue)


BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def alerts(count: int, *, first_chat: int = 1_000, token: str = "T" * 40 + "pump") -> list[Alert]:
    """One token's alert to `count` chats."""
    return [
        Alert(token=token, chat_id=first_chat + i, html=f"<b>alert</b> {i}", lane=Lane.PAID_ALERT) for i in range(count)
    ]


def per_chat_counts(server: FakeTelegramServer) -> Counter[int]:
    return Counter(record.chat_id for record in server.sent)


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    bots: list[Bot] = []
    async with FakeTelegramServer() as telegram:
        original = telegram.create_bot

        def create_bot(*args: object, **kwargs: object) -> Bot:
            bots.append(original(*args, **kwargs))  # type: ignore[arg-type]
            return bots[-1]

        telegram.create_bot = create_bot  # type: ignore[method-assign]
        yield telegram
        for bot in bots:
            await bot.session.close()


async def until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def stream_length(stores: Stores) -> int:
    async with stores.redis.guarded() as client:
        return int(await client.xlen(STREAM_KEY))


def test_the_stream_entries_a_running_deployment_holds_are_read_as_they_were_written() -> None:
    # The entry format is the outbox's contract with entries already in a live stream: these
    # are entries as the bot has always written them, with and without the optional fields.
    full = {
        "token": "T" * 40 + "pump",
        "chat": "-1001234567890",
        "html": "<b>alert</b>",
        "priority": "11",
        "digest": "one line",
        "photo": "https://img.example/t.png",
        "received_at": "1795000000.125",
    }
    bare = {"token": "T" * 40 + "pump", "chat": "42", "html": "<b>alert</b>", "priority": "10"}
    assert decode_alert(full) == Alert(
        token="T" * 40 + "pump",
        chat_id=-1001234567890,
        html="<b>alert</b>",
        lane=Lane.FREE_ALERT,
        digest_line="one line",
        photo_url="https://img.example/t.png",
        received_at=1_795_000_000.125,
    )
    assert decode_alert(bare) == Alert(token="T" * 40 + "pump", chat_id=42, html="<b>alert</b>", lane=Lane.PAID_ALERT)
    assert encode_alert(decode_alert(full)) == full and encode_alert(decode_alert(bare)) == bare


async def test_a_restart_in_the_middle_of_a_broadcast_delivers_every_alert_exactly_once(
    server: FakeTelegramServer, stores: Stores
) -> None:
    bot = server.create_bot()
    first = await start_engine(bot, stores, paid_broadcast=True)
    broadcast = alerts(600)
    await first.queue.publish(broadcast)
    await until(lambda: len(server.sent) >= 150)
    await first.stop()  # mid-broadcast: what was not sent stays in the stream
    sent_before = len(server.sent)
    assert 150 <= sent_before < 600
    assert await stream_length(stores) == 600 - sent_before

    second = await start_engine(bot, stores, paid_broadcast=True)  # same consumer name: a restart
    await until(lambda: len(server.sent) >= 600)
    await asyncio.sleep(0.2)  # room for a duplicate to show up, if there were one
    await second.stop()
    counts = per_chat_counts(server)
    assert len(counts) == 600 and set(counts.values()) == {1}
    assert server.stats.rejected_429 == 0
    assert await stream_length(stores) == 0
    assert await stores.postgres.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == 600


async def test_entries_answered_before_a_crash_are_not_sent_again(server: FakeTelegramServer, stores: Stores) -> None:
    # A crash after Telegram answered and the delivery row was written, before the acknowledgement:
    # the entries are still pending for this consumer when it starts again.
    batch = alerts(20, first_chat=2_000)
    async with stores.redis.guarded() as client:
        await client.xgroup_create(STREAM_KEY, GROUP, id="0", mkstream=True)
        for delivery in batch:
            await client.xadd(STREAM_KEY, encode_alert(delivery))
        await client.xreadgroup(GROUP, "sender-a", {STREAM_KEY: ">"}, count=100)
    for delivery in batch[:12]:
        await stores.postgres.execute(
            "INSERT INTO deliveries (token_address, chat_id, status, message_id) VALUES ($1, $2, 'sent', 1)",
            delivery.token,
            delivery.chat_id,
        )
    engine = await start_engine(server.create_bot(), stores, paid_broadcast=True)
    await until(lambda: len(server.sent) >= 8)
    await until(lambda: engine.queue.stats.acknowledged >= 20)
    await engine.stop()
    assert sorted(per_chat_counts(server)) == [d.chat_id for d in batch[12:]]
    assert engine.queue.stats.already_delivered == 12
    assert await stream_length(stores) == 0


async def test_sends_a_dead_consumer_left_are_claimed_by_another(server: FakeTelegramServer, stores: Stores) -> None:
    batch = alerts(10, first_chat=3_000)
    async with stores.redis.guarded() as client:
        await client.xgroup_create(STREAM_KEY, GROUP, id="0", mkstream=True)
        for delivery in batch:
            await client.xadd(STREAM_KEY, encode_alert(delivery))
        await client.xreadgroup(GROUP, "sender-dead", {STREAM_KEY: ">"}, count=100)  # then it died
    engine = await start_engine(server.create_bot(), stores, consumer="sender-b", claim_idle=0.05, paid_broadcast=True)
    await until(lambda: len(server.sent) >= 10)
    await until(lambda: engine.queue.stats.acknowledged >= 10)
    await engine.stop()
    assert sorted(per_chat_counts(server)) == [d.chat_id for d in batch]
    assert await stream_length(stores) == 0


async def test_a_reply_overtakes_every_queued_alert(server: FakeTelegramServer, stores: Stores) -> None:
    bot = server.create_bot()
    engine = await start_engine(bot, stores, global_rate=50)  # slow enough to hold a queue
    await engine.queue.publish(alerts(300, first_chat=4_000))
    await until(lambda: len(server.sent) >= 10)
    async with engine.sender.turn(77, Lane.REPLY):
        await bot.send_message(77, "your filters")
    position = next(i for i, r in enumerate(server.sent) if r.chat_id == 77)
    await engine.stop()
    # Only the sends already in flight when the reply asked for its turn went before it.
    assert position <= 10 + 8 + 2


async def test_a_backlog_for_one_chat_becomes_one_digest(server: FakeTelegramServer) -> None:
    outcomes: list[Outcome] = []
    digest = DigestPolicy(
        lambda chat, lines: [("<b>digest</b>\n" + "\n".join(lines), len(lines))], threshold=5, max_delay=60
    )
    async with MessageSender(server.create_bot(), digest=digest) as sender:
        for i in range(8):
            sender.submit(OutgoingMessage(55, f"<b>alert {i}</b>", digest_line=f"line {i}"), on_done=outcomes.append)
    [message] = server.messages_to(55)
    assert [f"line {i}" for i in range(8)] == [line for line in (message.raw_text or "").split("\n")[1:]]
    await until(lambda: len(outcomes) == 8)
    assert {(o.status, o.digest) for o in outcomes} == {("sent", True)}
    assert sender.stats()["digests"] == 1 and sender.stats()["digested"] == 8


async def test_alerts_that_waited_too_long_are_merged(server: FakeTelegramServer) -> None:
    digest = DigestPolicy(
        lambda chat, lines: [("digest: " + ", ".join(lines), len(lines))], threshold=50, max_delay=0.3
    )
    async with MessageSender(server.create_bot(), digest=digest) as sender:
        for i in range(3):
            sender.submit(OutgoingMessage(56, f"alert {i}", digest_line=str(i)))
    texts = [m.raw_text for m in server.messages_to(56)]
    # The first went at once; the second waited its chat's second, past 0.3 s, so the rest joined it.
    assert texts == ["alert 0", "digest: 1, 2"]


async def test_a_photo_alert_falls_back_to_text_when_telegram_refuses_the_image(server: FakeTelegramServer) -> None:
    async with MessageSender(server.create_bot()) as sender:
        sender.submit(OutgoingMessage(57, "<b>with picture</b>", photo_url="https://img.example/ok.png"))
    server.force_error(400, "Bad Request: failed to get HTTP URL content", methods=["sendPhoto"])
    async with MessageSender(server.create_bot()) as sender:
        sender.submit(OutgoingMessage(58, "<b>picture gone</b>", photo_url="https://img.example/missing.png"))
    [with_photo] = server.messages_to(57)
    [fallback] = server.messages_to(58)
    assert with_photo.method == "sendPhoto" and with_photo.raw_text == "<b>with picture</b>"
    assert fallback.method == "sendMessage" and fallback.raw_text == "<b>picture gone</b>"
    assert sender.stats()["photo_fallbacks"] == 1


async def test_a_long_alert_goes_as_text_not_as_a_cut_caption(server: FakeTelegramServer) -> None:
    async with MessageSender(server.create_bot()) as sender:
        sender.submit(OutgoingMessage(59, "x" * 1500, photo_url="https://img.example/ok.png"))
    [message] = server.messages_to(59)
    assert message.method == "sendMessage"


async def test_paid_broadcast_goes_past_30_a_second_without_a_429() -> None:
    async with FakeTelegramServer(limits=RateLimits(paid_per_second=1000)) as telegram:
        bot = telegram.create_bot()
        async with MessageSender(bot, paid_broadcast=True, workers=64) as sender:
            assert sender.global_rate == 1000
            for i in range(200):
                sender.submit(OutgoingMessage(10_000 + i, f"alert {i}"))
        await bot.session.close()
        assert len(telegram.sent) == 200 and telegram.stats.rejected_429 == 0
        assert telegram.stats.sent_paid_broadcast == 200


def solana_address(seed: int) -> str:
    """A valid-looking base58 address of 44 characters, different for every seed."""
    rng = random.Random(seed)
    return "".join(rng.choice(BASE58) for _ in range(40)) + "pump"


def rendered_alert(chat_id: int, seed: int) -> Alert:
    token = TokenInfo(
        address=solana_address(seed), symbol=f"TOK{seed}", name=f"Token number {seed}", market_cap_usd=40_000.0 + seed
    )
    callers = [CallerLine(Channel(f"-100{seed}", "Alpha Calls", "alphacalls"))]
    seen = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    return Alert(
        token=token.address,
        chat_id=chat_id,
        html=render_alert(token, callers, seen_at=seen),
        lane=Lane.PAID_ALERT,
        digest_line=render_digest_line(token, callers, seen_at=seen),
    )


async def test_81_merged_alerts_all_reach_the_subscriber_in_numbered_parts(
    server: FakeTelegramServer, stores: Stores
) -> None:
    digest = DigestPolicy(lambda chat, lines: render_digest(lines, "en"), threshold=5, max_delay=60)
    engine = await start_engine(server.create_bot(), stores, digest=digest)
    backlog = [rendered_alert(4242, seed) for seed in range(81)]
    await engine.queue.publish(backlog)
    await until(lambda: engine.queue.stats.acknowledged >= 81, timeout=60)
    await engine.stop()

    messages = server.messages_to(4242)
    assert len(messages) >= 2  # 81 lines do not fit one message
    for index, message in enumerate(messages, start=1):
        assert f"({index}/{len(messages)})" in message.body.split("\n")[0]
        assert "more" not in message.body
        assert len(message.body.encode("utf-16-le")) // 2 <= 4096
    where = {d.token: [m.message_id for m in messages if d.token in m.body] for d in backlog}
    assert all(len(ids) == 1 for ids in where.values()), "every address in exactly one part"
    rows = await stores.postgres.fetch("SELECT token_address, status, digest, message_id FROM deliveries")
    # Each alert was settled by the part that carried it.
    assert {r["token_address"]: (r["status"], r["digest"], r["message_id"]) for r in rows} == {
        token: ("sent", True, ids[0]) for token, ids in where.items()
    }
    assert await stream_length(stores) == 0


@pytest.mark.timeout(300)
async def test_a_minute_of_502s_mid_broadcast_delays_every_alert_and_loses_none(
    server: FakeTelegramServer, stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alertbot")
    engine = await start_engine(server.create_bot(), stores, backoff_max=2.0)
    metrics = Metrics()
    metrics.components.add("sender", engine.sender.stats)  # as the runtime registers it
    first, later = alerts(300, first_chat=6_000), alerts(100, first_chat=6_300)
    await engine.queue.publish(first)
    await until(lambda: len(server.sent) >= 100)
    server.force_error(502, "Bad Gateway", duration=60.0, count=None, methods=["sendMessage"])
    await until(lambda: not engine.sender.reachable)
    assert b"alertbot_sender_telegram_reachable 0.0" in generate_latest(metrics.registry)

    # New alerts during the outage wait in the stream: the reader takes none of them.
    read_before = engine.queue.stats.read
    await engine.queue.publish(later)
    refused = server.stats.rejected_other
    await until(lambda: server.stats.rejected_other >= refused + 5)  # the sender kept trying
    assert engine.queue.stats.read == read_before == 300
    assert engine.sender.stats()["telegram_reachable"] is False and engine.sender.stats()["failed"] == 0

    await until(lambda: len(server.sent) >= 400, timeout=180)
    await until(lambda: engine.queue.stats.acknowledged >= 400)
    await asyncio.sleep(0.5)  # room for a duplicate to show up, if there were one
    await engine.stop()
    counts = per_chat_counts(server)
    assert set(counts) == {d.chat_id for d in first + later} and set(counts.values()) == {1}
    assert await stream_length(stores) == 0
    assert await stores.postgres.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == 400
    assert b"alertbot_sender_telegram_reachable 1.0" in generate_latest(metrics.registry)
    changes = [
        r.getMessage()
        for r in caplog.records
        if r.name == "alertbot.sender" and "Telegram" in r.getMessage() and "reachable" in r.getMessage()
    ]
    assert len(changes) == 2 and "unreachable" in changes[0] and "reachable again" in changes[1]


async def test_a_live_consumers_held_entries_stay_its_own_while_a_dead_ones_are_taken_over(stores: Stores) -> None:
    claim_idle = 1.0
    async with FakeTelegramServer() as down, FakeTelegramServer() as up:
        bot_a, bot_b = down.create_bot(), up.create_bot()
        try:
            down.force_error(502, "Bad Gateway", count=None, methods=["sendMessage"])
            # Its window full, its reader makes no claims of its own that would refresh what it holds.
            live = await start_engine(
                bot_a, stores, consumer="sender-a", claim_idle=claim_idle, window=10, backoff_max=2.0
            )
            held = alerts(10, first_chat=8_000)
            await live.queue.publish(held)
            await until(lambda: live.queue.stats.read == 10 and live.sender.stalled())

            orphans = alerts(10, first_chat=7_000)
            async with stores.redis.guarded() as client:
                for delivery in orphans:
                    await client.xadd(STREAM_KEY, encode_alert(delivery))
                await client.xreadgroup(GROUP, "sender-dead", {STREAM_KEY: ">"}, count=100)  # then it died

            other = await start_engine(bot_b, stores, consumer="sender-b", claim_idle=claim_idle)
            await until(lambda: len(up.sent) >= 10)
            # Several of its claim rounds later, it still has only the dead consumer's entries.
            await asyncio.sleep(3 * claim_idle)
            assert sorted(per_chat_counts(up)) == [d.chat_id for d in orphans]
            assert live.queue.stats.kept > 0 and live.queue.stats.lost == 0

            down.clear_forced_errors()  # Telegram is back for the live consumer: it sends its own
            await until(lambda: len(down.sent) >= 10)
            await until(lambda: live.queue.stats.acknowledged >= 10 and other.queue.stats.acknowledged >= 10)
            await live.stop()
            await other.stop()
        finally:
            await bot_a.session.close()
            await bot_b.session.close()
    assert sorted(per_chat_counts(down)) == [d.chat_id for d in held]
    assert set(per_chat_counts(down).values()) == set(per_chat_counts(up).values()) == {1}
    assert await stream_length(stores) == 0


async def test_delivery_rows_written_while_postgresql_is_down_arrive_once_it_is_back(
    server: FakeTelegramServer, stores: Stores
) -> None:
    from urllib.parse import urlsplit

    from managers.postgres import PostgresManager
    from standins.tcp_proxy import TcpProxy

    target = urlsplit(stores.database_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        postgres = PostgresManager(
            stores.database_url.replace(target.netloc, f"{target.username}@127.0.0.1:{proxy.port}"),
            min_size=1,
            max_size=2,
        )
        await postgres.start()
        sender = MessageSender(server.create_bot(), paid_broadcast=True)
        await sender.start()
        queue = Outbox(stores.redis, postgres, sender, consumer="sender-a")
        await queue.start()
        try:
            await queue.publish(alerts(100))
            await until(lambda: len(server.sent) >= 100)
            await proxy.stop_forwarding()  # PostgreSQL gone: the rest are answered meanwhile
            await queue.publish(alerts(200, first_chat=5_000))
            await until(lambda: len(server.sent) >= 300)
            await until(lambda: queue.stats.acknowledged >= 300)  # nothing held back for the rows
            await proxy.resume()
            count = "SELECT count(*) FROM deliveries WHERE status = 'sent'"
            deadline = time.monotonic() + 30
            while await stores.postgres.fetchval(count) < 300 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            await queue.stop_reading()
            await sender.stop(drain=False)
            await queue.close()
            await postgres.close()
    assert set(per_chat_counts(server).values()) == {1} and len(server.sent) == 300
    assert await stores.postgres.fetchval(count) == 300
    assert queue.stats.unrecorded_dropped == 0
    assert await stream_length(stores) == 0
