"""The one place an unhandled exception in a handler ends: logged in full, the user told politely."""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import ErrorEvent

from bot.texts import pick_language, text
from services.metrics import Metrics

logger = logging.getLogger("alertbot.handlers")


async def on_error(event: ErrorEvent, metrics: Metrics | None = None) -> bool:
    update = event.update
    if metrics is not None:
        metrics.handler_errors.inc()
    logger.error("handler failed on update %s: %r", update.update_id, event.exception, exc_info=event.exception)
    message = update.message or (update.callback_query.message if update.callback_query else None)
    user = (
        update.message.from_user
        if update.message
        else (update.callback_query.from_user if update.callback_query else None)
    )
    language = pick_language(user.language_code if user else None)
    try:
        if update.callback_query is not None:
            try:
                await update.callback_query.answer(text("error", language), show_alert=False)
                return True
            except TelegramBadRequest:
                pass  # answered already (a press is answered first): say it in the chat instead
        if message is not None:
            await message.answer(text("error", language))
    except Exception:  # noqa: BLE001 - telling the user is best effort; the failure is logged above
        logger.warning("could not tell the user about the failed update %s", update.update_id)
    return True


def build_router() -> Router:
    router = Router(name="errors")
    router.errors()(on_error)
    return router
