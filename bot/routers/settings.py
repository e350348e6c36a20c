"""/settings and the Filters screen: every filter of the contract edited by buttons.

Pressing a filter turns the screen into the question for its value and waits in the
`SettingsFlow.value` state (kept in Redis through the dispatcher's FSM storage, so a restart does
not lose the question). A typed value is checked by the same parser as `/set`: a bad one gets the
reason and what is accepted, nothing is saved, and the flow keeps waiting; a good one is saved
(source "menu") and the screen comes back below it, in one message headed by what was saved.
Commands typed during the flow are still commands: the state only catches plain text.
"""

from __future__ import annotations

import html
import logging

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bot import keyboards
from bot.callbacks import FilterCB, MenuCB
from bot.routers.filters import CHANNELS_SHOWN_ON_BUTTON, filters_body, format_filter_value, value_error
from bot.routers.screens import acknowledge, show, with_notice
from bot.texts import text
from domain.filters import FILTER_SPECS, FilterValueError, set_filter, unset_filter
from services.subscribers import StoreUnavailable, Subscriber, SubscriberStore

logger = logging.getLogger("alertbot.handlers")


class SettingsFlow(StatesGroup):
    value = State()


def filters_screen(subscriber: Subscriber, language: str) -> tuple[str, keyboards.InlineKeyboardMarkup]:
    filters = subscriber.filters
    body = filters_body(filters, language)
    values = {
        name: format_filter_value(name, value, CHANNELS_SHOWN_ON_BUTTON) for name, value in filters.to_dict().items()
    }
    return f"{body}\n\n{text('filters_screen_hint', language)}", keyboards.filters_menu(filters, language, values)


async def open_filters(
    event: Message | CallbackQuery,
    subscriber: Subscriber,
    language: str,
    state: FSMContext,
    subscriber_loaded: bool = True,
) -> None:
    await acknowledge(event)
    await state.clear()
    if not subscriber_loaded:
        await show(event, text("unavailable", language))
        return
    await show(event, *filters_screen(subscriber, language))


async def ask_value(
    callback: CallbackQuery, callback_data: FilterCB, subscriber: Subscriber, language: str, state: FSMContext
) -> None:
    name = callback_data.name
    if name not in FILTER_SPECS:
        await acknowledge(callback, text("stale_button", language), alert=True)
        return
    await acknowledge(callback)
    current = getattr(subscriber.filters, name)
    shown = html.escape(format_filter_value(name, current)) if current is not None else text("value_not_set", language)
    await state.set_state(SettingsFlow.value)
    await state.update_data(name=name)
    prompt = text(
        "ask_value",
        language,
        label=text(f"label_{name}", language),
        name=name,
        accepted=html.escape(text(f"accepted_{name}", language)),
        current=shown,
    )
    # The question takes the place of the screen pressed; the answer brings the screen back.
    await show(callback, prompt, keyboards.value_prompt(name, current is not None, language))


async def receive_value(
    message: Message,
    state: FSMContext,
    subscriber: Subscriber,
    language: str,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    name = (await state.get_data()).get("name")
    if name not in FILTER_SPECS:
        await state.clear()
        return
    raw = message.text or ""
    try:
        updated = set_filter(subscriber.filters, name, raw)
    except FilterValueError as exc:
        # Nothing saved; the state stays, so the next message is taken as the value again.
        await message.answer(f"{value_error(name, raw, exc, language)}\n{text('flow_try_again', language)}")
        return
    if not subscriber_loaded:
        await message.answer(text("unavailable", language))
        return
    try:
        saved = await store.update_filters(subscriber.telegram_id, updated, name=name, source="menu")
    except StoreUnavailable:
        await message.answer(text("unavailable", language))
        return
    await state.clear()
    value = html.escape(format_filter_value(name, getattr(saved.filters, name)))
    screen, markup = filters_screen(saved, language)
    await message.answer(with_notice(text("filter_set", language, name=name, value=value), screen), reply_markup=markup)


async def reset_one(
    callback: CallbackQuery,
    callback_data: FilterCB,
    subscriber: Subscriber,
    language: str,
    state: FSMContext,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    name = callback_data.name
    if name not in FILTER_SPECS:
        await acknowledge(callback, text("stale_button", language), alert=True)
        return
    await acknowledge(callback)
    await state.clear()
    if not subscriber_loaded:
        await show(callback, text("unavailable", language))
        return
    if name not in subscriber.filters.to_dict():
        screen, markup = filters_screen(subscriber, language)
        await show(callback, with_notice(text("filter_not_set", language, name=name), screen), markup)
        return
    try:
        saved = await store.update_filters(
            subscriber.telegram_id, unset_filter(subscriber.filters, name), name=name, source="menu"
        )
    except StoreUnavailable:
        await show(callback, text("unavailable", language))
        return
    screen, markup = filters_screen(saved, language)
    await show(callback, with_notice(text("filter_unset", language, name=name), screen), markup)


async def reset_all(
    callback: CallbackQuery,
    subscriber: Subscriber,
    language: str,
    state: FSMContext,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    await acknowledge(callback)
    await state.clear()
    if not subscriber_loaded:
        await show(callback, text("unavailable", language))
        return
    saved = subscriber
    try:
        # One history row per filter removed, as if each were unset by hand.
        for name in list(subscriber.filters.to_dict()):
            saved = await store.update_filters(
                subscriber.telegram_id, unset_filter(saved.filters, name), name=name, source="menu"
            )
    except StoreUnavailable:
        await show(callback, text("unavailable", language))
        return
    screen, markup = filters_screen(saved, language)
    await show(callback, with_notice(text("reset_all_done", language), screen), markup)


async def cancel(
    callback: CallbackQuery, subscriber: Subscriber, language: str, state: FSMContext, subscriber_loaded: bool = True
) -> None:
    """The question goes back to being the Filters screen, unchanged."""
    await acknowledge(callback, text("flow_cancelled", language))
    await state.clear()
    if not subscriber_loaded:
        await show(callback, text("unavailable", language))
        return
    await show(callback, *filters_screen(subscriber, language))


def build_router() -> Router:
    router = Router(name="settings")
    router.message(Command("settings"))(open_filters)
    router.callback_query(MenuCB.filter(F.screen == "filters"))(open_filters)
    router.callback_query(FilterCB.filter(F.action == "edit"))(ask_value)
    router.callback_query(FilterCB.filter(F.action == "reset"))(reset_one)
    router.callback_query(FilterCB.filter(F.action == "reset_all"))(reset_all)
    router.callback_query(FilterCB.filter(F.action == "cancel"))(cancel)
    router.message(StateFilter(SettingsFlow.value), F.text, ~F.text.startswith("/"))(receive_value)
    return router
