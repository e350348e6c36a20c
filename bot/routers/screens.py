"""Showing a screen: a command gets a new message, a button press edits the message it is on.

A press is answered first (`acknowledge`), before any store lookup or other request: Telegram
shows a spinner on the button until it is, and an answer is no chat message, so it waits for no
chat's pacing. What the press did then shows on the screen itself, which replaces the message
pressed; an edit Telegram refuses (message too old, or deleted) falls back to a new message, so
a press always gets a visible answer.
"""

from __future__ import annotations

import html as html_lib
import logging
import re

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

logger = logging.getLogger("alertbot.handlers")

TOAST_LIMIT = 200  # characters of a callback answer


async def acknowledge(event: Message | CallbackQuery, toast: str | None = None, *, alert: bool = False) -> None:
    """Answer a press at once, with an optional short `toast` (HTML allowed; shown as plain
    text, as a dialog with `alert`). Nothing for a typed message, which the screen answers."""
    if isinstance(event, CallbackQuery):
        await event.answer(toast_text(toast) if toast else None, show_alert=alert)


async def show(target: Message | CallbackQuery, html: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """A new message for a command; for a press (acknowledged already) the pressed message edited."""
    if isinstance(target, Message):
        await target.answer(html, reply_markup=markup)
        return
    await edit_or_send(target, html, markup)


def with_notice(notice: str, screen: str) -> str:
    """A screen headed by what the press just did ("✅ Removed: ...")."""
    return f"{notice}\n\n{screen}"


async def edit_or_send(callback: CallbackQuery, html: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Put the screen in place of the message pressed; a new message when it cannot be edited.
    The callback itself is left for the caller to answer (first)."""
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


def toast_text(html: str) -> str:
    """A callback answer (toast) is plain text of at most 200 characters: drop tags, unescape."""
    plain = html_lib.unescape(re.sub(r"<[^>]+>", "", html))
    return plain if len(plain) <= TOAST_LIMIT else plain[: TOAST_LIMIT - 1] + "…"
