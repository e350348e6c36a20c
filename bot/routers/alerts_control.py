"""/pause and /resume: stop and restart a subscriber's alerts without touching their filters."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.texts import text
from services.subscribers import StoreUnavailable, Subscriber, SubscriberStore


async def _set_paused(
    message: Message,
    subscriber: Subscriber,
    language: str,
    store: SubscriberStore,
    subscriber_loaded: bool,
    paused: bool,
) -> None:
    if not subscriber_loaded:
        await message.answer(text("unavailable", language))
        return
    if subscriber.paused == paused:
        await message.answer(text("already_paused" if paused else "already_active", language))
        return
    try:
        updated = await store.set_paused(subscriber.telegram_id, paused)
    except StoreUnavailable:
        await message.answer(text("unavailable", language))
        return
    if paused:
        await message.answer(text("paused", language))
        return
    reply = text("resumed", language)
    if not updated.receives_alerts(store.clock()):
        reply += "\n" + text("resumed_no_plan", language)
    await message.answer(reply)


async def pause(
    message: Message,
    subscriber: Subscriber,
    language: str,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    await _set_paused(message, subscriber, language, store, subscriber_loaded, True)


async def resume(
    message: Message,
    subscriber: Subscriber,
    language: str,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    await _set_paused(message, subscriber, language, store, subscriber_loaded, False)


def build_router() -> Router:
    router = Router(name="alerts_control")
    router.message(Command("pause"))(pause)
    router.message(Command("resume"))(resume)
    return router
