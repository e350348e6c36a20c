"""Every request the bot makes keeps to Telegram's limits, through the one sender of the token.

This sits on the Bot's session, so the handlers' own requests (replies, edits, callback answers)
are paced by the same `MessageSender` that sends the alerts: they take a turn in its first lane, so
a user's answer goes out ahead of every queued alert and the overall count never passes
Telegram's limit. Only new messages wait for their chat's pacing (after the chat's short reply
burst); an edit or a callback answer is no message in a chat and takes a place in the overall
pace alone. Requests the sender makes from its queue are already paced and pass straight through.
"""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType

from services.sender import Lane, MessageSender, sending_from_queue

logger = logging.getLogger("alertbot.flood")

MAX_RETRIES = 5
# Methods that put a new message into a chat, which is what Telegram's per-chat limits count.
SENDING_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendVideo",
        "sendAnimation",
        "sendDocument",
        "sendInvoice",
        "copyMessage",
        "forwardMessage",
        "sendMediaGroup",
        "sendSticker",
        "sendPoll",
        "sendAudio",
        "sendVoice",
    }
)
# Counted in the overall rate only: editing has no per-chat limit.
EDITING_METHODS = frozenset({"editMessageText", "editMessageReplyMarkup", "editMessageCaption", "editMessageMedia"})
# Counted in the overall rate only as well: an answer stops a button's spinner, it is no message.
ANSWERING_METHODS = frozenset({"answerCallbackQuery"})
OVERALL_ONLY_METHODS = EDITING_METHODS | ANSWERING_METHODS


class PacedRequestsMiddleware(BaseRequestMiddleware):
    """Pace the handlers' requests through `sender` once it is attached (it needs the Bot first)."""

    def __init__(self) -> None:
        self.sender: MessageSender | None = None
        self.retries = 0

    def attach(self, sender: MessageSender) -> None:
        self.sender = sender

    async def __call__(
        self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot, method: TelegramMethod[TelegramType]
    ) -> Response[TelegramType]:
        name = method.__api_method__
        sender = self.sender
        if (
            sending_from_queue()
            or sender is None
            or not sender.running
            or (name not in SENDING_METHODS and name not in OVERALL_ONLY_METHODS)
        ):
            return await make_request(bot, method)
        chat_id = getattr(method, "chat_id", None) if name in SENDING_METHODS else None
        if sender.paid_broadcast and hasattr(method, "allow_paid_broadcast"):
            method.allow_paid_broadcast = True
        for attempt in range(MAX_RETRIES + 1):
            async with sender.turn(chat_id if isinstance(chat_id, int) else None, Lane.REPLY) as turn:
                try:
                    return await make_request(bot, method)
                except TelegramRetryAfter as exc:
                    turn.rate_limited(exc.retry_after)
                    if attempt == MAX_RETRIES:
                        raise
                    self.retries += 1
                    logger.warning("429 on %s: retrying after %ss (attempt %d)", name, exc.retry_after, attempt + 1)
        raise AssertionError("unreachable")
