"""Every request the bot makes keeps to Telegram's per-chat limits and honours 429s.

This sits on the Bot's session, so handler replies get it too, not only queued alerts: a user
who sends two commands in one second gets both answers instead of a flood error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType

logger = logging.getLogger("alertbot.flood")

# Telegram measures from when a request arrives; spacing request starts by exactly the limit
# lets network jitter land the second one a hair early, so keep a small margin.
PRIVATE_CHAT_INTERVAL = 1.05
GROUP_CHAT_INTERVAL = 3.05  # 20 messages a minute
MAX_RETRIES = 5
# Methods that put a new message into a chat, which is what Telegram's per-chat limits count.
SENDING_METHODS = frozenset(
    {"sendMessage", "sendPhoto", "sendVideo", "sendAnimation", "sendDocument", "sendInvoice", "copyMessage",
     "forwardMessage", "sendMediaGroup", "sendSticker", "sendPoll", "sendAudio", "sendVoice"}
)


class FloodControlMiddleware(BaseRequestMiddleware):
    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._next_allowed: dict[int | str, float] = {}
        self._paused_until = 0.0  # Telegram's flood wait applies to the whole bot
        self.retries = 0

    async def __call__(
        self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot, method: TelegramMethod[TelegramType]
    ) -> Response[TelegramType]:
        chat_id = getattr(method, "chat_id", None) if method.__api_method__ in SENDING_METHODS else None
        for attempt in range(MAX_RETRIES + 1):
            await self._wait_turn(chat_id)
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if attempt == MAX_RETRIES:
                    raise
                self.retries += 1
                self._paused_until = max(self._paused_until, self._clock() + exc.retry_after)
                logger.warning("429 on %s: waiting %ss (attempt %d)", method.__api_method__, exc.retry_after, attempt + 1)
        raise AssertionError("unreachable")

    async def _wait_turn(self, chat_id: int | str | None) -> None:
        now = self._clock()
        wait = self._paused_until - now
        if chat_id is not None:
            interval = PRIVATE_CHAT_INTERVAL if isinstance(chat_id, int) and chat_id > 0 else GROUP_CHAT_INTERVAL
            slot = max(now, self._paused_until, self._next_allowed.get(chat_id, 0.0))
            self._next_allowed[chat_id] = slot + interval
            wait = slot - now
            if len(self._next_allowed) > 50_000:
                self._forget_old(now)
        if wait > 0:
            await asyncio.sleep(wait)

    def _forget_old(self, now: float) -> None:
        for key in [key for key, at in self._next_allowed.items() if at < now]:
            del self._next_allowed[key]
