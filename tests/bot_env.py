"""A running bot for conversation tests: the real Dispatcher (every router) polling the Telegram
double, on the test's real Redis and PostgreSQL, and a `Chat` that talks to it as a user does:
typing messages and pressing the inline buttons the bot really sent (by their label).

A press is answered before the bot does anything else, so `Chat.press` also waits until the
dispatcher is done with the update (`HandledUpdates`) before it reads the screen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiogram import Dispatcher
from aiogram.types import TelegramObject, Update

from bot.broadcasts import BroadcastProgress
from bot.config import Settings
from bot.container import Services, build_services
from bot.middlewares.flood_control import PacedRequestsMiddleware
from bot.middlewares.throttling import FloodGate
from bot.notices import NoticeDelivery
from bot.runtime import build_dispatcher, create_bot
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from services.broadcast import Broadcasts
from services.sender import MessageSender
from services.subscribers import SubscriberStore
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, RateLimits, SentRecord
from tests.conftest import Stores

ADMIN = 1000
REPLY_TIMEOUT = 10.0
JsonDict = dict[str, Any]


class HandledUpdates:
    """An update middleware, outermost of all, that notes each update the dispatcher is done with
    (handlers, and the error router after a failure)."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self._changed = asyncio.Event()

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        try:
            return await handler(event, data)
        finally:
            if isinstance(event, Update):
                self.ids.add(event.update_id)
            self._changed.set()

    def attach(self, dispatcher: Dispatcher) -> None:
        observer = dispatcher.update.outer_middleware
        inner = list(observer)
        for middleware in inner:
            observer.unregister(middleware)
        observer.register(self)
        for middleware in inner:
            observer.register(middleware)

    async def wait(self, update_id: int, timeout: float = REPLY_TIMEOUT) -> None:
        async def handled() -> None:
            while update_id not in self.ids:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(handled(), timeout)


@dataclass
class BotEnv:
    server: FakeTelegramServer
    store: SubscriberStore
    stores: Stores
    dispatcher: Dispatcher
    services: Services
    sender: MessageSender
    broadcasts: Broadcasts
    handled: HandledUpdates = field(default_factory=HandledUpdates)

    def chat(self, user_id: int, language_code: str = "en", first_name: str = "Ann") -> Chat:
        return Chat(self.server, user_id, language_code, first_name, handled=self.handled)


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

    def __init__(
        self,
        server: FakeTelegramServer,
        user_id: int,
        language_code: str = "en",
        first_name: str = "Ann",
        *,
        handled: HandledUpdates | None = None,
    ) -> None:
        self.server = server
        self.user_id = user_id
        self.language_code = language_code
        self.first_name = first_name
        self.handled = handled

    def sent(self) -> list[SentRecord]:
        return self.server.messages_to(self.user_id)

    async def say(self, message: str, replies: int = 1) -> list[SentRecord]:
        """Send `message`; return the bot's next `replies` new messages to this chat."""
        before = len(self.sent())
        self.server.inject_message(self.user_id, message, language_code=self.language_code, first_name=self.first_name)
        records = await self.server.wait_for_sent(
            lambda r: r.chat_id == self.user_id, count=before + replies, timeout=REPLY_TIMEOUT
        )
        return records[before : before + replies]

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
        raise AssertionError(
            f"no button labelled {label!r} in chat {self.user_id}: "
            f"{[self.screen(r.message_id).labels() for r in self.sent()[-3:]]}"
        )

    async def press(self, label: str) -> Screen:
        """Press the button labelled `label` (on the newest message offering it) and wait until the
        bot answered the press and finished with it; returns the pressed message as it is then."""
        screen = self.latest_with(label)
        data = next(d for text, d in screen.buttons if label in text)
        update_id = self.server.inject_callback(self.user_id, screen.message_id, data)
        query_id = self.server.callback_query_id_of(update_id)
        await self.server.wait_for(
            lambda: any(a.callback_query_id == query_id for a in self.server.answered_callbacks),
            REPLY_TIMEOUT,
            description=f"the answer to pressing {label!r}",
        )
        if self.handled is not None:
            await self.handled.wait(update_id)
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
    sender: MessageSender

    @classmethod
    def of(cls, running: BotEnv) -> StoreEnv:
        return cls(running.server, running.store, running.stores.redis, running.stores.postgres, running.sender)

    async def ask(self, user_id: int, message: str, *, language_code: str = "en") -> SentRecord:
        """Send `message` as `user_id` and return the bot's next reply to them."""
        return await Chat(self.server, user_id, language_code).ask(message)


@asynccontextmanager
async def running_bot(
    stores: Stores,
    *,
    flood_gate: FloodGate | None = None,
    paced: bool = False,
    notices: bool = False,
    sender_options: dict[str, Any] | None = None,
    limits: RateLimits | None = None,
    broadcast_options: dict[str, Any] | None = None,
    server: FakeTelegramServer | None = None,
    **dependencies: Any,
) -> AsyncIterator[BotEnv]:
    """The handlers queue messages on a started MessageSender (built with `sender_options`), as in
    production; with `paced` it also paces their own requests, as in production, which a long
    scripted conversation in one chat would otherwise wait on. With `notices` the payments
    notices (receipts, ...) are delivered as the runtime delivers them. Broadcasts run as in the
    runtime (built with `broadcast_options`). The double enforces no limits unless `limits`
    says so; a test that restarts the bot passes its own `server`, which outlives both."""
    async with AsyncExitStack() as outer:
        if server is None:
            server = await outer.enter_async_context(FakeTelegramServer(limits=limits or RateLimits.unlimited()))
        settings = Settings(
            _env_file=None, bot_token=DEFAULT_TOKEN, telegram_api_url=server.base_url, admin_ids=[ADMIN]
        )
        services = build_services(stores.redis, stores.postgres, stores.caches, settings.admin_id_set)
        store = services.store
        await services.ledger.writer.start()
        bot = create_bot(DEFAULT_TOKEN, server.base_url)
        # A script types faster than any person: unless a test is about flooding, the gate is
        # wide open so a long conversation is not taken for a flood.
        gate = flood_gate or FloodGate(burst=10_000)
        sender = MessageSender(bot, **(sender_options or {}))
        await sender.start()
        if paced:
            for middleware in bot.session.middleware:
                if isinstance(middleware, PacedRequestsMiddleware):
                    middleware.attach(sender)
        broadcasts = Broadcasts(
            stores.redis,
            sender,
            services.admin_queries.audience,
            on_progress=BroadcastProgress(bot),
            **(broadcast_options or {}),
        )
        await broadcasts.start()

        async def health() -> dict[str, Any]:
            return {"redis": stores.redis.health(), "postgres": await stores.postgres.health()}

        dependencies.setdefault("health", health)
        dispatcher = build_dispatcher(
            services,
            settings=settings,
            redis=stores.redis,
            flood_gate=gate,
            sender=sender,
            broadcasts=broadcasts,
            **dependencies,
        )
        env = BotEnv(server, store, stores, dispatcher, services, sender, broadcasts)
        env.handled.attach(dispatcher)
        delivery = NoticeDelivery(stores.redis, sender, store) if notices else None
        if delivery is not None:
            await delivery.start()
        polling = asyncio.create_task(dispatcher.start_polling(bot, handle_signals=False))
        try:
            yield env
        finally:
            await dispatcher.stop_polling()
            await asyncio.wait_for(polling, timeout=10)
            if delivery is not None:
                await delivery.stop()
            await broadcasts.stop()
            await sender.stop(drain=True, timeout=10)
            await bot.session.close()
            await services.stars.close()
            await services.ledger.writer.stop()
