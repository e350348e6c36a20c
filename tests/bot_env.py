"""A running bot for conversation tests: the real Dispatcher (every router) polling the Telegram
double, on the test's real Redis and PostgreSQL, and a `Chat` that talks to it as a user does:
typing messages and pressing the inline buttons the bot really sent (by their label)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiogram import Dispatcher

from bot.config import Settings
from bot.middlewares.throttling import FloodGate
from bot.runtime import build_dispatcher, create_bot
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from services.sender import AlertSender
from services.subscribers import SubscriberStore
from tests.conftest import Stores
from tests.doubles.telegram_api import DEFAULT_TOKEN, FakeTelegramServer, RateLimits, SentRecord

ADMIN = 1000
REPLY_TIMEOUT = 10.0
JsonDict = dict[str, Any]


@dataclass
class BotEnv:
    server: FakeTelegramServer
    store: SubscriberStore
    stores: Stores
    dispatcher: Dispatcher
    sender: AlertSender | None = None

    def chat(self, user_id: int, language_code: str = "en", first_name: str = "Ann") -> Chat:
        return Chat(self.server, user_id, language_code, first_name)


@dataclass
class Screen:
    """A bot message as the user sees it now (after edits)."""

    message_id: int
    text: str
    buttons: list[tuple[str, str]]  # (label, callback_data), row by row

    def labels(self) -> list[str]:
        return [label for label, _ in self.buttons]


class Chat:
    """One user's private chat with the bot."""

    def __init__(self, server: FakeTelegramServer, user_id: int, language_code: str = "en",
                 first_name: str = "Ann") -> None:
        self.server = server
        self.user_id = user_id
        self.language_code = language_code
        self.first_name = first_name

    def sent(self) -> list[SentRecord]:
        return self.server.messages_to(self.user_id)

    async def say(self, message: str, replies: int = 1) -> list[SentRecord]:
        """Send `message`; return the bot's next `replies` new messages to this chat."""
        before = len(self.sent())
        self.server.inject_message(self.user_id, message, language_code=self.language_code,
                                   first_name=self.first_name)
        records = await self.server.wait_for_sent(lambda r: r.chat_id == self.user_id, count=before + replies,
                                                  timeout=REPLY_TIMEOUT)
        return records[before: before + replies]

    async def ask(self, message: str) -> SentRecord:
        return (await self.say(message))[0]

    def screen(self, message_id: int) -> Screen:
        message = self.server.message(self.user_id, message_id)
        assert message is not None, f"no message {message_id} in chat {self.user_id}"
        rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
        buttons = [(b["text"], b.get("callback_data", "")) for row in rows for b in row]
        return Screen(message_id, message.get("text") or message.get("caption") or "", buttons)

    def latest_with(self, label: str) -> Screen:
        """The newest bot message in the chat whose keyboard has a button whose label contains `label`."""
        for record in reversed(self.sent()):
            screen = self.screen(record.message_id)
            if any(label in text for text in screen.labels()):
                return screen
        raise AssertionError(f"no button labelled {label!r} in chat {self.user_id}: "
                             f"{[self.screen(r.message_id).labels() for r in self.sent()[-3:]]}")

    async def press(self, label: str) -> Screen:
        """Press the button labelled `label` (on the newest message offering it) and wait until the
        bot answered the press; returns the pressed message as it is then."""
        screen = self.latest_with(label)
        data = next(d for text, d in screen.buttons if label in text)
        answered = len(self.server.answered_callbacks)
        self.server.inject_callback(self.user_id, screen.message_id, data)
        await self.server.wait_for(lambda: len(self.server.answered_callbacks) > answered, REPLY_TIMEOUT,
                                   description=f"the answer to pressing {label!r}")
        return self.screen(screen.message_id)

    def last_toast(self) -> str | None:
        return self.server.answered_callbacks[-1].text if self.server.answered_callbacks else None


@dataclass
class StoreEnv:
    """What command tests check against: the Telegram double and the stores behind the bot."""

    server: FakeTelegramServer
    store: SubscriberStore
    redis: RedisManager
    postgres: PostgresManager
    sender: AlertSender | None = None

    @classmethod
    def of(cls, running: BotEnv) -> StoreEnv:
        return cls(running.server, running.store, running.stores.redis, running.stores.postgres, running.sender)

    async def ask(self, user_id: int, message: str, *, language_code: str = "en") -> SentRecord:
        """Send `message` as `user_id` and return the bot's next reply to them."""
        return await Chat(self.server, user_id, language_code).ask(message)


@asynccontextmanager
async def running_bot(stores: Stores, *, flood_gate: FloodGate | None = None, with_sender: bool = False,
                      **dependencies: Any) -> AsyncIterator[BotEnv]:
    """With `with_sender`, handlers get a started AlertSender (as in production) on the same bot."""
    async with FakeTelegramServer(limits=RateLimits.unlimited()) as server:
        settings = Settings(_env_file=None, bot_token=DEFAULT_TOKEN, telegram_api_url=server.base_url,
                            admin_ids=[ADMIN])
        store = SubscriberStore(stores.redis, stores.postgres, stores.caches, settings.admin_id_set)
        bot = create_bot(DEFAULT_TOKEN, server.base_url)
        # A script types faster than any person: unless a test is about flooding, the gate is
        # wide open so a long conversation is not taken for a flood.
        gate = flood_gate or FloodGate(burst=10_000)
        sender = AlertSender(bot) if with_sender else None
        if sender is not None:
            await sender.start()
            dependencies["sender"] = sender
        dispatcher = build_dispatcher(settings=settings, store=store, redis=stores.redis, postgres=stores.postgres,
                                      flood_gate=gate, **dependencies)
        polling = asyncio.create_task(dispatcher.start_polling(bot, handle_signals=False))
        try:
            yield BotEnv(server, store, stores, dispatcher, sender)
        finally:
            await dispatcher.stop_polling()
            await asyncio.wait_for(polling, timeout=10)
            if sender is not None:
                await sender.stop(drain=True, timeout=10)
            await bot.session.close()
