"""/status, /language, /plans, /privacy (with delete-my-data) and /paysupport.

Each is a command and, except /paysupport, a main-menu screen as well. /paysupport forwards one
request a minute per user: the minute is a Redis key with a TTL (services.accounts.PaySupportGate, so it
holds across processes and restarts, and in its in-memory fallback while Redis is down), which
also tells a second request how long to wait. The flood throttling, in memory per process and
per update, answers a different question (many updates within seconds).
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from decimal import Decimal

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from bot import keyboards
from bot.callbacks import LanguageCB, MenuCB, PlanCB, PrivacyCB
from bot.config import Settings
from bot.fsm_storage import fsm_keys
from bot.routers.filters import filter_lines
from bot.routers.followups import choice_label
from bot.routers.screens import acknowledge, show, with_notice
from bot.texts import LANGUAGE_NAMES, money, text
from domain.plans import Plan
from domain.stars import StarsSubscription, offers_subscription
from payments.checkout import CheckoutService
from payments.stars import StarsPayments, subscription_key
from services.accounts import AccountFigures, AccountService, PaySupportGate, paysupport_key, plan_expiry_text
from services.sender import Lane, MessageSender, OutgoingMessage
from services.subscribers import StoreUnavailable, Subscriber, SubscriberStore, UnknownSubscriber

logger = logging.getLogger("alertbot.handlers")

PAYSUPPORT_MAX = 1500  # characters of a support request forwarded to the admins


# ---------------------------------------------------------------------------------- /status


def status_text(
    subscriber: Subscriber,
    figures: AccountFigures | None,
    language: str,
    now: datetime,
    invite_link: str | None,
    subscription: StarsSubscription | None = None,
    subscription_price: int | None = None,
) -> str:
    lines = [text("status_title", language)]
    expiry = plan_expiry_text(subscriber.plan_expires_at, now)
    if expiry is not None:
        lines.append(text("status_plan_active", language, date=expiry[0], days=expiry[1]))
    elif subscriber.is_admin:
        lines.append(text("status_plan_admin", language))
    else:
        lines.append(text("status_plan_none", language))
    if subscription is not None and subscription.expires_at is not None and subscription.is_live(now):
        date = subscription.expires_at.strftime("%Y-%m-%d")
        if subscription.canceled:
            lines.append(text("status_subscription_canceled", language, date=date))
        else:
            price = money(Decimal(subscription_price), "XTR") if subscription_price else "⭐"
            lines.append(text("status_subscription", language, amount=price, date=date))
    lines.append(text("status_alerts_paused" if subscriber.paused else "status_alerts_on", language))
    lines.append(text("status_followups", language, choice=choice_label(subscriber.followup_min, language)))
    if figures is not None:
        lines.append(text("status_alerts_today", language, count=figures.alerts_today))
    if subscriber.preset:
        lines.append(text("status_preset", language, preset=html.escape(subscriber.preset)))
    filter_list = filter_lines(subscriber.filters)
    lines.append("")
    lines.extend(
        [text("filters_title", language), *filter_list] if filter_list else [text("status_filters_none", language)]
    )
    if invite_link is not None and figures is not None:
        lines.extend(["", text("status_invite", language, link=html.escape(invite_link), count=figures.referred_users)])
    return "\n".join(lines)


async def status(
    event: Message | CallbackQuery,
    subscriber: Subscriber,
    language: str,
    bot: Bot,
    accounts: AccountService,
    stars: StarsPayments,
    subscriber_loaded: bool = True,
) -> None:
    await acknowledge(event)
    if not subscriber_loaded:
        await show(event, text("unavailable", language), keyboards.back_only(language))
        return
    now = datetime.now(UTC)
    try:
        figures = await accounts.figures(subscriber.telegram_id, now)
        code = await accounts.referral_code(subscriber.telegram_id)
        me = await bot.me()
        link = f"https://t.me/{me.username}?start=ref_{code}" if me.username else None
    except StoreUnavailable:
        figures, link = None, None
    subscription, price = await _subscription(stars, accounts, subscriber.telegram_id)
    renews = subscription is not None and subscription.renews(now)
    await show(
        event,
        status_text(subscriber, figures, language, now, link, subscription, price),
        keyboards.status(
            language,
            cancel_autorenew=renews,
            reports=subscriber.reports,
            followups=choice_label(subscriber.followup_min, language),
        ),
    )


async def _subscription(
    stars: StarsPayments, accounts: AccountService, telegram_id: int
) -> tuple[StarsSubscription | None, int | None]:
    """The user's Stars subscription and its monthly price; (None, None) when they have none or
    the stores cannot say."""
    try:
        subscription = await stars.subscription(telegram_id)
        if subscription is None:
            return None, None
        plan = next((plan for plan in await accounts.plans() if plan.code == subscription.plan_code), None)
    except StoreUnavailable:
        return None, None
    return subscription, plan.price_stars if plan else None


# ---------------------------------------------------------------------------------- /language


async def language_screen(event: Message | CallbackQuery, language: str) -> None:
    await acknowledge(event)
    await show(event, text("language_title", language), keyboards.languages(language))


async def choose_language(
    callback: CallbackQuery,
    callback_data: LanguageCB,
    subscriber: Subscriber,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    await acknowledge(callback)
    chosen = callback_data.code
    if chosen not in LANGUAGE_NAMES or not subscriber_loaded:
        await show(callback, text("unavailable", chosen if chosen in LANGUAGE_NAMES else "en"))
        return
    try:
        await store.set_language(subscriber.telegram_id, chosen)
    except (StoreUnavailable, UnknownSubscriber):
        await show(callback, text("unavailable", chosen))
        return
    # The answer is already in the new language, and so is the menu.
    await show(
        callback, with_notice(text("language_set", chosen), text("menu_title", chosen)), keyboards.main_menu(chosen)
    )


# ---------------------------------------------------------------------------------- /plans


def _prices(plan: Plan) -> str:
    parts = []
    if plan.price_stars:
        parts.append(f"{plan.price_stars} ⭐")
    if plan.price_sol:
        parts.append(f"{plan.price_sol.normalize():f} SOL")
    if plan.price_usd:
        parts.append(f"${plan.price_usd.quantize(Decimal('0.01')) if plan.price_usd % 1 else int(plan.price_usd)}")
    return " · ".join(parts) or "-"


def plan_card(plan: Plan, language: str) -> str:
    return text("plan_card", language, title=html.escape(plan.title), days=plan.days, prices=_prices(plan))


async def plans_screen(
    accounts: AccountService, language: str, intro: str | None = None
) -> tuple[str, InlineKeyboardMarkup]:
    try:
        offered = await accounts.plans()
    except StoreUnavailable:
        return text("unavailable", language), keyboards.back_only(language)
    if not offered:
        return text("plans_none", language), keyboards.back_only(language)
    cards = "\n\n".join(plan_card(plan, language) for plan in offered)
    head = f"{intro}\n\n" if intro else ""
    body = f"{head}{text('plans_title', language)}\n\n{cards}\n\n{text('plan_how_to_pay', language)}"
    return body, keyboards.plans([(plan.code, plan.title) for plan in offered], language)


async def plan_screen(
    accounts: AccountService, checkout: CheckoutService, code: str, language: str
) -> tuple[str, InlineKeyboardMarkup]:
    """One plan's card with a buy button per rail it is offered on (and the monthly
    subscription where there is one); an unknown code gets the list with a line saying so."""
    try:
        for plan in await accounts.plans():
            if plan.code == code:
                rails = checkout.rails(plan)
                monthly = offers_subscription(plan)
                choose = f"{text('plan_choose_rail', language)}\n" if rails or monthly else ""
                body = f"{plan_card(plan, language)}\n\n{choose}{text('plan_how_to_pay', language)}"
                return body, keyboards.plan_card(plan, rails, monthly, language)
    except StoreUnavailable:
        return text("unavailable", language), keyboards.back_only(language)
    return await plans_screen(accounts, language, intro=text("plan_unknown", language, code=html.escape(code)))


async def plans(
    event: Message | CallbackQuery,
    language: str,
    accounts: AccountService,
) -> None:
    await acknowledge(event)
    await show(event, *await plans_screen(accounts, language))


async def one_plan(
    callback: CallbackQuery,
    callback_data: PlanCB,
    language: str,
    accounts: AccountService,
    checkout: CheckoutService,
) -> None:
    await acknowledge(callback)
    await show(callback, *await plan_screen(accounts, checkout, callback_data.code, language))


# ---------------------------------------------------------------------------------- /privacy


async def privacy(event: Message | CallbackQuery, language: str) -> None:
    await acknowledge(event)
    await show(event, text("privacy", language), keyboards.privacy(language))


async def privacy_action(
    callback: CallbackQuery,
    callback_data: PrivacyCB,
    subscriber: Subscriber,
    language: str,
    state: FSMContext,
    accounts: AccountService,
) -> None:
    await acknowledge(callback)
    if callback_data.action == "ask":
        await show(callback, text("privacy_confirm", language), keyboards.privacy_confirm(language))
        return
    if callback_data.action != "confirm":
        await show(callback, text("privacy_cancelled", language), keyboards.back_only(language))
        return
    await state.clear()
    chat_id = callback.message.chat.id if callback.message else subscriber.telegram_id
    keys = [
        *fsm_keys(chat_id, subscriber.telegram_id),
        paysupport_key(subscriber.telegram_id),
        subscription_key(subscriber.telegram_id),
    ]
    try:
        await accounts.delete_everything(subscriber.telegram_id, keys)
    except StoreUnavailable:
        await show(callback, text("unavailable", language))
        return
    await show(callback, text("privacy_deleted", language))


# ---------------------------------------------------------------------------------- /paysupport


async def paysupport(
    message: Message,
    command: CommandObject,
    subscriber: Subscriber,
    language: str,
    bot: Bot,
    settings: Settings,
    paysupport: PaySupportGate,
    sender: MessageSender,
) -> None:
    request = (command.args or "").strip()
    if not request:
        await message.answer(text("paysupport", language))
        return
    admins = sorted(settings.admin_id_set)
    if not admins:
        await message.answer(text("paysupport_no_admins", language))
        return
    wait = await paysupport.claim(subscriber.telegram_id)
    if wait:
        logger.info(
            "payment support request from %s refused: the last one was under a minute ago", subscriber.telegram_id
        )
        await message.answer(text("paysupport_wait", language, seconds=wait))
        return
    user = message.from_user
    who = html.escape(f"@{user.username}" if user and user.username else (user.first_name if user else "?") or "?")
    if len(request) > PAYSUPPORT_MAX:
        request = request[: PAYSUPPORT_MAX - 1] + "…"
    forwarded = 0
    for admin in admins:
        note = text("paysupport_to_admin", "en", user=who, user_id=subscriber.telegram_id, message=html.escape(request))
        if sender.running:
            # Payment matters go in the payment lane, ahead of alerts.
            sender.submit(OutgoingMessage(admin, note, lane=Lane.PAYMENT))
            forwarded += 1
            continue
        try:
            await bot.send_message(admin, note)
            forwarded += 1
        except TelegramAPIError as exc:
            logger.warning("could not forward a payment question to admin %s: %s", admin, exc)
    logger.info("payment support request from %s forwarded to %d admin(s)", subscriber.telegram_id, forwarded)
    if not forwarded:
        await paysupport.release(subscriber.telegram_id)  # nothing went: they may try again
    await message.answer(text("paysupport_sent" if forwarded else "paysupport_no_admins", language))


def build_router() -> Router:
    router = Router(name="account")
    router.message(Command("status"))(status)
    router.callback_query(MenuCB.filter(F.screen == "status"))(status)
    router.message(Command("language"))(language_screen)
    router.callback_query(MenuCB.filter(F.screen == "language"))(language_screen)
    router.callback_query(LanguageCB.filter())(choose_language)
    router.message(Command("plans"))(plans)
    router.callback_query(MenuCB.filter(F.screen == "plans"))(plans)
    router.callback_query(PlanCB.filter())(one_plan)
    router.message(Command("privacy"))(privacy)
    router.callback_query(MenuCB.filter(F.screen == "privacy"))(privacy)
    router.callback_query(PrivacyCB.filter())(privacy_action)
    router.message(Command("paysupport"))(paysupport)
    return router
