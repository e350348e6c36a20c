"""/broadcast TEXT: a preview with an audience choice (all, paying, trial, free), Send and Cancel.

Send hands the broadcast to services.broadcast, which sends it through the sender in its lowest
lane and turns the preview into the progress message. The text keeps the admin's formatting
(Telegram's entities, written back as HTML).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from bot import keyboards
from bot.callbacks import BroadcastCB
from bot.filters_admin import IsAdmin
from bot.routers.screens import acknowledge, edit_or_send
from bot.texts import text
from services.admin_queries import AdminQueries, Audience
from services.broadcast import Broadcast, Broadcasts, BroadcastsUnavailable
from services.subscribers import PG_FAILURES, SubscriberStore

logger = logging.getLogger("alertbot.broadcast")

# UTF-16 units of the text: Telegram's 4096 less what the preview adds around it.
MAX_BROADCAST_LENGTH = 3500
_COMMAND = re.compile(r"^((?:<[^>]+>)*)/broadcast(?:@\w+)?\s*")
_UNAVAILABLE: tuple[type[BaseException], ...] = (*PG_FAILURES, BroadcastsUnavailable, ConnectionError)


def _utf16_len(value: str) -> int:
    return len(value.encode("utf-16-le")) // 2


def broadcast_html(message: Message) -> str:
    """The message's text as HTML without the command (tags opened before it are kept)."""
    return _COMMAND.sub(r"\1", message.html_text, count=1).strip()


async def _preview(broadcast: Broadcast, admin_queries: AdminQueries) -> tuple[str, InlineKeyboardMarkup]:
    sizes = await admin_queries.audience_sizes(datetime.now(UTC))
    language = broadcast.language
    body = text(
        "broadcast_preview",
        language,
        audience=text(keyboards.AUDIENCE_LABELS[broadcast.audience], language),
        count=sizes[broadcast.audience],
        html=broadcast.html,
    )
    return body, keyboards.broadcast_preview(broadcast.id, broadcast.audience, sizes, language)


async def broadcast(
    message: Message, command: CommandObject, language: str, broadcasts: Broadcasts, admin_queries: AdminQueries
) -> None:
    raw = (command.args or "").strip()
    if not raw:
        await message.answer(text("broadcast_usage", language))
        return
    if (length := _utf16_len(raw)) > MAX_BROADCAST_LENGTH:
        await message.answer(text("broadcast_too_long", language, length=length, limit=MAX_BROADCAST_LENGTH))
        return
    try:
        draft = await broadcasts.draft(message.chat.id, broadcast_html(message), language)
        body, markup = await _preview(draft, admin_queries)
    except _UNAVAILABLE as exc:
        logger.warning("/broadcast: the stores did not answer (%r)", exc)
        await message.answer(text("unavailable", language))
        return
    await message.answer(body, reply_markup=markup)


async def choose_audience(
    callback: CallbackQuery,
    callback_data: BroadcastCB,
    language: str,
    broadcasts: Broadcasts,
    admin_queries: AdminQueries,
) -> None:
    try:
        audience = Audience(callback_data.audience)
    except ValueError:
        await acknowledge(callback, text("broadcast_gone", language))
        return
    try:
        chosen = await broadcasts.choose(callback_data.id, audience)
        if chosen is None:
            await acknowledge(callback, text("broadcast_gone", language))
            return
        body, markup = await _preview(chosen, admin_queries)
    except _UNAVAILABLE as exc:
        logger.warning("broadcast %s: the stores did not answer (%r)", callback_data.id, exc)
        await acknowledge(callback, text("unavailable", language), alert=True)
        return
    await acknowledge(callback)
    await edit_or_send(callback, body, markup)


async def send(
    callback: CallbackQuery, callback_data: BroadcastCB, language: str, broadcasts: Broadcasts, store: SubscriberStore
) -> None:
    """Confirmed: the broadcast runs, and its progress replaces the preview (services.broadcast
    edits it; nothing here does, so no edit of ours can land after the final counts)."""
    message_id = callback.message.message_id if callback.message else 0
    try:
        confirmed = await broadcasts.confirm(callback_data.id, message_id)
    except _UNAVAILABLE as exc:
        logger.warning("broadcast %s: the stores did not answer (%r)", callback_data.id, exc)
        await acknowledge(callback, text("unavailable", language), alert=True)
        return
    if confirmed is None:
        await acknowledge(callback, text("broadcast_gone", language))
        return
    await acknowledge(callback, text("broadcast_sending", language))
    await store.log_activity(
        callback.from_user.id,
        "broadcast",
        {"id": confirmed.id, "audience": confirmed.audience.value, "recipients": confirmed.total},
    )


async def cancel(callback: CallbackQuery, callback_data: BroadcastCB, language: str, broadcasts: Broadcasts) -> None:
    try:
        cancelled = await broadcasts.cancel(callback_data.id)
    except _UNAVAILABLE as exc:
        logger.warning("broadcast %s: the stores did not answer (%r)", callback_data.id, exc)
        await acknowledge(callback, text("unavailable", language), alert=True)
        return
    if cancelled is None:
        await acknowledge(callback, text("broadcast_gone", language))
        return
    await acknowledge(callback)
    await edit_or_send(callback, text("broadcast_cancelled", language))


def build_router() -> Router:
    router = Router(name="broadcast")
    router.message(Command("broadcast"), IsAdmin())(broadcast)
    router.callback_query(BroadcastCB.filter(F.action == "aud"), IsAdmin())(choose_audience)
    router.callback_query(BroadcastCB.filter(F.action == "send"), IsAdmin())(send)
    router.callback_query(BroadcastCB.filter(F.action == "cancel"), IsAdmin())(cancel)
    return router
