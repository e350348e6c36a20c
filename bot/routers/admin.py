"""Admin commands: /grant USER_ID DAYS and /revoke USER_ID.

Everyone else who tries any admin-only command of docs/contract.md is refused with a short reply, and
the attempt goes to bot.log (warning) and activity_log ('admin_refused'). The refusal handler
matches non-admins only, so admins' commands pass on to whichever router implements them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.filters_admin import IsAdmin
from bot.texts import pick_language, text
from payments.ledger import PaymentLedger, PaymentsUnavailable
from services.subscribers import StoreUnavailable, SubscriberStore, UnknownSubscriber

logger = logging.getLogger("alertbot.admin")

ADMIN_COMMANDS = (
    "admin",
    "stats",
    "broadcast",
    "grant",
    "revoke",
    "ban",
    "unban",
    "health",
    "setpreset",
    "delpreset",
)
MAX_DAYS = 3650
MAX_USER_ID = 2**63 - 1  # bigint


def parse_user_id(raw: str) -> int | None:
    return int(raw) if raw.isdecimal() and 0 < int(raw) <= MAX_USER_ID else None


def parse_days(raw: str) -> int | None:
    return int(raw) if raw.isdecimal() and len(raw) <= 5 and 1 <= int(raw) <= MAX_DAYS else None


def format_moment(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def grant(
    message: Message, command: CommandObject, language: str, store: SubscriberStore, ledger: PaymentLedger
) -> None:
    parts = (command.args or "").split()
    user_id = parse_user_id(parts[0]) if len(parts) == 2 else None
    days = parse_days(parts[1]) if len(parts) == 2 else None
    if user_id is None or days is None:
        await message.answer(text("grant_usage", language))
        return
    admin_id = message.from_user.id if message.from_user else None
    try:
        expires = await ledger.grant(user_id, days, granted_by=admin_id or 0)
    except UnknownSubscriber:
        await message.answer(text("user_unknown", language, user_id=user_id))
        return
    except (StoreUnavailable, PaymentsUnavailable):
        await message.answer(text("unavailable", language))
        return
    await store.log_activity(
        admin_id, "grant", {"telegram_id": user_id, "days": days, "expires_at": expires.isoformat()}, subject=user_id
    )
    await message.answer(text("grant_done", language, user_id=user_id, days=days, expires=format_moment(expires)))
    await _notify(message, store, user_id, days, expires)


async def _notify(message: Message, store: SubscriberStore, user_id: int, days: int, expires: datetime) -> None:
    """Tell the user about their gift; best effort (they may have blocked the bot)."""
    if message.bot is None or message.from_user is None or user_id == message.from_user.id:
        return
    try:
        target = await store.get(user_id)
        language = pick_language(target.language if target else None)
        await message.bot.send_message(
            user_id, text("grant_notice", language, days=days, expires=format_moment(expires))
        )
    except (TelegramAPIError, StoreUnavailable) as exc:
        logger.info("could not tell %s about their grant: %r", user_id, exc)


async def revoke(
    message: Message, command: CommandObject, language: str, store: SubscriberStore, ledger: PaymentLedger
) -> None:
    parts = (command.args or "").split()
    user_id = parse_user_id(parts[0]) if len(parts) == 1 else None
    if user_id is None:
        await message.answer(text("revoke_usage", language))
        return
    try:
        revoked = await ledger.revoke(
            user_id, reason=f"revoked by admin {message.from_user.id if message.from_user else '?'}"
        )
    except (StoreUnavailable, PaymentsUnavailable):
        await message.answer(text("unavailable", language))
        return
    admin_id = message.from_user.id if message.from_user else None
    if revoked:
        await store.log_activity(admin_id, "revoke", {"telegram_id": user_id}, subject=user_id)
    await message.answer(text("revoke_done" if revoked else "revoke_none", language, user_id=user_id))


async def refuse(message: Message, command: CommandObject, language: str, store: SubscriberStore) -> None:
    user_id = message.from_user.id if message.from_user else None
    logger.warning("user %s is not an admin and tried /%s", user_id, command.command)
    if store is not None:
        await store.log_activity(
            user_id, "admin_refused", {"command": command.command, "args": (command.args or "")[:200]}
        )
    await message.answer(text("admin_only", language))


def build_router() -> Router:
    router = Router(name="admin")
    router.message(Command("grant"), IsAdmin())(grant)
    router.message(Command("revoke"), IsAdmin())(revoke)
    router.message(Command(*ADMIN_COMMANDS), ~IsAdmin())(refuse)
    return router
