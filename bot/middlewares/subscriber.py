"""Hands every message and callback handler the `subscriber` who sent it and their `language`.

Registered as an inner middleware (it runs only when a handler matched, so updates nobody handles
cost no store lookups). The user is loaded through the dispatcher's `store` (SubscriberStore),
and registered on first contact. Banned users' updates are dropped without an answer, except a
successful payment, which is money taken and is credited all the same.

If the stores cannot answer, the handler still runs, with a minimal Subscriber built from the
Telegram user and ``subscriber_loaded=False`` in data: a user gets a reply, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Router
from aiogram.types import Message, TelegramObject, User

from bot.texts import pick_language
from services.subscribers import PG_FAILURES, StoreUnavailable, Subscriber, SubscriberStore

logger = logging.getLogger("alertbot.subscribers")

# The stores cannot say who the user is: answer with defaults.
_STORES_DOWN: tuple[type[BaseException], ...] = (StoreUnavailable, ConnectionError, *PG_FAILURES)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class SubscriberMiddleware(BaseMiddleware):
    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None or user.is_bot:
            return await handler(event, data)
        store: SubscriberStore = data["store"]
        subscriber, first_contact = await _load(store, user)
        paid = isinstance(event, Message) and event.successful_payment is not None
        if subscriber is not None and subscriber.status == "banned" and not paid:
            logger.info("dropped an update from banned user %s", user.id)
            return None
        data["subscriber_loaded"] = subscriber is not None
        data["first_contact"] = first_contact  # a /start deep link may credit a referrer only now
        if subscriber is None:
            subscriber = Subscriber(
                telegram_id=user.id,
                is_admin=user.id in store.admin_ids,
                language=pick_language(user.language_code),
                username=user.username,
                first_name=user.first_name,
            )
        data["subscriber"] = subscriber
        data["language"] = pick_language(subscriber.language)
        return await handler(event, data)


async def _load(store: SubscriberStore, user: User) -> tuple[Subscriber | None, bool]:
    """(the stored subscriber, registered just now?); (None, False) when the stores cannot say."""
    try:
        subscriber = await store.get(user.id)
        if subscriber is not None:
            return subscriber, False
        subscriber = await store.register(
            user.id, username=user.username, first_name=user.first_name, language_code=user.language_code
        )
        return subscriber, True
    except _STORES_DOWN as exc:
        logger.warning("stores unavailable for user %s (%r); answering with defaults", user.id, exc)
        return None, False


def attach_subscriber_middleware(router: Router) -> None:
    """Give `router`'s message and callback handlers `subscriber` and `language`."""
    middleware = SubscriberMiddleware()
    router.message.middleware(middleware)
    router.callback_query.middleware(middleware)
