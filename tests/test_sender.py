"""MessageSender against the Telegram double with its real limits switched on.

Nothing of ours is patched: the double answers 429 when a limit is exceeded, 403 for a blocked
chat and so on, exactly as Telegram would. Timing assertions are lower bounds on spacing, read
from the server's own monotonic timestamps; nothing asserts how fast something went.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiogram import Bot
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message

from domain.messages import Alert
from services.sender import DeliveryError, Lane, MessageSender, OutgoingMessage
from standins.tcp_proxy import TcpProxy
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, LocalAiohttpSession, RateLimits

pytestmark = pytest.mark.timeout(30)

# Sub-second slack for comparing the server's clock with itself across two requests.
EPSILON = 0.01


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:  # Telegram's own limits: 30/s, 1/s per user, 20/min per group
        yield fake


@pytest.fixture
async def bot(server: FakeTelegramServer) -> AsyncIterator[Bot]:
    created = server.create_bot()
    yield created
    await created.session.close()


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def send_attempts(server: FakeTelegramServer, chat_id: int) -> list[int]:
    """HTTP status of every sendMessage to `chat_id` the server answered."""
    return [c.status for c in server.calls if c.method == "sendMessage" and int(c.params["chat_id"]) == chat_id]


async def test_sixty_chats_all_delivered_without_a_single_429(server: FakeTelegramServer, bot: Bot) -> None:
    async with MessageSender(bot) as sender:  # default pace: 30/s, Telegram's global limit
        for i in range(60):
            sender.submit(OutgoingMessage(1000 + i, f"<b>alert</b> {i}"))
    assert sorted(r.chat_id for r in server.sent) == [1000 + i for i in range(60)]
    assert server.stats.rejected_429 == 0
    stats = sender.stats()
    assert stats["sent"] == 60 and stats["rate_limited"] == 0 and stats["failed"] == 0
    assert sender.pending() == 0


async def test_one_private_chat_gets_its_messages_in_order_a_second_apart(server: FakeTelegramServer, bot: Bot) -> None:
    async with MessageSender(bot) as sender:
        for i in range(3):
            sender.submit(OutgoingMessage(77, f"message {i}"))
    records = server.messages_to(77)
    assert [r.text for r in records] == ["message 0", "message 1", "message 2"]
    gaps = [b.monotonic - a.monotonic for a, b in zip(records, records[1:])]
    assert all(gap >= 1.0 for gap in gaps), gaps
    assert server.stats.rejected_429 == 0


async def test_a_waiting_chat_does_not_hold_up_other_chats(server: FakeTelegramServer, bot: Bot) -> None:
    async with MessageSender(bot) as sender:
        sender.submit(OutgoingMessage(1, "A first"))
        sender.submit(OutgoingMessage(1, "A second"))  # must wait a second for chat 1
        sender.submit(OutgoingMessage(2, "B"))  # submitted after A's second, yet need not wait for it
    a_first, a_second = server.messages_to(1)
    (b,) = server.messages_to(2)
    assert b.monotonic < a_second.monotonic
    assert a_second.monotonic - a_first.monotonic >= 1.0


async def test_group_spacing_follows_the_group_rate() -> None:
    # A shorter group window in the double keeps this quick; the sender is told the same rate.
    limits = RateLimits(group_per_minute=20, group_window=6.0)
    async with FakeTelegramServer(limits=limits) as server:
        group_bot = server.create_bot()
        async with MessageSender(group_bot, group_rate_per_minute=200) as sender:
            for i in range(3):
                sender.submit(OutgoingMessage(-1001234567890, f"group {i}"))
        await group_bot.session.close()
        records = server.messages_to(-1001234567890)
        assert [r.text for r in records] == ["group 0", "group 1", "group 2"]
        assert all(b.monotonic - a.monotonic >= 0.3 for a, b in zip(records, records[1:]))
        assert server.stats.rejected_429 == 0


async def test_flood_wait_pauses_everything_and_loses_nothing(server: FakeTelegramServer, bot: Bot) -> None:
    server.force_retry_after(1)  # every request answers 429 retry_after=1 for one second
    async with MessageSender(bot, global_rate=20) as sender:
        for i in range(10):
            sender.submit(OutgoingMessage(500 + i, f"after flood {i}"))
    for i in range(10):
        assert [r.text for r in server.messages_to(500 + i)] == [f"after flood {i}"]  # once each
    stats = sender.stats()
    assert stats["rate_limited"] >= 1
    assert stats["rate_limited"] == server.stats.rejected_429
    assert stats["sent"] == 10 and stats["failed"] == 0
    # Honoured: nothing was accepted until retry_after had passed since the first 429.
    first_429 = min(c.monotonic for c in server.calls if c.status == 429)
    assert min(r.monotonic for r in server.sent) >= first_429 + 1.0 - EPSILON


async def test_blocked_chat_reported_once_and_not_retried(server: FakeTelegramServer, bot: Bot) -> None:
    server.block_chat(31)
    gone: list[tuple[int, str]] = []
    async with MessageSender(bot, on_gone=lambda chat_id, reason: gone.append((chat_id, reason))) as sender:
        sender.submit(OutgoingMessage(31, "to a blocked chat"))
        sender.submit(OutgoingMessage(32, "to a reachable chat"))
    assert gone == [(31, "Forbidden: bot was blocked by the user")]
    assert send_attempts(server, 31) == [403]
    assert [r.text for r in server.messages_to(32)] == ["to a reachable chat"]
    stats = sender.stats()
    assert stats["gone"] == 1 and stats["retried"] == 0 and stats["sent"] == 1


async def test_deleted_chat_is_gone_and_its_queue_dropped(server: FakeTelegramServer, bot: Bot) -> None:
    server.delete_chat(41)
    gone: list[tuple[int, str]] = []

    async def on_gone(chat_id: int, reason: str) -> None:
        gone.append((chat_id, reason))

    async with MessageSender(bot, on_gone=on_gone) as sender:
        for i in range(3):
            sender.submit(OutgoingMessage(41, f"lost {i}"))
        with pytest.raises(DeliveryError) as raised:
            await sender.send_now(OutgoingMessage(41, "reply", lane=Lane.REPLY))
    assert raised.value.gone
    assert gone == [(41, "Bad Request: chat not found")]
    assert send_attempts(server, 41) == [400]  # one request; the rest would fail the same way
    assert sender.stats()["gone"] == 4


async def test_priority_zero_goes_before_priority_ten(server: FakeTelegramServer, bot: Bot) -> None:
    sender = MessageSender(bot, global_rate=10)
    # Loaded before it starts: the whole queue is there when the first send is picked.
    for i in range(5):
        sender.submit(OutgoingMessage(100 + i, f"alert {i}", lane=10))
    for i in range(5):
        sender.submit(OutgoingMessage(200 + i, f"reply {i}", lane=0))
    async with sender:
        await server.wait_for_sent(3)
        sender.submit(OutgoingMessage(300, "late reply", lane=0))  # overtakes the alerts still queued
    texts = [r.text for r in server.sent]
    assert texts[:5] == [f"reply {i}" for i in range(5)]  # FIFO within a priority
    assert texts.index("late reply") < texts.index("alert 0")
    assert [t for t in texts if t.startswith("alert")] == [f"alert {i}" for i in range(5)]


async def test_send_now_returns_the_message_and_callbacks_see_latency(
    server: FakeTelegramServer, bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[int, int, OutgoingMessage]] = []

    def on_sent(chat_id: int, message: Message, outgoing: OutgoingMessage) -> None:
        seen.append((chat_id, message.message_id, outgoing))

    keyboard = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="Mute", callback_data="mute")]])
    caplog.set_level(logging.INFO, logger="alertbot.sent")
    async with MessageSender(bot, on_sent=on_sent) as sender:
        message = await sender.send_now(
            OutgoingMessage(9, "<b>secret body</b>", reply_markup=keyboard, lane=Lane.REPLY)
        )
        sender.submit(Alert(chat_id=10, html="news", lane=Lane.PAID_ALERT, received_at=time.time(), token="8yZ1pump"))
    assert message.chat.id == 9 and message.text == "secret body"
    assert server.messages_to(9)[0].callback_data == ["mute"]
    assert [(c, m) for c, m, _ in seen] == [(9, message.message_id), (10, server.messages_to(10)[0].message_id)]
    assert isinstance(seen[1][2], Alert) and seen[1][2].token == "8yZ1pump"
    stats = sender.stats()
    assert stats["latency_max"] is not None and stats["latency_max"] >= 0
    lines = [r.getMessage() for r in caplog.records if r.name == "alertbot.sent"]
    assert len(lines) == 2
    assert "chat=10" in lines[1] and "token=8yZ1pump" in lines[1] and "latency_ms=" in lines[1]
    assert all("secret" not in line and "news" not in line for line in lines)  # never the body


async def test_server_errors_are_retried_with_backoff(server: FakeTelegramServer, bot: Bot) -> None:
    server.force_error(502, "Bad Gateway", count=2, methods=["sendMessage"])
    async with MessageSender(bot, backoff_base=0.05) as sender:
        sender.submit(OutgoingMessage(60, "eventually"))
    assert [r.text for r in server.messages_to(60)] == ["eventually"]
    assert sender.stats()["retried"] == 2 and sender.stats()["failed"] == 0


async def test_gives_up_after_max_retries(server: FakeTelegramServer, bot: Bot) -> None:
    server.force_error(500, "Internal Server Error", count=None, methods=["sendMessage"])
    async with MessageSender(bot, max_retries=2, backoff_base=0.01) as sender:
        with pytest.raises(DeliveryError):
            await sender.send_now(OutgoingMessage(61, "never", lane=Lane.REPLY))
    assert send_attempts(server, 61) == [500, 500, 500]
    assert sender.stats()["failed"] == 1 and sender.stats()["retried"] == 2


async def test_a_queued_message_outlives_a_network_outage_and_send_now_gives_up(
    server: FakeTelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alertbot.sender")
    async with TcpProxy("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])) as proxy:
        bot = Bot(DEFAULT_TOKEN, session=LocalAiohttpSession(api=TelegramAPIServer.from_base(proxy.url("http"))))
        try:
            await proxy.stop_forwarding()  # every connection refused: Telegram cannot be reached
            async with MessageSender(bot, max_retries=2, backoff_base=0.01, backoff_max=0.05) as sender:
                sender.submit(OutgoingMessage(62, "through the outage"))
                with pytest.raises(DeliveryError):  # a handler waiting on its reply is not kept waiting
                    await sender.send_now(OutgoingMessage(63, "a reply", lane=Lane.REPLY))
                assert not sender.reachable and sender.stats()["telegram_reachable"] is False
                attempts = proxy.accepted
                await until(lambda: proxy.accepted >= attempts + 5)  # the alert is still being tried
                assert sender.pending() == 1 and sender.stalled()
                await proxy.resume()
                await server.wait_for_sent(lambda r: r.chat_id == 62)
        finally:
            await bot.session.close()
    assert [r.text for r in server.messages_to(62)] == ["through the outage"]
    assert server.messages_to(63) == []
    stats = sender.stats()
    assert stats["failed"] == 1 and stats["sent"] == 1 and stats["telegram_reachable"] is True
    assert stats["outages"] == 1 and not sender.stalled()
    changes = [
        r.getMessage()
        for r in caplog.records
        if "Telegram unreachable" in r.getMessage() or "Telegram reachable again" in r.getMessage()
    ]
    assert len(changes) == 2 and "unreachable" in changes[0] and "reachable again" in changes[1]


async def test_a_gateway_error_page_is_no_verdict_and_the_alert_is_kept(server: FakeTelegramServer, bot: Bot) -> None:
    # A proxy in front of a Telegram that is down answers HTML, which aiogram cannot decode.
    server.force_gateway_error(502, count=8)
    async with MessageSender(bot, backoff_base=0.01, backoff_max=0.05) as sender:
        sender.submit(OutgoingMessage(64, "after the gateway"))
    assert [r.text for r in server.messages_to(64)] == ["after the gateway"]
    assert server.stats.rejected_other == 8
    assert sender.stats()["failed"] == 0 and sender.stats()["outages"] == 1


async def test_bad_markup_is_not_retried(server: FakeTelegramServer, bot: Bot) -> None:
    async with MessageSender(bot) as sender:
        sender.submit(OutgoingMessage(63, "<b>unclosed"))
    assert send_attempts(server, 63) == [400]
    assert sender.stats()["failed"] == 1 and sender.stats()["retried"] == 0


async def test_migrated_group_messages_follow_the_group(server: FakeTelegramServer, bot: Bot) -> None:
    server.migrate_chat(-555, -1009999999999)
    gone: list[tuple[int, str]] = []
    async with MessageSender(bot, on_gone=lambda c, r: gone.append((c, r))) as sender:
        sender.submit(OutgoingMessage(-555, "to the old group"))
    assert [r.text for r in server.messages_to(-1009999999999)] == ["to the old group"]
    assert gone == [(-555, "migrated to -1009999999999")]


async def test_stop_without_drain_drops_the_queue(server: FakeTelegramServer, bot: Bot) -> None:
    sender = MessageSender(bot)
    await sender.start()
    for i in range(3):
        sender.submit(OutgoingMessage(70, f"same chat {i}"))  # a second apart: the last two are still queued
    await server.wait_for_sent(1)
    await sender.stop(drain=False)
    assert len(server.messages_to(70)) < 3
    assert sender.stats()["dropped"] == 3 - len(server.messages_to(70))
    assert sender.pending() == 0
    with pytest.raises(RuntimeError):
        sender.submit(OutgoingMessage(70, "too late"))


# ------------------------------------------------------------------ replies, captions


async def test_replies_take_a_short_burst_while_alerts_keep_the_spacing(server: FakeTelegramServer, bot: Bot) -> None:
    """A chat spaced an hour apart: whatever waits for its spacing does not come during the test.
    Replies (handlers' turns in the REPLY lane) still go, as many as the chat's burst allows, and
    every send to the chat, the alert too, counts in it."""
    sender = MessageSender(bot, per_chat_interval=3600)
    await sender.start()

    async def reply(i: int) -> None:
        async with sender.turn(77, Lane.REPLY):
            await bot.send_message(77, f"reply {i}")

    replies: list[asyncio.Task[None]] = []
    try:
        sender.submit(OutgoingMessage(77, "alert 0"))
        await server.wait_for_sent(lambda r: r.chat_id == 77, count=1)
        sender.submit(OutgoingMessage(77, "alert 1"))  # waits for the chat's spacing
        replies += [asyncio.create_task(reply(i)) for i in range(3)]
        await asyncio.wait_for(asyncio.gather(replies[0], replies[1]), 10)
        assert not replies[2].done()  # the burst (alert 0, reply 0, reply 1) is used up
        assert [r.text for r in server.messages_to(77)] == ["alert 0", "reply 0", "reply 1"]
        assert sender.pending() == 2 and server.stats.rejected_429 == 0
    finally:
        for task in replies:
            task.cancel()
        await asyncio.gather(*replies, return_exceptions=True)
        await sender.stop(drain=False)


async def test_a_caption_is_measured_in_utf16_units(server: FakeTelegramServer, bot: Bot) -> None:
    """1,000 astral emoji are 1,000 characters but 2,000 UTF-16 units: over the 1,024 a caption may
    have, so the alert goes as text; 512 of them (1,024 units) still fit."""
    rocket = "\U0001f680"
    async with MessageSender(bot) as sender:
        sender.submit(OutgoingMessage(81, f"<b>{rocket * 1000}</b>", photo_url="https://img.example/ok.png"))
        sender.submit(OutgoingMessage(82, f"<b>{rocket * 512}</b>", photo_url="https://img.example/ok.png"))
    [as_text] = server.messages_to(81)
    assert as_text.method == "sendMessage" and as_text.text == rocket * 1000
    [as_photo] = server.messages_to(82)
    assert as_photo.method == "sendPhoto" and as_photo.caption == rocket * 512
    assert sender.stats()["failed"] == 0 and server.stats.rejected_400 == 0


async def test_a_caption_telegram_finds_too_long_falls_back_to_text(server: FakeTelegramServer, bot: Bot) -> None:
    server.force_error(400, "Bad Request: message caption is too long", methods=["sendPhoto"])
    async with MessageSender(bot) as sender:
        sender.submit(OutgoingMessage(83, "<b>short enough for us</b>", photo_url="https://img.example/ok.png"))
    [sent] = server.messages_to(83)
    assert sent.method == "sendMessage" and sent.text == "short enough for us"
    assert [c.status for c in server.calls if c.method == "sendPhoto"] == [400]
    assert sender.stats()["photo_fallbacks"] == 1 and sender.stats()["failed"] == 0


async def test_latency_counts_from_the_frames_wall_clock_receive_time(
    server: FakeTelegramServer, bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    # A frame received 30 s ago (say, before a restart): its alert's latency includes those 30 s.
    caplog.set_level(logging.INFO, logger="alertbot.sent")
    async with MessageSender(bot) as sender:
        sender.submit(
            Alert(chat_id=11, html="overdue news", lane=Lane.PAID_ALERT, received_at=time.time() - 30, token="8yZ2pump")
        )
    assert len(server.messages_to(11)) == 1
    latency = sender.stats()["latency_max"]
    assert latency is not None and 30 <= latency < 600
    line = next(r.getMessage() for r in caplog.records if r.name == "alertbot.sent")
    assert "kind=alert token=8yZ2pump" in line and "overdue" not in line
