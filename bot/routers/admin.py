"""Admin commands: /grant USER_ID DAYS, /revoke USER_ID and /refund CHARGE_ID (a Stars payment:
Telegram returns the Stars first, then the ledger marks it refunded and ends the payer's plan).
The admins' screens are in bot.routers.admin_panel, broadcasts in bot.routers.broadcast.

Everyone else who tries any admin-only command (ADMIN_COMMANDS), or presses an admin's button,
is refused with a short reply, and the attempt goes to bot.log (warning) and activity_log
('admin_refused'). The refusal handlers match non-admins only, so admins' commands pass on to
whichever router implements them.
"""

from __future__ import annotations

import html
import logging
from datetime import datetime

from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import Command, CommandObject, or_f
from aiogram.types import CallbackQuery, Message

from bot.callbacks import AdminCB, BroadcastCB
from bot.filters_admin import IsAdmin
from bot.texts import format_moment, pick_language, text
from domain.messages import Lane, OutgoingMessage
from payments.ledger import PaymentLedger, PaymentsUnavailable
from payments.stars import StarsPayments
from services.http_api import HealthProvider, fixed_reason, overall_status
from services.sender import MessageSender
from services.subscribers import StoreUnavailable, SubscriberStore, UnknownSubscriber

logger = logging.getLogger("alertbot.admin")

# /channels is not among them: subscribers have their own (the admins' view comes first for admins).
ADMIN_COMMANDS = (
    "admin",
    "stats",
    "user",
    "payments",
    "export",
    "broadcast",
    "grant",
    "revoke",
    "refund",
    "ban",
    "unban",
    "health",
    "setpreset",
    "delpreset",
)
MAX_DAYS = 3650
MAX_USER_ID = 2**63 - 1  # bigint
MAX_CHARGE_ID = 256  # characters of a telegram_payment_charge_id we accept


def parse_user_id(raw: str) -> int | None:
    return int(raw) if raw.isdecimal() and 0 < int(raw) <= MAX_USER_ID else None


def parse_days(raw: str) -> int | None:
    return int(raw) if raw.isdecimal() and len(raw) <= 5 and 1 <= int(raw) <= MAX_DAYS else None


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
    if message.bot is not None and user_id != admin_id:
        await notify_grant(message.bot, store, user_id, days, expires)


async def notify_grant(bot: Bot, store: SubscriberStore, user_id: int, days: int, expires: datetime) -> None:
    """Tell the user about their gift; best effort (they may have blocked the bot)."""
    try:
        target = await store.get(user_id)
        language = pick_language(target.language if target else None)
        await bot.send_message(user_id, text("grant_notice", language, days=days, expires=format_moment(expires)))
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


async def refund(
    message: Message,
    command: CommandObject,
    language: str,
    store: SubscriberStore,
    stars: StarsPayments,
    bot: Bot,
    sender: MessageSender,
) -> None:
    parts = (command.args or "").split()
    charge_id = parts[0] if len(parts) == 1 and len(parts[0]) <= MAX_CHARGE_ID else None
    if charge_id is None:
        await message.answer(text("refund_usage", language))
        return
    shown = html.escape(charge_id)
    admin_id = message.from_user.id if message.from_user else 0
    try:
        payer = await stars.payer(charge_id)
    except (StoreUnavailable, PaymentsUnavailable):
        await message.answer(text("unavailable", language))
        return
    if payer is None:
        await message.answer(text("refund_unknown", language, charge_id=shown))
        return
    already = False
    try:
        await bot.refund_star_payment(user_id=payer, telegram_payment_charge_id=charge_id)
    except TelegramBadRequest as exc:
        # Refunded at Telegram before (a /refund cut short after it): the ledger still has to
        # end the plan; any other refusal leaves everything as it was.
        if "CHARGE_ALREADY_REFUNDED" not in exc.message:
            logger.warning("admin %s: Telegram refused to refund %s of %s: %s", admin_id, charge_id, payer, exc)
            await message.answer(text("refund_failed", language, charge_id=shown, error=html.escape(exc.message)))
            return
        already = True
    except TelegramAPIError as exc:
        logger.warning("admin %s: the refund of %s of %s failed: %s", admin_id, charge_id, payer, exc)
        await message.answer(text("refund_failed", language, charge_id=shown, error=html.escape(str(exc))))
        return
    try:
        await stars.refund(charge_id, refunded_by=admin_id)
    except (StoreUnavailable, PaymentsUnavailable) as exc:
        # The Stars went back; the plan ends when the admin repeats /refund (Telegram then says
        # "already refunded" and the ledger catches up).
        logger.error("Stars payment %s of %s refunded at Telegram, ledger not updated (%r)", charge_id, payer, exc)
        await message.answer(text("unavailable", language))
        return
    logger.warning("admin %s refunded Stars payment %s of user %s", admin_id, charge_id, payer)
    await store.log_activity(admin_id, "refund", {"telegram_id": payer, "charge_id": charge_id}, subject=payer)
    await message.answer(text("refund_already" if already else "refund_done", language, charge_id=shown, user_id=payer))
    if not already:
        try:
            target = await store.get(payer)
        except StoreUnavailable:
            target = None
        notice = text("refund_notice", pick_language(target.language if target else None))
        sender.submit(OutgoingMessage(payer, notice, lane=Lane.PAYMENT, kind="refund_notice"))


async def refuse(message: Message, command: CommandObject, language: str, store: SubscriberStore) -> None:
    user_id = message.from_user.id if message.from_user else None
    logger.warning("user %s is not an admin and tried /%s", user_id, command.command)
    if store is not None:
        await store.log_activity(
            user_id, "admin_refused", {"command": command.command, "args": (command.args or "")[:200]}
        )
    await message.answer(text("admin_only", language))


async def refuse_press(callback: CallbackQuery, language: str, store: SubscriberStore) -> None:
    """An admin's button pressed by someone else (a forwarded screen, forged data)."""
    user_id = callback.from_user.id
    logger.warning("user %s is not an admin and pressed %s", user_id, callback.data)
    await store.log_activity(user_id, "admin_refused", {"button": (callback.data or "")[:64]})
    await callback.answer(text("admin_only", language), show_alert=True)


async def health(message: Message, language: str, health: HealthProvider) -> None:
    """Every part's state as the service sees it; unlike the public /health endpoint, admins also
    see the last error a part reported."""
    parts = await health()
    lines = [text("health_title", language, status=overall_status(parts))]
    for name, state in parts.items():
        if not isinstance(state, dict):
            continue
        status = str(state.get("status", "?"))
        line = f"• {html.escape(name)}: {html.escape(status)}"
        reason = fixed_reason(name, state)
        if reason:
            line += f" ({html.escape(reason)})"
        error = state.get("last_error")
        if error and status != "ok":
            line += f"\n  <code>{html.escape(str(error))[:200]}</code>"
        lines.append(line)
    await message.answer("\n".join(lines))


def build_router() -> Router:
    router = Router(name="admin")
    router.message(Command("health"), IsAdmin())(health)
    router.message(Command("grant"), IsAdmin())(grant)
    router.message(Command("revoke"), IsAdmin())(revoke)
    router.message(Command("refund"), IsAdmin())(refund)
    router.message(Command(*ADMIN_COMMANDS), ~IsAdmin())(refuse)
    router.callback_query(or_f(AdminCB.filter(), BroadcastCB.filter()), ~IsAdmin())(refuse_press)
    return router
