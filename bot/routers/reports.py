"""The reports switch: a screen reached from /status that says what the reports are and turns
them on or off for this subscriber (saved like the other settings, with its history row)."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery

from bot import keyboards
from bot.callbacks import ReportsCB
from bot.routers.screens import acknowledge, show
from bot.texts import text
from services.subscribers import StoreUnavailable, Subscriber, SubscriberStore, UnknownSubscriber


def reports_screen(on: bool, language: str) -> tuple[str, keyboards.InlineKeyboardMarkup]:
    state = text("reports_state_on" if on else "reports_state_off", language)
    return text("reports_screen", language, state=state), keyboards.reports_menu(language, on)


async def open_reports(
    callback: CallbackQuery, subscriber: Subscriber, language: str, subscriber_loaded: bool = True
) -> None:
    await acknowledge(callback)
    if not subscriber_loaded:
        await show(callback, text("unavailable", language), keyboards.back_only(language, "status"))
        return
    await show(callback, *reports_screen(subscriber.reports, language))


async def switch_reports(
    callback: CallbackQuery,
    callback_data: ReportsCB,
    subscriber: Subscriber,
    language: str,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    on = callback_data.action == "on"
    await acknowledge(callback)  # first, as every press; the screen then shows what was saved
    if not subscriber_loaded:
        await show(callback, text("unavailable", language), keyboards.back_only(language, "status"))
        return
    try:
        saved = await store.set_preferences(subscriber.telegram_id, reports=on)
    except (StoreUnavailable, UnknownSubscriber):
        await show(callback, text("unavailable", language), keyboards.back_only(language, "status"))
        return
    await show(callback, *reports_screen(saved.reports, language))


def build_router() -> Router:
    router = Router(name="reports")
    router.callback_query(ReportsCB.filter(F.action == "show"))(open_reports)
    router.callback_query(ReportsCB.filter(F.action.in_({"on", "off"})))(switch_reports)
    return router
