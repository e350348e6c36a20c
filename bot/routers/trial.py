"""The free trial: offered on the welcome screen to a user who never had one and has no plan,
started once per Telegram user through the payments ledger."""

from __future__ import annotations

from datetime import UTC, datetime

from aiogram import F, Router
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import MenuCB
from bot.config import Settings
from bot.routers.screens import acknowledge, show
from bot.texts import format_moment, text
from domain.subscriber import Subscriber
from payments.ledger import PaymentLedger, PaymentsUnavailable
from services.subscribers import StoreUnavailable

TRIAL_SCREEN = "trial"


async def trial_button(
    subscriber: Subscriber, language: str, settings: Settings, ledger: PaymentLedger
) -> InlineKeyboardButton | None:
    """The welcome screen's trial button, None when there is nothing to offer."""
    if settings.trial_days <= 0 or subscriber.is_admin or subscriber.has_active_plan(datetime.now(UTC)):
        return None
    try:
        if await ledger.had_trial(subscriber.telegram_id):
            return None
    except (StoreUnavailable, PaymentsUnavailable, ConnectionError):
        return None
    label = text("button_trial", language, days=settings.trial_days)
    return InlineKeyboardButton(text=label, callback_data=MenuCB(screen=TRIAL_SCREEN).pack())


def with_button(markup: InlineKeyboardMarkup, button: InlineKeyboardButton | None) -> InlineKeyboardMarkup:
    if button is None:
        return markup
    return InlineKeyboardMarkup(inline_keyboard=[[button], *markup.inline_keyboard])


async def start_trial(
    callback: CallbackQuery, subscriber: Subscriber, language: str, settings: Settings, ledger: PaymentLedger
) -> None:
    await acknowledge(callback)
    if settings.trial_days <= 0:
        await show(callback, text("trial_used", language))
        return
    try:
        end = await ledger.start_trial(subscriber.telegram_id, settings.trial_days)
    except PaymentsUnavailable:
        await show(callback, text("unavailable", language))
        return
    if end is None:
        await show(callback, text("trial_used", language))
        return
    await show(callback, text("trial_started", language, plan_end=format_moment(end)))


def build_router() -> Router:
    router = Router(name="trial")
    router.callback_query(MenuCB.filter(F.screen == TRIAL_SCREEN))(start_trial)
    return router
