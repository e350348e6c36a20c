"""The composition root: opens the stores, builds the bot and the dispatcher, serves HTTP, stops cleanly.

`alertbot run` and `alertbot demo` both go through `Runtime`, so the demo always exercises the
real start-up, handlers and shut-down.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.types import BotCommand
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from bot.config import Settings, require
from bot.middlewares.flood_control import FloodControlMiddleware
from bot.routers import get_routers
from managers.embedded_postgres import start_embedded_postgres
from managers.migrations import apply_migrations
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from services.http_api import ServingFlag, build_http_app
from services.metrics import Metrics

logger = logging.getLogger("alertbot.runtime")

DEFAULT_DATA_DIR = Path("./data")

BOT_COMMANDS: list[BotCommand] = [
    BotCommand(command="start", description="Welcome and main menu"),
    BotCommand(command="help", description="What the bot can do"),
]


def create_bot(token: str, api_url: str) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
    session.middleware(FloodControlMiddleware())
    return Bot(token=token, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def build_dispatcher(**dependencies: Any) -> Dispatcher:
    """Routers wired in one place; `dependencies` reach every handler by parameter name."""
    dispatcher = Dispatcher(**dependencies)
    dispatcher.include_routers(*get_routers())
    return dispatcher


def webhook_secret(token: str) -> str:
    """A secret Telegram echoes on every webhook call, derived so the operator need not set one."""
    return hashlib.sha256(f"webhook:{token}".encode()).hexdigest()[:64]


@dataclass
class Runtime:
    settings: Settings
    data_dir: Path = DEFAULT_DATA_DIR
    # The demo keeps its embedded database in a throw-away folder, `run` under ./data.
    ephemeral_data: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    serving: ServingFlag = field(default_factory=ServingFlag)

    redis: RedisManager | None = None
    postgres: PostgresManager | None = None
    bot: Bot | None = None
    dispatcher: Dispatcher | None = None
    http_port: int | None = None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _polling: asyncio.Task[None] | None = None

    async def health(self) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        parts["redis"] = self.redis.health() if self.redis else {"status": "down"}
        parts["postgres"] = await self.postgres.health() if self.postgres else {"status": "down"}
        return parts

    async def open_stores(self) -> None:
        settings = self.settings
        if settings.database_url is not None:
            dsn = settings.database_url.get_secret_value()
        else:
            folder = Path(tempfile.mkdtemp(prefix="abdemo")) if self.ephemeral_data else self.data_dir
            embedded = await asyncio.to_thread(start_embedded_postgres, folder / "postgres")
            self._stack.callback(embedded.stop)
            dsn = embedded.dsn
            logger.info("using the embedded PostgreSQL under %s", folder)
        applied = await apply_migrations(dsn)
        if applied:
            logger.info("applied migrations: %s", ", ".join(applied))
        self.postgres = PostgresManager(dsn)
        await self.postgres.start()
        self._stack.push_async_callback(self.postgres.close)

        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        if redis_url is None:
            logger.info("REDIS_URL is unset: using the embedded in-memory Redis stand-in")
        self.redis = RedisManager.from_url(redis_url)
        await self.redis.start()
        self._stack.push_async_callback(self.redis.close)
        self.metrics.components.add("redis", lambda: self.redis.metrics() if self.redis else {})

    async def start(self) -> None:
        """Everything up to, not including, receiving updates; on failure, undoes what it opened."""
        require(self.settings, "BOT_TOKEN")
        try:
            await self.open_stores()
            assert self.settings.bot_token is not None
            self.bot = create_bot(self.settings.bot_token.get_secret_value(), self.settings.telegram_api_url)
            self._stack.push_async_callback(self.bot.session.close)
            self.dispatcher = build_dispatcher(
                settings=self.settings, redis=self.redis, postgres=self.postgres, metrics=self.metrics
            )
            await self._start_http()
            await self.bot.set_my_commands(BOT_COMMANDS)
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start_http(self) -> None:
        assert self.bot is not None and self.dispatcher is not None
        app = build_http_app(self.health, self.serving, self.metrics.registry)
        if self.settings.webhook_url:
            path = urlsplit(self.settings.webhook_url).path or "/webhook"
            secret = webhook_secret(self.bot.token)
            SimpleRequestHandler(dispatcher=self.dispatcher, bot=self.bot, secret_token=secret).register(app, path=path)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.settings.http_port
        logger.info("HTTP endpoints on %s:%s", self.settings.http_host, self.http_port)

    async def begin_receiving(self) -> None:
        """Long polling by default; with WEBHOOK_URL, tell Telegram where to post updates."""
        assert self.bot is not None and self.dispatcher is not None
        if self.settings.webhook_url:
            await self.bot.set_webhook(
                self.settings.webhook_url,
                secret_token=webhook_secret(self.bot.token),
                allowed_updates=self.dispatcher.resolve_used_update_types(),
                drop_pending_updates=False,
            )
            logger.info("webhook mode: Telegram posts updates to the WEBHOOK_URL")
        else:
            await self.bot.delete_webhook(drop_pending_updates=False)
            self._polling = asyncio.create_task(
                self.dispatcher.start_polling(
                    self.bot,
                    handle_signals=False,
                    close_bot_session=False,
                    allowed_updates=self.dispatcher.resolve_used_update_types(),
                ),
                name="telegram-polling",
            )
            logger.info("long polling %s", self.settings.telegram_api_url)
        self.serving.serving = True

    async def stop(self) -> None:
        self.serving.serving = False
        if self._polling is not None and self.dispatcher is not None:
            if not self._polling.done():
                try:
                    await self.dispatcher.stop_polling()
                except RuntimeError:
                    pass  # polling had not started yet
            try:
                await asyncio.wait_for(self._polling, timeout=10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._polling.cancel()
            self._polling = None
        await self._stack.aclose()
        logger.info("stopped")

    async def serve_until_signalled(self) -> None:
        """`alertbot run`: serve until SIGINT or SIGTERM, then stop cleanly."""
        stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_requested.set)
        await self.start()
        try:
            await self.begin_receiving()
            waiters = [asyncio.create_task(stop_requested.wait())]
            if self._polling is not None:
                waiters.append(self._polling)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if self._polling is not None and self._polling.done() and self._polling.exception():
                raise self._polling.exception()  # type: ignore[misc]
        finally:
            await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
