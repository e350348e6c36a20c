"""Showing a screen: a command gets a new message, a button press edits the message it is on.

Every callback is answered (Telegram shows a spinner on the button until it is), and an edit that
Telegram refuses (message too old, or deleted) falls back to a new message, so a press always
gets a visible answer.
"""

from __future__ import annotations

import html as html_lib
import logging
import re

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

logger = logging.getLogger("alertbot.handlers")


async def show(
    target: Message | CallbackQuery, html: str, markup: InlineKeyboardMarkup | None = None, *, notice: str | None = None
) -> None:
    """`notice`: a short toast for a button press (what was done), shown over the new screen."""
    if isinstance(target, Message):
        await target.answer(html, reply_markup=markup)
        return
    await edit_or_send(target, html, markup)
    await target.answer(toast_text(notice) if notice else None)


async def edit_or_send(callback: CallbackQuery, html: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Put the screen in place of the message pressed; a new message when it cannot be edited.
    The callback itself is left for the caller to answer."""
    message = callback.message
    if isinstance(message, Message):
        try:
            await message.edit_text(html, reply_markup=markup)
            return
        except TelegramBadRequest as exc:
            if "message is not modified" in str(exc):
                return
            logger.info("could not edit message %s (%s); sending a new one", message.message_id, exc)
            await message.answer(html, reply_markup=markup)
    elif callback.bot is not None:  # the message is too old for Telegram to include it
        await callback.bot.send_message(callback.from_user.id, html, reply_markup=markup)


async def reply(target: Message | CallbackQuery, html: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """A new message in the chat (what a button's result should not overwrite)."""
    if isinstance(target, CallbackQuery):
        if target.bot is not None:
            await target.bot.send_message(target.from_user.id, html, reply_markup=markup)
        await target.answer()
    else:
        await target.answer(html, reply_markup=markup)


def toast_text(html: str) -> str:
    """A callback answer (toast) is plain text of at most 200 characters: drop tags, unescape."""
    plain = html_lib.unescape(re.sub(r"<[^>]+>", "", html))
    return plain if len(plain) <= 200 else plain[:199] + "…"
