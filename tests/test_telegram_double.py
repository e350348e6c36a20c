"""Tests of the Telegram Bot API double, driven through real aiogram Bots.

Rate-limit tests run the server on a `ManualClock`: "N sends within one second" then holds by
construction, so no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    ChatMemberBanned,
    ChatMemberMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from standins.telegram import (
    DEFAULT_TOKEN,
    EntityParseError,
    FakeTelegramServer,
    ManualClock,
    RateLimits,
    SentRecord,
    WaitTimeout,
    parse_html,
)

pytestmark = pytest.mark.timeout(30)

BOT_ID = int(DEFAULT_TOKEN.split(":")[0])


def keyboard(*datas: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=data.upper(), callback_data=data)] for data in datas]
    )


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def server(clock: ManualClock) -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(clock=clock, webhook_retry_delay=0.05) as fake:
        yield fake


@pytest.fixture
async def bot(server: FakeTelegramServer) -> AsyncIterator[Bot]:
    bot = server.create_bot()
    try:
        yield bot
    finally:
        await bot.session.close()


async def raw_call(server: FakeTelegramServer, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.base_url}{path}", **kwargs) as response:
            return response.status, await response.json()


# ------------------------------------------------------------------------------------- basics


async def test_get_me_with_a_plain_aiohttp_session(server: FakeTelegramServer) -> None:
    bot = Bot(DEFAULT_TOKEN, session=AiohttpSession(api=server.api_server()))
    try:
        me = await bot.get_me()
    finally:
        await bot.session.close()
    assert me.id == BOT_ID
    assert me.is_bot
    assert me.username == server.bot_username
    assert server.requests["getMe"] == 1


async def test_wire_format_errors_and_case_insensitive_methods(server: FakeTelegramServer) -> None:
    status, body = await raw_call(server, "/botnot-a-token/getMe")
    assert (status, body) == (401, {"ok": False, "error_code": 401, "description": "Unauthorized"})

    status, body = await raw_call(server, f"/bot{DEFAULT_TOKEN}/noSuchMethod")
    assert (status, body) == (404, {"ok": False, "error_code": 404, "description": "Not Found"})

    status, body = await raw_call(server, f"/bot{DEFAULT_TOKEN}/GETME")
    assert status == 200 and body["ok"] is True and body["result"]["id"] == BOT_ID
    assert server.stats.rejected_401 == 1 and server.stats.rejected_404 == 1


async def test_restricted_tokens(clock: ManualClock) -> None:
    async with FakeTelegramServer(clock=clock, tokens=["42:good"]) as server:
        status, _ = await raw_call(server, f"/bot{DEFAULT_TOKEN}/getMe")
        assert status == 401
        status, body = await raw_call(server, "/bot42:good/getMe")
        assert status == 200 and body["result"]["id"] == 42
        assert server.default_bot_id == 42
        server.revoke_token("42:good")
        bot = server.create_bot("42:good")
        try:
            with pytest.raises(TelegramUnauthorizedError):
                await bot.get_me()
        finally:
            await bot.session.close()


async def test_get_with_query_string(server: FakeTelegramServer) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{server.base_url}/bot{DEFAULT_TOKEN}/sendMessage"
        async with session.get(url, params={"chat_id": "-42", "text": "q"}) as response:
            body = await response.json()
    assert response.status == 200 and body["result"]["chat"]["type"] == "group"
    assert server.sent[0].chat_id == -42


async def test_json_and_urlencoded_bodies(server: FakeTelegramServer) -> None:
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    status, body = await raw_call(
        server,
        f"/bot{DEFAULT_TOKEN}/sendMessage",
        json={"chat_id": 7, "text": "<i>json</i>", "parse_mode": "HTML", "reply_markup": markup},
    )
    assert status == 200, body
    assert body["result"]["text"] == "json"
    assert body["result"]["reply_markup"] == markup
    assert body["result"]["from"]["id"] == BOT_ID

    status, body = await raw_call(
        server,
        f"/bot{DEFAULT_TOKEN}/sendMessage",
        data={
            "chat_id": "8",
            "text": "form",
            "reply_markup": '{"inline_keyboard": [[{"text": "Go", "url": "https://t.me"}]]}',
        },
    )
    assert status == 200, body
    assert body["result"]["chat"] == {"id": 8, "type": "private", "first_name": "User 8"}
    assert [record.chat_id for record in server.sent] == [7, 8]
    assert server.sent[1].reply_markup == {"inline_keyboard": [[{"text": "Go", "url": "https://t.me"}]]}


# ------------------------------------------------------------------------------------- sending


async def test_send_message_html_and_inline_keyboard_round_trip(bot: Bot, server: FakeTelegramServer) -> None:
    message = await bot.send_message(
        1001,
        '<b>PUMP</b> &amp; <a href="https://dexscreener.com/solana/x">chart</a>\n<code>So1ana</code>',
        parse_mode="HTML",
        reply_markup=keyboard("mute:abc", "buy:abc"),
        disable_web_page_preview=True,
    )
    assert isinstance(message, Message)
    assert message.message_id == 1
    assert message.chat.id == 1001 and message.chat.type == "private"
    assert message.from_user is not None and message.from_user.id == BOT_ID
    assert message.text == "PUMP & chart\nSo1ana"
    assert message.entities is not None
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        ("bold", 0, 4),
        ("text_link", 7, 5),
        ("code", 13, 6),
    ]
    assert message.html_text.startswith("<b>PUMP</b>")
    assert message.reply_markup is not None
    assert message.reply_markup.model_dump() == keyboard("mute:abc", "buy:abc").model_dump()

    record = server.sent[0]
    assert record.method == "sendMessage" and record.chat_id == 1001 and record.message_id == 1
    assert record.text == "PUMP & chart\nSo1ana"
    assert record.raw_text is not None and record.raw_text.startswith("<b>PUMP</b>")
    assert record.parse_mode == "HTML"
    assert record.callback_data == ["mute:abc", "buy:abc"]
    assert record.disable_web_page_preview
    assert server.messages_to(1001) == [record]
    assert server.stats.sent == 1


async def test_message_ids_increment_per_chat(bot: Bot, server: FakeTelegramServer, clock: ManualClock) -> None:
    first = await bot.send_message(1, "a")
    await bot.send_message(2, "b")
    clock.advance(1)
    second = await bot.send_message(1, "c")
    assert (first.message_id, second.message_id) == (1, 2)
    assert [r.message_id for r in server.messages_to(2)] == [1]


async def test_invalid_html_raises_bad_request(bot: Bot, server: FakeTelegramServer) -> None:
    with pytest.raises(TelegramBadRequest, match='can\'t parse entities: Unsupported start tag "div"'):
        await bot.send_message(1, "<div>x</div>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match='Can\'t find end tag corresponding to start tag "b"'):
        await bot.send_message(1, "<b>unclosed", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(1, "price < 5", parse_mode="HTML")
    assert server.sent == []
    assert server.stats.rejected_400 == 3
    # Without parse_mode the same text is fine.
    assert (await bot.send_message(1, "price < 5")).text == "price < 5"


async def test_text_limits(bot: Bot, server: FakeTelegramServer, clock: ManualClock) -> None:
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(1, "  \n ")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(1, "<b></b>", parse_mode="HTML")
    # The limit applies after entity parsing: markup and &entities; don't count.
    message = await bot.send_message(1, "<b>" + "&amp;" * 4096 + "</b>", parse_mode="HTML")
    assert message.text == "&" * 4096
    clock.advance(1)
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_photo(1, BufferedInputFile(tiny_png(), "p.png"), caption="c" * 1025)
    # Telegram counts UTF-16 code units: an emoji beyond U+FFFF is two.
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_photo(1, BufferedInputFile(tiny_png(), "p.png"), caption="\U0001f680" * 513)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1, "\U0001f680" * 2049)
    assert len(server.sent) == 1


async def test_callback_data_longer_than_64_bytes(bot: Bot, server: FakeTelegramServer) -> None:
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(1, "hi", reply_markup=keyboard("é" * 33))  # 66 bytes
    await bot.send_message(1, "hi", reply_markup=keyboard("é" * 32))  # 64 bytes is fine
    assert len(server.sent) == 1


async def test_send_photo_multipart_upload_then_file_id(
    bot: Bot, server: FakeTelegramServer, clock: ManualClock
) -> None:
    png = tiny_png(3, 2)
    message = await bot.send_photo(
        55,
        BufferedInputFile(png, filename="chart.png"),
        caption="<b>Chart</b>",
        parse_mode="HTML",
        reply_markup=keyboard("refresh"),
    )
    assert message.photo is not None
    size = message.photo[-1]
    assert (size.width, size.height, size.file_size) == (3, 2, len(png))
    assert message.caption == "Chart"
    record = server.sent[0]
    assert record.method == "sendPhoto" and record.caption == "Chart" and record.body == "Chart"
    assert record.photo is not None and record.photo.source == "upload"
    assert record.photo.content == png and record.photo.filename == "chart.png"

    clock.advance(1)
    again = await bot.send_photo(55, size.file_id)
    assert again.photo is not None and again.photo[-1].file_unique_id == size.file_unique_id
    assert server.sent[1].photo is not None and server.sent[1].photo.source == "file_id"

    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_photo(56, "no-such-file-id")


async def test_edit_message_text(bot: Bot, server: FakeTelegramServer) -> None:
    sent = await bot.send_message(9, "price 1", reply_markup=keyboard("refresh"))
    edited = await bot.edit_message_text(
        text="<b>price 2</b>", chat_id=9, message_id=sent.message_id, parse_mode="HTML"
    )
    assert isinstance(edited, Message)
    assert edited.text == "price 2" and edited.edit_date is not None
    assert edited.reply_markup is None  # editing without reply_markup removes the keyboard
    stored = server.message(9, sent.message_id)
    assert stored is not None and stored["text"] == "price 2" and "reply_markup" not in stored
    assert server.sent[0].text == "price 1"  # the record of the send is not rewritten
    assert [e.text for e in server.edits] == ["price 2"]
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(text="<b>price 2</b>", chat_id=9, message_id=sent.message_id, parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(text="x", chat_id=9, message_id=999)

    with_keyboard = await bot.edit_message_reply_markup(
        chat_id=9, message_id=sent.message_id, reply_markup=keyboard("again")
    )
    assert isinstance(with_keyboard, Message) and with_keyboard.text == "price 2"
    assert [e.method for e in server.edits] == ["editMessageText", "editMessageReplyMarkup"]
    assert await bot.delete_message(9, sent.message_id)
    assert server.message(9, sent.message_id) is None and server.deleted == [(9, sent.message_id)]
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(9, sent.message_id)


# ------------------------------------------------------------------------------------- updates


async def test_get_updates_offset_semantics(bot: Bot, server: FakeTelegramServer) -> None:
    ids = [server.inject_message(100 + i, f"msg {i}") for i in range(4)]
    assert ids == sorted(ids)

    updates = await bot.get_updates()
    assert [u.update_id for u in updates] == ids
    # Without a higher offset nothing is confirmed: the same updates come again.
    assert [u.update_id for u in await bot.get_updates(limit=2)] == ids[:2]
    # offset confirms everything below it.
    assert [u.update_id for u in await bot.get_updates(offset=ids[2])] == ids[2:]
    assert [u.update_id for u in await bot.get_updates()] == ids[2:]
    # A negative offset keeps only the tail of the queue.
    assert [u.update_id for u in await bot.get_updates(offset=-1)] == ids[3:]
    assert await bot.get_updates(offset=ids[3] + 1, timeout=0) == []
    assert server.pending_updates() == []

    message = updates[0].message
    assert message is not None and message.text == "msg 0"
    assert message.from_user is not None and message.from_user.id == 100
    assert message.chat.id == 100 and message.chat.type == "private"


async def test_command_carries_bot_command_entity(bot: Bot, server: FakeTelegramServer) -> None:
    server.inject_message(5, "/start ref_abc", first_name="Ann", username="ann", language_code="de")
    (update,) = await bot.get_updates()
    message = update.message
    assert message is not None and message.entities is not None
    assert [(e.type, e.offset, e.length) for e in message.entities] == [("bot_command", 0, 6)]
    assert message.from_user is not None
    assert (message.from_user.first_name, message.from_user.username, message.from_user.language_code) == (
        "Ann",
        "ann",
        "de",
    )


async def test_long_poll_returns_when_an_update_is_injected(bot: Bot, server: FakeTelegramServer) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=20))
    await server.wait_for_request("getUpdates")
    await asyncio.sleep(0.05)
    assert not poll.done()
    update_id = server.inject_message(7, "hello")
    updates = await asyncio.wait_for(poll, 5)
    assert [u.update_id for u in updates] == [update_id]


async def test_long_poll_times_out_with_empty_list(bot: Bot) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bot.get_updates(timeout=1) == []
    assert loop.time() - started >= 0.9


async def test_second_poller_terminates_the_first(bot: Bot, server: FakeTelegramServer) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=20))
    await server.wait_for_request("getUpdates")
    second = asyncio.create_task(bot.get_updates(timeout=20))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await asyncio.wait_for(first, 5)
    server.inject_message(1, "x")
    assert len(await asyncio.wait_for(second, 5)) == 1


async def test_stop_ends_pending_long_poll_quickly(server: FakeTelegramServer, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await server.wait_for_request("getUpdates")
    await asyncio.wait_for(server.stop(), 5)
    assert await asyncio.wait_for(poll, 5) == []


async def test_allowed_updates_filters_update_types(bot: Bot, server: FakeTelegramServer) -> None:
    server.inject_my_chat_member(3, "kicked")
    message_id = server.inject_message(3, "hi")
    updates = await bot.get_updates(allowed_updates=["message"])
    assert [u.update_id for u in updates] == [message_id]


# ------------------------------------------------------------------------------------- rate limits


async def test_40_messages_within_a_second_to_40_private_chats_hit_429(bot: Bot, server: FakeTelegramServer) -> None:
    results = await asyncio.gather(
        *(bot.send_message(10_000 + i, f"alert {i}") for i in range(40)), return_exceptions=True
    )
    retries = [r for r in results if isinstance(r, TelegramRetryAfter)]
    accepted = [r for r in results if isinstance(r, Message)]
    assert len(retries) + len(accepted) == 40, results
    assert retries, "expected at least one 429"
    assert len(accepted) <= 30
    assert all(r.retry_after >= 1 for r in retries)
    assert "Too Many Requests: retry after" in retries[0].message
    assert len(server.sent) == len(accepted)  # a rejected send is not delivered
    assert server.stats.rejected_429 == len(retries)


async def test_global_limit_frees_up_after_the_window(bot: Bot, server: FakeTelegramServer, clock: ManualClock) -> None:
    for i in range(30):
        await bot.send_message(20_000 + i, "x")
        clock.advance(0.01)
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(21_000, "x")
    assert caught.value.retry_after == 1  # oldest send leaves the window in ~0.7 s -> 1
    clock.advance(0.71)
    await bot.send_message(21_000, "x")
    assert server.stats.sent == 31


async def test_a_private_chat_takes_a_burst_of_three_then_one_a_second(
    bot: Bot, server: FakeTelegramServer, clock: ManualClock
) -> None:
    for i in range(3):
        await bot.send_message(77, f"quick {i}")
    clock.advance(0.5)
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(77, "fourth")
    assert caught.value.retry_after == 1
    assert len(server.messages_to(77)) == 3
    clock.advance(0.5)  # a second after the burst, one send is back
    await bot.send_message(77, "fourth")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(77, "fifth")
    clock.advance(3)  # the bucket is full again: another burst of three, no more
    for i in range(3):
        await bot.send_message(77, f"again {i}")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(77, "one too many")
    assert len(server.messages_to(77)) == 7


async def test_without_a_burst_two_messages_to_one_private_chat_within_a_second(clock: ManualClock) -> None:
    async with FakeTelegramServer(clock=clock, limits=RateLimits(private_chat_burst=1)) as server:
        bot = server.create_bot()
        try:
            await bot.send_message(77, "first")
            clock.advance(0.5)
            with pytest.raises(TelegramRetryAfter) as caught:
                await bot.send_message(77, "second")
            assert caught.value.retry_after == 1
            assert [r.text for r in server.messages_to(77)] == ["first"]
            clock.advance(0.5)
            await bot.send_message(77, "second")
            assert [r.text for r in server.messages_to(77)] == ["first", "second"]
        finally:
            await bot.session.close()


async def test_21_messages_to_one_group_within_a_minute(
    bot: Bot, server: FakeTelegramServer, clock: ManualClock
) -> None:
    group = -1001234567890
    for i in range(20):
        await bot.send_message(group, f"call {i}")
        clock.advance(1.5)  # well under the overall and private limits
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(group, "call 20")
    assert caught.value.retry_after == 30  # the first call leaves the 60 s window in 30 s
    clock.advance(30)
    await bot.send_message(group, "call 20")
    assert len(server.messages_to(group)) == 21


async def test_paid_broadcast_lifts_the_overall_limit(bot: Bot, server: FakeTelegramServer) -> None:
    results = await asyncio.gather(
        *(bot.send_message(30_000 + i, "paid", allow_paid_broadcast=True) for i in range(40)),
        return_exceptions=True,
    )
    assert all(isinstance(r, Message) for r in results), results
    assert server.stats.sent_paid_broadcast == 40
    assert all(r.allow_paid_broadcast for r in server.sent)
    # Regular sends still see the 30/s limit, which the paid ones used up.
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(31_000, "regular")


async def test_configurable_limits(clock: ManualClock) -> None:
    async with FakeTelegramServer(clock=clock, limits=RateLimits(global_per_second=1000)) as server:
        bot = server.create_bot()
        try:
            await asyncio.gather(*(bot.send_message(40_000 + i, "x") for i in range(100)))
            assert server.stats.sent == 100
            server.limits = RateLimits.unlimited()
            await bot.send_message(40_000, "again")
            await bot.send_message(40_000, "and again")
        finally:
            await bot.session.close()


async def test_force_retry_after(bot: Bot, server: FakeTelegramServer, clock: ManualClock) -> None:
    server.force_retry_after(7, count=2)
    for _ in range(2):
        with pytest.raises(TelegramRetryAfter) as caught:
            await bot.send_message(1, "x")
        assert caught.value.retry_after == 7
    await bot.send_message(1, "x")

    server.force_retry_after(3)  # lasts 3 s of the server clock, for every method
    with pytest.raises(TelegramRetryAfter):
        await bot.get_me()
    clock.advance(3)
    await bot.get_me()
    assert server.stats.rejected_429 == 3
    assert server.sent[0].text == "x" and len(server.sent) == 1

    server.force_retry_after(5, methods=["sendMessage"])
    await bot.get_me()
    server.reset_limits()
    clock.advance(1)
    await bot.send_message(1, "y")


# ------------------------------------------------------------------------------------- gone recipients


async def test_gone_recipients(bot: Bot, server: FakeTelegramServer) -> None:
    server.block_chat(1)
    server.deactivate_chat(2)
    server.kick_from_chat(-300)
    server.delete_chat(4)
    server.migrate_chat(-500, -1000000000500)

    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(1, "x")
    with pytest.raises(TelegramForbiddenError, match="user is deactivated"):
        await bot.send_message(2, "x")
    with pytest.raises(TelegramForbiddenError, match="bot was kicked from the group chat"):
        await bot.send_message(-300, "x")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(4, "x")
    with pytest.raises(TelegramMigrateToChat) as migrated:
        await bot.send_message(-500, "x")
    assert migrated.value.migrate_to_chat_id == -1000000000500
    assert "group chat was upgraded to a supergroup chat" in migrated.value.message
    assert server.sent == []
    assert (server.stats.rejected_403, server.stats.rejected_400) == (3, 2)

    server.unblock_chat(1)
    await bot.send_message(1, "welcome back")
    message = await bot.send_message(-1000000000500, "moved")
    assert message.chat.type == "supergroup"


async def test_strict_chats(clock: ManualClock) -> None:
    async with FakeTelegramServer(clock=clock, strict_chats=True) as server:
        bot = server.create_bot()
        try:
            with pytest.raises(TelegramBadRequest, match="chat not found"):
                await bot.send_message(123, "x")
            server.inject_message(123, "/start")
            await bot.send_message(123, "hi")
        finally:
            await bot.session.close()


async def test_my_chat_member_block_and_return(bot: Bot, server: FakeTelegramServer) -> None:
    server.inject_message(8, "/start")
    server.inject_my_chat_member(8, "kicked")
    assert server.chat_status(8) == "blocked"
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(8, "x")
    server.inject_my_chat_member(8, "member")
    assert server.chat_status(8) is None

    updates = await bot.get_updates()
    kicked, back = (u.my_chat_member for u in updates[1:])
    assert kicked is not None and back is not None
    assert isinstance(kicked.old_chat_member, ChatMemberMember)
    assert isinstance(kicked.new_chat_member, ChatMemberBanned)
    assert kicked.new_chat_member.user.id == BOT_ID and kicked.from_user.id == 8
    assert isinstance(back.new_chat_member, ChatMemberMember)
    await bot.send_message(8, "hi again")


# ------------------------------------------------------------------------------------- callbacks, payments


async def test_callback_query_round_trip(bot: Bot, server: FakeTelegramServer) -> None:
    sent = await bot.send_message(42, "Token X", reply_markup=keyboard("mute:x", "more:x"))
    update_id = server.inject_callback(42, sent.message_id, "more:x")
    with pytest.raises(LookupError, match="no button"):
        server.inject_callback(42, sent.message_id, "never-offered")
    with pytest.raises(LookupError):
        server.inject_callback(42, 999, "more:x")

    (update,) = await bot.get_updates()
    query = update.callback_query
    assert update.update_id == update_id and query is not None
    assert query.data == "more:x" and query.from_user.id == 42
    assert isinstance(query.message, Message)
    assert query.message.message_id == sent.message_id and query.message.text == "Token X"
    assert query.message.reply_markup is not None
    assert query.message.reply_markup.model_dump() == keyboard("mute:x", "more:x").model_dump()

    assert await bot.answer_callback_query(query.id, text="Muted", show_alert=True)
    (answer,) = server.answered_callbacks
    assert (answer.update_id, answer.user_id, answer.data, answer.text, answer.show_alert) == (
        update_id,
        42,
        "more:x",
        "Muted",
        True,
    )
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query.id)


async def test_invoice_and_stars_payment_flow(bot: Bot, server: FakeTelegramServer) -> None:
    message = await bot.send_invoice(
        chat_id=61,
        title="Pro plan",
        description="30 days of alerts",
        payload="plan:pro:30",
        currency="XTR",
        prices=[LabeledPrice(label="Pro", amount=250)],
    )
    assert message.invoice is not None
    assert (message.invoice.currency, message.invoice.total_amount) == ("XTR", 250)
    assert server.sent[0].invoice is not None and server.sent[0].invoice["payload"] == "plan:pro:30"
    with pytest.raises(TelegramBadRequest, match="STARS_INVOICE_INVALID"):
        await bot.send_invoice(
            chat_id=62,
            title="t",
            description="d",
            payload="p",
            currency="XTR",
            prices=[LabeledPrice(label="a", amount=1), LabeledPrice(label="b", amount=1)],
        )

    server.inject_pre_checkout(61, "XTR", 250, "plan:pro:30")
    (update,) = await bot.get_updates()
    assert update.pre_checkout_query is not None
    assert update.pre_checkout_query.invoice_payload == "plan:pro:30"
    assert await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    assert server.answered_pre_checkouts[0].ok and server.answered_pre_checkouts[0].user_id == 61

    server.inject_successful_payment(61, "XTR", 250, "plan:pro:30", "charge-1")
    (paid,) = await bot.get_updates(offset=update.update_id + 1)
    assert paid.message is not None and paid.message.successful_payment is not None
    assert paid.message.successful_payment.telegram_payment_charge_id == "charge-1"
    assert await bot.refund_star_payment(user_id=61, telegram_payment_charge_id="charge-1")
    with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(user_id=61, telegram_payment_charge_id="charge-1")


async def test_stars_subscription_link_renewal_and_cancellation(bot: Bot, server: FakeTelegramServer) -> None:
    link = await bot.create_invoice_link(
        title="Monthly",
        description="30 days, renewed",
        payload="sub:month:61",
        currency="XTR",
        prices=[LabeledPrice(label="Monthly", amount=750)],
        subscription_period=30 * 24 * 3600,
    )
    (made,) = server.invoice_links
    assert made["url"] == link and made["subscription_period"] == 2592000 and made["total_amount"] == 750
    for period, currency, amount in ((7 * 24 * 3600, "XTR", 750), (2592000, "USD", 750), (2592000, "XTR", 10001)):
        with pytest.raises(TelegramBadRequest, match="SUBSCRIPTION_"):
            await bot.create_invoice_link(
                title="t",
                description="d",
                payload="p",
                currency=currency,
                provider_token="" if currency == "XTR" else "provider",
                prices=[LabeledPrice(label="a", amount=amount)],
                subscription_period=period,
            )

    server.inject_successful_payment(
        61, "XTR", 750, "sub:month:61", "sub-1", subscription_expiration_date=1_900_000_000, is_first_recurring=True
    )
    server.inject_successful_payment(
        61, "XTR", 750, "sub:month:61", "sub-2", subscription_expiration_date=1_902_592_000
    )
    first, renewal = await bot.get_updates()
    assert first.message is not None and first.message.successful_payment is not None
    assert renewal.message is not None and renewal.message.successful_payment is not None
    assert first.message.successful_payment.is_first_recurring and first.message.successful_payment.is_recurring
    assert renewal.message.successful_payment.is_recurring and not renewal.message.successful_payment.is_first_recurring
    assert renewal.message.successful_payment.subscription_expiration_date == 1_902_592_000

    assert await bot.edit_user_star_subscription(user_id=61, telegram_payment_charge_id="sub-1", is_canceled=True)
    assert server.subscription_edits == [(61, "sub-1", True)]
    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):
        await bot.edit_user_star_subscription(user_id=62, telegram_payment_charge_id="sub-1", is_canceled=True)
    server.inject_successful_payment(61, "XTR", 250, "order", "one-off")
    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):  # not a subscription's payment
        await bot.edit_user_star_subscription(user_id=61, telegram_payment_charge_id="one-off", is_canceled=True)


async def test_commands(bot: Bot, server: FakeTelegramServer) -> None:
    commands = [
        BotCommand(command="start", description="Subscribe"),
        BotCommand(command="filters", description="Edit your filters"),
    ]
    assert await bot.set_my_commands(commands)
    assert [c.model_dump() for c in await bot.get_my_commands()] == [c.model_dump() for c in commands]
    assert server.commands == [c.model_dump(exclude_none=True) for c in commands]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad Command", description="x")])
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == []


# ------------------------------------------------------------------------------------- webhook


async def test_webhook_delivery_with_secret_and_reply_method(bot: Bot, server: FakeTelegramServer) -> None:
    received: list[tuple[dict[str, Any], str | None]] = []
    fail_first = [True]

    async def handler(request: web.Request) -> web.Response:
        if fail_first[0]:
            fail_first[0] = False
            return web.Response(status=500)
        update = await request.json()
        received.append((update, request.headers.get("X-Telegram-Bot-Api-Secret-Token")))
        chat_id = update["message"]["chat"]["id"]
        # Telegram executes a method returned in the webhook response.
        return web.json_response({"method": "sendMessage", "chat_id": chat_id, "text": "pong"})

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        assert await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s3cret")
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates()
        server.inject_message(5, "ping")
        await server.wait_for_sent(lambda r: r.text == "pong")
        assert received[0][0]["message"]["text"] == "ping"
        assert received[0][1] == "s3cret"
        assert server.stats.webhook_errors == 1
        info = await bot.get_webhook_info()
        assert info.url.endswith("/hook") and info.pending_update_count == 0
        assert info.last_error_message is not None and "500" in info.last_error_message
        assert await bot.delete_webhook()
        server.inject_message(5, "back to polling")
        assert [u.message.text for u in await bot.get_updates() if u.message] == ["back to polling"]
    finally:
        await runner.cleanup()


async def test_aiogram_webhook_handler_answering_in_the_response(bot: Bot, server: FakeTelegramServer) -> None:
    """aiogram's SimpleRequestHandler replies with the method as multipart/form-data."""
    router = Router()

    @router.message()
    async def echo(message: Message) -> Any:
        return message.answer(f"echo: <b>{message.text}</b>", parse_mode="HTML")

    dp = Dispatcher()
    dp.include_router(router)
    app = web.Application()
    SimpleRequestHandler(dp, bot, handle_in_background=False, secret_token="tok").register(app, path="/wh")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        assert await bot.set_webhook(f"http://127.0.0.1:{runner.addresses[0][1]}/wh", secret_token="tok")
        server.inject_message(6, "hi")
        (record,) = await server.wait_for_sent(1)
        assert (record.chat_id, record.text, record.parse_mode) == (6, "echo: hi", "HTML")
        assert server.pending_updates() == []
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------------- observation


async def test_wait_for_sent_and_its_timeout_message(bot: Bot, server: FakeTelegramServer) -> None:
    async def send_later() -> None:
        await asyncio.sleep(0.05)
        await bot.send_message(3, "late alert")

    task = asyncio.create_task(send_later())
    records = await server.wait_for_sent(1, timeout=5)
    await task
    assert [r.text for r in records] == ["late alert"]
    matched = await server.wait_for_sent(lambda r: r.chat_id == 3)
    assert isinstance(matched[0], SentRecord)

    with pytest.raises(WaitTimeout, match="late alert"):
        await server.wait_for_sent(lambda r: r.chat_id == 4, timeout=0.1)


# ------------------------------------------------------------------------------------- end to end


async def test_dispatcher_polling_end_to_end(server: FakeTelegramServer) -> None:
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(
            f"Welcome, <b>{message.from_user.first_name if message.from_user else '?'}</b>!",
            parse_mode="HTML",
            reply_markup=keyboard("filters"),
        )

    @router.callback_query(F.data == "filters")
    async def filters(query: CallbackQuery) -> None:
        await query.answer("Opening filters")

    dp = Dispatcher()
    dp.include_router(router)
    bot = server.create_bot()
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=5))
    try:
        server.inject_message(900, "/start", first_name="Zoe")
        (reply,) = await server.wait_for_sent(1)
        assert reply.chat_id == 900 and reply.text == "Welcome, Zoe!"
        server.inject_callback(900, reply.message_id, "filters")
        await server.wait_for(lambda: len(server.answered_callbacks) == 1, description="callback answer")
        assert server.answered_callbacks[0].text == "Opening filters"
    finally:
        await dp.stop_polling()
        await asyncio.wait_for(polling, 10)
        await bot.session.close()
    assert server.requests["getMe"] >= 1


# ------------------------------------------------------------------------------------- HTML parser


@pytest.mark.parametrize(
    ("html", "plain", "entities"),
    [
        (
            "<b>a</b><strong>b</strong><i>c</i><em>d</em>",
            "abcd",
            [("bold", 0, 1), ("bold", 1, 1), ("italic", 2, 1), ("italic", 3, 1)],
        ),
        (
            "<u>a</u><ins>b</ins><s>c</s><strike>d</strike><del>e</del>",
            "abcde",
            [
                ("underline", 0, 1),
                ("underline", 1, 1),
                ("strikethrough", 2, 1),
                ("strikethrough", 3, 1),
                ("strikethrough", 4, 1),
            ],
        ),
        ('<span class="tg-spoiler">s</span><tg-spoiler>t</tg-spoiler>', "st", [("spoiler", 0, 1), ("spoiler", 1, 1)]),
        ("<blockquote>q</blockquote>", "q", [("blockquote", 0, 1)]),
        ('<pre><code class="language-python">x</code></pre>', "x", [("pre", 0, 1)]),
        ("&lt;&gt;&amp;&quot;&#65;&#x42;&unknown;", '<>&"AB&unknown;', []),
        ("😀<b>x</b>", "😀x", [("bold", 2, 1)]),  # offsets are UTF-16 code units
    ],
)
def test_parse_html_supported_markup(html: str, plain: str, entities: list[tuple[str, int, int]]) -> None:
    text, parsed = parse_html(html)
    assert text == plain
    assert [(e["type"], e["offset"], e["length"]) for e in parsed] == entities


@pytest.mark.parametrize(
    ("html", "error"),
    [
        ("<p>x</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("é<b", "Unclosed start tag at byte offset 2"),
    ],
)
def test_parse_html_errors(html: str, error: str) -> None:
    with pytest.raises(EntityParseError) as caught:
        parse_html(html)
    assert str(caught.value) == error
