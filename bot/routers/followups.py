"""The follow-ups screen: from which multiple on a subscriber hears how their alerts went (every
threshold, from 5x, from 10x, or none), reached from /status."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot import keyboards
from bot.callbacks import FollowupCB, MenuCB
from bot.routers.screens import acknowledge, show, with_notice
from bot.texts import text
from domain.multipliers import FOLLOWUP_CHOICES
from services.subscribers import StoreUnavailable, Subscriber, SubscriberStore

# The label of each choice offered (literal keys, so the text check finds each one).
CHOICE_KEYS: dict[int, str] = {
    2: "followups_choice_all",
    5: "followups_choice_5",
    10: "followups_choice_10",
    0: "followups_choice_off",
}


def choice_label(followup_min: int, language: str) -> str:
    """How a followup_min reads ("every multiple", "from 5x", "off"...)."""
    key = CHOICE_KEYS.get(followup_min)
    return text(key, language) if key else text("followups_choice_from", language, multiple=followup_min)


def followups_screen(current: int, language: str) -> tuple[str, keyboards.InlineKeyboardMarkup]:
    choices = [(minimum, choice_label(minimum, language)) for minimum in FOLLOWUP_CHOICES]
    body = text("followups_title", language, choice=choice_label(current, language))
    return body, keyboards.followups(choices, current, language)


async def open_followups(
    event: Message | CallbackQuery, subscriber: Subscriber, language: str, subscriber_loaded: bool = True
) -> None:
    await acknowledge(event)
    if not subscriber_loaded:
        await show(event, text("unavailable", language), keyboards.back_only(language, "status"))
        return
    await show(event, *followups_screen(subscriber.followup_min, language))


async def choose(
    callback: CallbackQuery,
    callback_data: FollowupCB,
    subscriber: Subscriber,
    language: str,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    minimum = callback_data.minimum
    if minimum not in FOLLOWUP_CHOICES:
        await acknowledge(callback, text("stale_button", language), alert=True)
        return
    await acknowledge(callback)
    if not subscriber_loaded:
        await show(callback, text("unavailable", language), keyboards.back_only(language, "status"))
        return
    try:
        saved = await store.set_preferences(subscriber.telegram_id, followup_min=minimum)
    except StoreUnavailable:
        await show(callback, text("unavailable", language), keyboards.back_only(language, "status"))
        return
    body, markup = followups_screen(saved.followup_min, language)
    notice = text("followups_saved", language, choice=choice_label(saved.followup_min, language))
    await show(callback, with_notice(notice, body), markup)


def build_router() -> Router:
    router = Router(name="followups")
    router.message(Command("followups"))(open_followups)
    router.callback_query(MenuCB.filter(F.screen == "followups"))(open_followups)
    router.callback_query(FollowupCB.filter())(choose)
    return router
