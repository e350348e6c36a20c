"""`my_chat_member`: the bot's own membership in a chat changed.

A user who blocks the bot (or a group that removes it) is marked inactive, so no alert is
queued for them; when they unblock it or add it back, they are active again and alerts resume.
The sender marks them inactive too when Telegram answers 403, in case this update never came.
"""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.types import ChatMemberUpdated

from services.subscribers import StoreUnavailable, SubscriberStore, UnknownSubscriber

logger = logging.getLogger("alertbot.membership")

# Statuses in which the bot can post to the chat.
PRESENT = frozenset({"member", "administrator", "creator"})
ABSENT = frozenset({"kicked", "left"})


def membership_status(new_status: str, current: str) -> str | None:
    """The subscriber status a membership change leads to, or None for no change.

    'banned' is an admin's decision and is never lifted by the user coming back.
    """
    if current == "banned":
        return None
    if new_status in PRESENT and current != "active":
        return "active"
    if new_status in ABSENT and current == "active":
        return "blocked"
    return None


async def on_my_chat_member(update: ChatMemberUpdated, store: SubscriberStore) -> None:
    chat_id = update.chat.id
    try:
        subscriber = await store.get(chat_id)
        if subscriber is None:
            return  # never used /start: nothing to activate
        status = membership_status(update.new_chat_member.status, subscriber.status)
        if status is not None:
            await store.set_status(chat_id, status)
            logger.info("chat %s: bot is now %s; subscriber %s", chat_id, update.new_chat_member.status, status)
    except (StoreUnavailable, UnknownSubscriber) as exc:
        logger.warning("could not record membership change for %s: %s", chat_id, exc)


def build_router() -> Router:
    router = Router(name="membership")
    router.my_chat_member.register(on_my_chat_member, F.chat.id)
    return router
