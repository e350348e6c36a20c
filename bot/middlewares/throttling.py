"""Slows down a user who floods commands or buttons, without touching anyone else.

Each user has a token bucket (`FloodGate`): a burst of `burst` updates, then one per `interval`
seconds. An update beyond that is dropped before any handler or store lookup runs. The first drop
of a flood gets one polite notice (a message, or a toast for a button); the rest of that flood is
dropped silently, and the next update that passes ends it. Buckets live in this process only
(like RSS-to-Telegram-Bot's per-user flood locks): a user's updates reach one process anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import BaseMiddleware, Dispatcher
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, Message, TelegramObject, User
from cachetools import TTLCache

from bot.texts import pick_language, text

logger = logging.getLogger("alertbot.throttling")

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

DEFAULT_BURST = 8
DEFAULT_INTERVAL = 1.0
MAX_TRACKED_USERS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float
    flooding: bool = False  # the notice of this flood was given


class FloodGate:
    """Pure token-bucket bookkeeping; `clock` is injectable so tests need no sleeping."""

    def __init__(
        self,
        burst: int = DEFAULT_BURST,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or interval <= 0:
            raise ValueError("burst must be at least 1 and interval positive")
        self.burst = burst
        self.interval = interval
        self.clock = clock
        # A bucket untouched for burst * interval is full again, so it can be forgotten then.
        self._buckets: TTLCache[int, _Bucket] = TTLCache(MAX_TRACKED_USERS, burst * interval, timer=clock)
        self.dropped = 0
        self.notices = 0

    def check(self, user_id: int) -> str:
        """'pass', 'notice' (drop and tell the user once) or 'drop'."""
        now = self.clock()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) / self.interval)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            bucket.flooding = False
            verdict = "pass"
        elif bucket.flooding:
            self.dropped += 1
            verdict = "drop"
        else:
            bucket.flooding = True
            self.dropped += 1
            self.notices += 1
            verdict = "notice"
        self._buckets[user_id] = bucket
        return verdict


class ThrottlingMiddleware(BaseMiddleware):
    def __init__(self, gate: FloodGate | None = None) -> None:
        self.gate = gate or FloodGate()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None or user.is_bot:
            return await handler(event, data)
        settings = data.get("settings")
        if settings is not None and user.id in settings.admin_id_set:
            return await handler(event, data)  # admins are trusted, and a bulk /grant is not a flood
        if isinstance(event, Message) and event.successful_payment is not None:
            return await handler(event, data)  # Telegram's word that money was paid: never dropped
        verdict = self.gate.check(user.id)
        if verdict == "pass":
            return await handler(event, data)
        if verdict == "notice":
            logger.info("user %s is flooding; slowed down", user.id)
            await self._notify(event, user)
        return None

    async def _notify(self, event: TelegramObject, user: User) -> None:
        # The stored language would need a store lookup, which is what a flood must not cost.
        notice = text("throttled", pick_language(user.language_code))
        try:
            if isinstance(event, CallbackQuery):
                await event.answer(notice, show_alert=False)
            elif isinstance(event, Message):
                await event.answer(notice)
        except TelegramAPIError as exc:
            logger.info("could not tell %s to slow down: %s", user.id, exc)


def attach_throttling(dispatcher: Dispatcher, gate: FloodGate | None = None) -> ThrottlingMiddleware:
    middleware = ThrottlingMiddleware(gate)
    dispatcher.message.outer_middleware(middleware)
    dispatcher.callback_query.outer_middleware(middleware)
    return middleware
