"""Buying a plan: the buy buttons' orders and their screen, Telegram Stars invoices, the
pre-checkout answer, the credit of a successful payment (its receipt is the ledger's notice), and
the monthly Stars subscription (its invoice link, and cancelling its renewal from /status).

Telegram waits 10 s for the pre-checkout answer: the check runs under a budget well inside that,
and one that cannot finish answers "no, try again" (nothing is charged). A successful payment
neither store takes is kept and retried in the background (`StarsPayments.keep`).
"""

from __future__ import annotations

import asyncio
import html
import logging
from datetime import UTC, datetime
from decimal import Decimal

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile, CallbackQuery, LabeledPrice, Message, PreCheckoutQuery, User

from bot import keyboards
from bot.callbacks import PayCB
from bot.routers.account import plans_screen
from bot.routers.screens import acknowledge, show, toast_text, with_notice
from bot.texts import format_moment, money, pick_language, text
from domain.plans import OPEN_STATUSES, STARS_SUBSCRIPTION_SECONDS, Order, OrderStatus, Plan, Rail
from domain.stars import STARS_CURRENCY, Refusal, StarsPaid, SubscriptionPayload, offers_subscription
from payments.checkout import Checkout, CheckoutService, RailFailed, RailNotOffered, UnknownPlan
from payments.ledger import PaymentsUnavailable
from payments.stars import StarsPayments
from services.accounts import AccountService
from services.subscribers import StoreUnavailable, Subscriber, SubscriberStore

logger = logging.getLogger("alertbot.payments")

# Telegram cancels the payment when the bot has not answered a pre-checkout query in 10 s.
PRE_CHECKOUT_BUDGET = 5.0
INVOICE_TITLE_MAX = 32
INVOICE_DESCRIPTION_MAX = 255

STATUS_TEXTS: dict[OrderStatus, str] = {
    OrderStatus.OPEN: "order_status_open",
    OrderStatus.PARTIAL: "order_status_partial",
    OrderStatus.PAID: "order_status_paid",
    OrderStatus.CANCELLED: "order_status_cancelled",
    OrderStatus.EXPIRED: "order_status_expired",
}
REFUSAL_TEXTS: dict[Refusal, str] = {
    Refusal.UNKNOWN: "precheckout_unknown",
    Refusal.NOT_YOURS: "precheckout_not_yours",
    Refusal.CLOSED: "precheckout_closed",
    Refusal.AMOUNT: "precheckout_amount",
    Refusal.UNAVAILABLE: "precheckout_unavailable",
}


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


# ---------------------------------------------------------------------------------- orders


def order_text(checkout: Checkout, language: str, now: datetime) -> str:
    order = checkout.order
    lines = [
        text("order_title", language, order_id=html.escape(order.id)),
        text("order_plan", language, title=html.escape(checkout.plan.title), days=order.days),
        text("order_amount", language, amount=money(order.amount, order.currency)),
    ]
    if order.status is OrderStatus.PARTIAL:
        lines.append(text("order_paid_part", language, paid=money(order.paid_amount, order.currency)))
    is_open = order.is_open(now)
    # An open order past its time is expired, whether or not the sweep has marked it yet.
    shown = order.status if is_open or order.status not in OPEN_STATUSES else OrderStatus.EXPIRED
    if is_open:
        lines.append(text("order_expires", language, expires=format_moment(order.expires_at)))
    lines.append(text("order_status", language, status=text(STATUS_TEXTS[shown], language)))
    if is_open:
        lines.append("")
        lines.append(_order_hint(checkout, language))
    return "\n".join(lines)


def _order_hint(checkout: Checkout, language: str) -> str:
    order = checkout.order
    if order.rail is Rail.SOL:
        return text(
            "order_hint_sol",
            language,
            amount=money(order.shortfall, order.currency),
            url=html.escape(checkout.pay_url or ""),
        )
    if order.rail is Rail.NOWPAYMENTS:
        return text("order_hint_nowpayments", language)
    return text("order_hint_stars", language)


async def show_order(callback: CallbackQuery, checkout: Checkout, language: str, notice: str | None = None) -> None:
    now = datetime.now(UTC)
    body = order_text(checkout, language, now)
    markup = keyboards.order(checkout.order, checkout.pay_url, checkout.order.is_open(now), language)
    await show(callback, with_notice(notice, body) if notice else body, markup)


async def send_invoice(bot: Bot, order: Order, plan: Plan, language: str) -> None:
    """The Stars invoice of `order`: XTR, no provider token, one price, the order id as payload."""
    title = _clip(text("invoice_title", language, title=plan.title), INVOICE_TITLE_MAX)
    await bot.send_invoice(
        chat_id=order.telegram_id,
        title=title,
        description=_clip(
            text("invoice_description", language, days=order.days, order_id=order.id), INVOICE_DESCRIPTION_MAX
        ),
        payload=order.id,
        provider_token="",
        currency=STARS_CURRENCY,
        prices=[LabeledPrice(label=title, amount=int(order.shortfall))],
    )


async def buy(
    callback: CallbackQuery,
    callback_data: PayCB,
    subscriber: Subscriber,
    language: str,
    bot: Bot,
    checkout: CheckoutService,
    accounts: AccountService,
) -> None:
    await acknowledge(callback)
    try:
        rail = Rail(callback_data.rail)
        started = await checkout.start(subscriber.telegram_id, callback_data.plan, rail)
    except (ValueError, UnknownPlan):
        await show(callback, *await plans_screen(accounts, language, intro=text("order_gone", language)))
        return
    except (RailNotOffered, RailFailed):
        await show(callback, *await plans_screen(accounts, language, intro=text("order_rail_unavailable", language)))
        return
    except (StoreUnavailable, PaymentsUnavailable) as exc:
        logger.warning("no order for user %s (%r)", subscriber.telegram_id, exc)
        await show(callback, text("payments_unavailable", language), keyboards.back_only(language, "plans"))
        return
    await show_order(callback, started, language)
    order = started.order
    try:
        if order.rail is Rail.STARS:
            await send_invoice(bot, order, started.plan, language)
        elif started.qr_png is not None:
            qr = BufferedInputFile(started.qr_png, filename=f"order-{order.id}.png")
            await bot.send_photo(order.telegram_id, qr, caption=html.escape(started.pay_url or ""))
    except TelegramAPIError as exc:
        logger.warning("order %s: could not send its payment request to %s (%s)", order.id, order.telegram_id, exc)


async def refresh(
    callback: CallbackQuery,
    callback_data: PayCB,
    subscriber: Subscriber,
    language: str,
    checkout: CheckoutService,
    accounts: AccountService,
) -> None:
    await acknowledge(callback)
    try:
        found = await checkout.checkout(callback_data.order, subscriber.telegram_id)
    except (StoreUnavailable, PaymentsUnavailable):
        await show(callback, text("payments_unavailable", language), keyboards.back_only(language, "plans"))
        return
    if found is None:
        await show(callback, *await plans_screen(accounts, language, intro=text("order_gone", language)))
        return
    await show_order(callback, found, language)


async def cancel(
    callback: CallbackQuery,
    callback_data: PayCB,
    subscriber: Subscriber,
    language: str,
    checkout: CheckoutService,
    accounts: AccountService,
) -> None:
    try:
        cancelled = await checkout.cancel(callback_data.order, subscriber.telegram_id)
        current = cancelled or await checkout.checkout(callback_data.order, subscriber.telegram_id)
    except (StoreUnavailable, PaymentsUnavailable):
        await acknowledge(callback)
        await show(callback, text("payments_unavailable", language), keyboards.back_only(language, "plans"))
        return
    await acknowledge(callback, None if cancelled else text("order_not_cancellable", language))
    if current is None:
        await show(callback, *await plans_screen(accounts, language, intro=text("order_gone", language)))
        return
    await show_order(callback, current, language, text("order_cancelled", language) if cancelled else None)


# ---------------------------------------------------------------------------------- the monthly subscription


async def monthly(
    callback: CallbackQuery,
    callback_data: PayCB,
    subscriber: Subscriber,
    language: str,
    bot: Bot,
    checkout: CheckoutService,
    accounts: AccountService,
) -> None:
    """An invoice link that subscribes to the plan: Telegram charges it every 30 days."""
    await acknowledge(callback)
    try:
        plan = await checkout.plan(callback_data.plan)
    except StoreUnavailable:
        await show(callback, text("payments_unavailable", language), keyboards.back_only(language, "plans"))
        return
    if plan is None or plan.price_stars is None or not offers_subscription(plan):
        await show(callback, *await plans_screen(accounts, language, intro=text("order_gone", language)))
        return
    title = _clip(text("subscription_title", language, title=plan.title), INVOICE_TITLE_MAX)
    try:
        link = await bot.create_invoice_link(
            title=title,
            description=_clip(text("subscription_description", language), INVOICE_DESCRIPTION_MAX),
            payload=SubscriptionPayload(plan.code, subscriber.telegram_id).encode(),
            provider_token="",
            currency=STARS_CURRENCY,
            prices=[LabeledPrice(label=title, amount=plan.price_stars)],
            subscription_period=STARS_SUBSCRIPTION_SECONDS,
        )
    except TelegramAPIError as exc:
        logger.warning("no subscription link for user %s, plan %s (%s)", subscriber.telegram_id, plan.code, exc)
        await show(callback, text("payments_unavailable", language), keyboards.back_only(language, "plans"))
        return
    amount = money(Decimal(plan.price_stars), STARS_CURRENCY)
    await show(
        callback,
        text("subscription_offer", language, title=html.escape(plan.title), amount=amount),
        keyboards.subscribe(link, plan.price_stars, plan.code, language),
    )


async def unsubscribe(
    callback: CallbackQuery,
    callback_data: PayCB,
    subscriber: Subscriber,
    language: str,
    bot: Bot,
    stars: StarsPayments,
) -> None:
    """unsub asks; unsub_ok has Telegram stop the renewals (the paid month runs to its end)."""
    await acknowledge(callback)
    now = datetime.now(UTC)
    try:
        subscription = await stars.subscription(subscriber.telegram_id)
    except StoreUnavailable:
        subscription = None
    if subscription is None or not subscription.renews(now) or subscription.expires_at is None:
        await show(callback, text("unsub_none", language), keyboards.back_only(language, "status"))
        return
    until = format_moment(subscription.expires_at)
    if callback_data.action == "unsub":
        await show(callback, text("unsub_confirm", language, date=until), keyboards.unsubscribe_confirm(language))
        return
    try:
        await bot.edit_user_star_subscription(
            user_id=subscriber.telegram_id, telegram_payment_charge_id=subscription.charge_id, is_canceled=True
        )
    except TelegramAPIError as exc:
        logger.warning(
            "Telegram did not cancel subscription %s of %s: %s", subscription.charge_id, subscriber.telegram_id, exc
        )
        await show(callback, text("unsub_failed", language), keyboards.back_only(language, "status"))
        return
    await stars.canceled(subscription, by=subscriber.telegram_id)
    await show(callback, text("unsub_done", language, date=until), keyboards.back_only(language, "status"))


# ---------------------------------------------------------------------------------- paying


async def pre_checkout(query: PreCheckoutQuery, stars: StarsPayments, store: SubscriberStore) -> None:
    """Yes only for the user's own open order (or subscription) at its amount, in XTR; always
    answered, well inside Telegram's 10 s."""
    user = query.from_user
    try:
        refusal = await asyncio.wait_for(
            stars.check(user.id, query.invoice_payload, query.currency, query.total_amount), PRE_CHECKOUT_BUDGET
        )
    except TimeoutError:
        logger.warning("pre-checkout of user %s for %r took too long: refused", user.id, query.invoice_payload)
        refusal = Refusal.UNAVAILABLE
    except Exception:  # noqa: BLE001 - an unanswered query costs the user a failed payment
        logger.exception("pre-checkout of user %s for %r failed: refused", user.id, query.invoice_payload)
        refusal = Refusal.UNAVAILABLE
    if refusal is None:
        await query.answer(ok=True)
    else:
        language = await _language(store, user)
        await query.answer(ok=False, error_message=toast_text(text(REFUSAL_TEXTS[refusal], language)))
    logger.info(
        "pre-checkout of user %s for %r (%s %s): %s",
        user.id,
        query.invoice_payload,
        query.total_amount,
        query.currency,
        "ok" if refusal is None else refusal,
    )
    await stars.note_pre_checkout(
        user.id, query.invoice_payload, query.model_dump(mode="json", exclude_none=True), refusal
    )


async def _language(store: SubscriberStore, user: User) -> str:
    """The user's stored language; Telegram's when the stores are slow or down."""
    try:
        subscriber = await asyncio.wait_for(store.get(user.id), 1.0)
    except Exception:  # noqa: BLE001 - the answer goes out in Telegram's language instead
        subscriber = None
    return pick_language(subscriber.language if subscriber else user.language_code)


def stars_paid(message: Message) -> StarsPaid | None:
    payment = message.successful_payment
    if payment is None or message.from_user is None:
        return None
    expires = payment.subscription_expiration_date
    return StarsPaid(
        telegram_id=message.from_user.id,
        charge_id=payment.telegram_payment_charge_id,
        payload=payment.invoice_payload,
        currency=payment.currency,
        total_amount=payment.total_amount,
        is_recurring=bool(payment.is_recurring),
        is_first_recurring=bool(payment.is_first_recurring),
        subscription_expires_at=datetime.fromtimestamp(expires, UTC) if expires else None,
        raw=payment.model_dump(mode="json", exclude_none=True),
    )


async def successful_payment(message: Message, language: str, stars: StarsPayments) -> None:
    """Credit it; the ledger posts the receipt (plan, amount, new end) to the payer."""
    paid = stars_paid(message)
    if paid is None:
        return
    if paid.currency != STARS_CURRENCY:
        logger.error(
            "payment %s of user %s in %s: only Stars are sold here", paid.charge_id, paid.telegram_id, paid.currency
        )
        return
    try:
        await stars.credit(paid)
    except Exception as exc:  # noqa: BLE001 - money was taken: whatever failed, it is kept and retried
        if not isinstance(exc, PaymentsUnavailable):
            logger.exception("Stars payment %s of user %s failed to credit", paid.charge_id, paid.telegram_id)
        stars.keep(paid)
        await message.answer(text("receipt_pending", language))


def build_router() -> Router:
    router = Router(name="payments")
    router.pre_checkout_query()(pre_checkout)
    router.message(F.successful_payment)(successful_payment)
    router.callback_query(PayCB.filter(F.action == "buy"))(buy)
    router.callback_query(PayCB.filter(F.action == "refresh"))(refresh)
    router.callback_query(PayCB.filter(F.action == "cancel"))(cancel)
    router.callback_query(PayCB.filter(F.action == "monthly"))(monthly)
    router.callback_query(PayCB.filter(F.action.in_({"unsub", "unsub_ok"})))(unsubscribe)
    return router
