"""The admins' screens: /admin (a menu), /stats, /user ID (with grant, revoke and ban buttons),
/ban ID, /unban ID, /channels (the channel statistics with N), /payments and /export (CSV files).

The figures come from services.admin_queries; this module only words them. Each handler
matches admins only; the admin router refuses everyone else (bot.routers.admin).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardMarkup, Message

from bot import keyboards
from bot.callbacks import AdminCB
from bot.config import Settings
from bot.filters_admin import IsAdmin
from bot.routers.admin import notify_grant, parse_user_id
from bot.routers.channels import channel_name
from bot.routers.filters import filter_lines
from bot.routers.replay import format_multiple
from bot.routers.screens import acknowledge, show
from bot.texts import format_moment, money, text
from domain.channel_stats import RatedChannel
from payments.ledger import PaymentLedger, PaymentsUnavailable
from services.admin_queries import EXPORTS, AdminQueries, Overview, PaymentRow, UserRecord
from services.channel_stats import ChannelStatistics
from services.subscribers import PG_FAILURES, StoreUnavailable, Subscriber, SubscriberStore, UnknownSubscriber

logger = logging.getLogger("alertbot.admin")

GRANT_BUTTON_DAYS = 30
CHANNELS_LISTED = 25
# What an admin's screen may fail on: PostgreSQL or Redis not answering.
_UNAVAILABLE: tuple[type[BaseException], ...] = (*PG_FAILURES, StoreUnavailable, PaymentsUnavailable, ConnectionError)


def _now() -> datetime:
    return datetime.now(UTC)


def _day(moment: datetime | None, language: str) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d") if moment else text("never", language)


def _amount(amount: Decimal | None, currency: str | None) -> str:
    if amount is None:
        return "–"
    return money(amount, currency) if currency else f"{amount.normalize():f}"


def _admin_id(event: Message | CallbackQuery) -> int | None:
    return event.from_user.id if event.from_user else None


# ------------------------------------------------------------------ the menu


async def admin_menu(event: Message | CallbackQuery, language: str) -> None:
    await acknowledge(event)
    await show(event, text("admin_menu", language), keyboards.admin_menu(language))


# ------------------------------------------------------------------ /stats


def render_stats(overview: Overview, now: datetime, language: str) -> str:
    users = overview.users
    plans = ", ".join(f"{html.escape(plan)} {count}" for plan, count in overview.plans.items())
    deliveries = overview.deliveries_today
    lines = [
        text("stats_title", language, moment=format_moment(now)),
        "",
        text(
            "stats_users",
            language,
            total=users.total,
            active=users.active,
            paused=users.paused,
            banned=users.banned,
            blocked=users.blocked,
            new=users.new_7d,
        ),
        text("stats_plans", language, plans=plans or text("stats_none", language)),
        text("stats_alerts", language, today=overview.alerts_today, week=overview.alerts_7d),
        text(
            "stats_deliveries",
            language,
            sent=deliveries.get("sent", 0),
            gone=deliveries.get("gone", 0),
            failed=deliveries.get("failed", 0),
        ),
        text("stats_revenue", language),
    ]
    for revenue in overview.revenue:
        lines.append(
            text(
                "stats_revenue_line",
                language,
                rail=revenue.rail,
                count=revenue.count,
                amount=_amount(revenue.amount, revenue.currency),
                count_30d=revenue.count_30d,
                amount_30d=_amount(revenue.amount_30d, revenue.currency),
            )
        )
    if not overview.revenue:
        lines.append(text("stats_revenue_none", language))
    return "\n".join(lines)


async def stats(event: Message | CallbackQuery, language: str, admin_queries: AdminQueries) -> None:
    await acknowledge(event)
    now = _now()
    try:
        overview = await admin_queries.overview(now)
    except _UNAVAILABLE as exc:
        logger.warning("/stats: the stores did not answer (%r)", exc)
        await show(event, text("unavailable", language))
        return
    await show(event, render_stats(overview, now, language), keyboards.admin_back(language))


# ------------------------------------------------------------------ /user


def render_user(record: UserRecord, subscriber: Subscriber | None, language: str) -> str:
    """The record as PostgreSQL has it; plan end and filters as the store has them (Redis holds
    a plan a moment before PostgreSQL does)."""
    names = [f"@{record.username}" if record.username else "", record.first_name or ""]
    status = record.status if not record.paused else text("user_status_paused", language, status=record.status)
    plan_end = subscriber.plan_expires_at if subscriber else record.plan_expires_at
    now = _now()
    lines = [
        text("user_title", language, user_id=record.telegram_id, name=html.escape(" ".join(n for n in names if n))),
        text(
            "user_profile",
            language,
            lang=html.escape(record.language),
            status=status,
            since=_day(record.created_at, language),
            seen=_day(record.last_seen_at, language),
        ),
    ]
    if plan_end is not None and plan_end > now:
        plan = html.escape(record.plan) if record.plan else "–"  # PostgreSQL may not have it yet
        lines.append(text("user_plan", language, plan=plan, expires=format_moment(plan_end)))
    else:
        lines.append(text("user_no_plan", language))
    lines.append(
        text(
            "user_alerts",
            language,
            total=record.alerts_total,
            week=record.alerts_7d,
            sent=record.deliveries.get("sent", 0),
            gone=record.deliveries.get("gone", 0),
            failed=record.deliveries.get("failed", 0),
        )
    )
    filters = filter_lines(subscriber.filters) if subscriber else []
    lines += [text("user_filters", language), *filters] if filters else [text("user_filters_none", language)]
    if record.payments:
        lines.append(text("user_payments", language))
        lines += [_payment_line(payment, language, with_user=False) for payment in record.payments]
    else:
        lines.append(text("user_payments_none", language))
    return "\n".join(lines)


def _payment_line(payment: PaymentRow, language: str, *, with_user: bool) -> str:
    values = {
        "moment": format_moment(payment.created_at),
        "rail": payment.rail,
        "amount": _amount(payment.amount, payment.currency),
        "status": payment.status,
        "plan": f" · {html.escape(payment.plan)}" if payment.plan else "",
    }
    if with_user:
        return text("payment_line_user", language, user_id=payment.telegram_id or "–", **values)
    return text("payment_line", language, **values)


async def _user_screen(
    telegram_id: int, language: str, store: SubscriberStore, admin_queries: AdminQueries
) -> tuple[str, InlineKeyboardMarkup | None]:
    record = await admin_queries.user(telegram_id, _now())
    if record is None:
        return text("user_unknown", language, user_id=telegram_id), None
    subscriber = await store.get(telegram_id)
    status = subscriber.status if subscriber else record.status
    body = render_user(record, subscriber, language)
    return body, keyboards.admin_user(telegram_id, status == "banned", language)


async def user(
    message: Message, command: CommandObject, language: str, store: SubscriberStore, admin_queries: AdminQueries
) -> None:
    parts = (command.args or "").split()
    telegram_id = parse_user_id(parts[0]) if len(parts) == 1 else None
    if telegram_id is None:
        await message.answer(text("user_usage", language))
        return
    try:
        body, markup = await _user_screen(telegram_id, language, store, admin_queries)
    except _UNAVAILABLE as exc:
        logger.warning("/user %s: the stores did not answer (%r)", telegram_id, exc)
        await message.answer(text("unavailable", language))
        return
    await message.answer(body, reply_markup=markup)


async def user_action(
    callback: CallbackQuery,
    callback_data: AdminCB,
    language: str,
    settings: Settings,
    store: SubscriberStore,
    ledger: PaymentLedger,
    admin_queries: AdminQueries,
) -> None:
    """A button on a user's record: grant 30 days, revoke, ban or unban; then the record again."""
    telegram_id, action, admin_id = callback_data.user, callback_data.action, callback.from_user.id
    try:
        if action == "grant30":
            expires = await ledger.grant(telegram_id, GRANT_BUTTON_DAYS, granted_by=admin_id)
            await store.log_activity(
                admin_id,
                "grant",
                {"telegram_id": telegram_id, "days": GRANT_BUTTON_DAYS, "expires_at": expires.isoformat()},
                subject=telegram_id,
            )
            toast = text(
                "grant_done", language, user_id=telegram_id, days=GRANT_BUTTON_DAYS, expires=format_moment(expires)
            )
            if callback.bot is not None and telegram_id != admin_id:
                await notify_grant(callback.bot, store, telegram_id, GRANT_BUTTON_DAYS, expires)
        elif action == "revoke":
            revoked = await ledger.revoke(telegram_id, reason=f"revoked by admin {admin_id}")
            if revoked:
                await store.log_activity(admin_id, "revoke", {"telegram_id": telegram_id}, subject=telegram_id)
            toast = text("revoke_done" if revoked else "revoke_none", language, user_id=telegram_id)
        else:
            toast = await _set_banned(admin_id, telegram_id, action == "ban", settings, store, language)
        body, markup = await _user_screen(telegram_id, language, store, admin_queries)
    except UnknownSubscriber:
        await acknowledge(callback, text("user_unknown", language, user_id=telegram_id), alert=True)
        return
    except _UNAVAILABLE as exc:
        logger.warning("admin %s: %s of %s failed (%r)", admin_id, action, telegram_id, exc)
        await acknowledge(callback, text("unavailable", language), alert=True)
        return
    await acknowledge(callback, toast)
    await show(callback, body, markup)


# ------------------------------------------------------------------ /ban and /unban


async def _set_banned(
    admin_id: int | None, telegram_id: int, banned: bool, settings: Settings, store: SubscriberStore, language: str
) -> str:
    """Ban or unban through the store (the matcher and the middleware honour it); the answer."""
    if banned and telegram_id in settings.admin_id_set:
        return text("ban_admin", language, user_id=telegram_id)
    current = await store.get(telegram_id)
    if current is None:
        raise UnknownSubscriber(telegram_id)
    if banned and current.status == "banned":
        return text("ban_already", language, user_id=telegram_id)
    if not banned and current.status != "banned":
        return text("unban_not_banned", language, user_id=telegram_id)
    await store.set_status(telegram_id, "banned" if banned else "active")
    action = "ban" if banned else "unban"
    logger.warning("admin %s: %s %s", admin_id, action, telegram_id)
    await store.log_activity(admin_id, action, {"telegram_id": telegram_id}, subject=telegram_id)
    return text("ban_done" if banned else "unban_done", language, user_id=telegram_id)


async def ban(
    message: Message, command: CommandObject, language: str, settings: Settings, store: SubscriberStore
) -> None:
    await _ban_command(message, command, language, settings, store, banned=True)


async def unban(
    message: Message, command: CommandObject, language: str, settings: Settings, store: SubscriberStore
) -> None:
    await _ban_command(message, command, language, settings, store, banned=False)


async def _ban_command(
    message: Message,
    command: CommandObject,
    language: str,
    settings: Settings,
    store: SubscriberStore,
    *,
    banned: bool,
) -> None:
    parts = (command.args or "").split()
    telegram_id = parse_user_id(parts[0]) if len(parts) == 1 else None
    if telegram_id is None:
        await message.answer(text("ban_usage" if banned else "unban_usage", language))
        return
    try:
        answer = await _set_banned(_admin_id(message), telegram_id, banned, settings, store, language)
    except UnknownSubscriber:
        answer = text("user_unknown", language, user_id=telegram_id)
    except _UNAVAILABLE as exc:
        logger.warning("/%s %s: the stores did not answer (%r)", command.command, telegram_id, exc)
        answer = text("unavailable", language)
    await message.answer(answer)


# ------------------------------------------------------------------ /channels


def most_measured(rated: Iterable[RatedChannel], limit: int = CHANNELS_LISTED) -> list[RatedChannel]:
    """Channels with the most resolved calls first: the figures with the most behind them."""
    measured = [entry for entry in rated if entry.figures is not None]

    def key(entry: RatedChannel) -> tuple[int, float, str]:
        f = entry.figures
        assert f is not None
        return (-f.resolved, -(f.win_rate or 0.0), entry.channel.id)

    return sorted(measured, key=key)[:limit]


def render_channels(rated: list[RatedChannel], language: str) -> str:
    """The bot's own figures of each channel with N, the resolved calls behind them, and the
    calls still open or without prices."""
    if not rated:
        return text("admin_channels_none", language)
    lines = [text("admin_channels_title", language), ""]
    for entry in rated:
        f = entry.figures
        assert f is not None
        lines.append(
            text(
                "admin_channels_line",
                language,
                name=channel_name(entry),
                resolved=f.resolved,
                wins=f.wins,
                win_rate="–" if f.win_rate is None else f"{f.win_rate * 100:.0f}%",
                avg="–" if f.avg_gain is None else format_multiple(f.avg_gain),
                median="–" if f.median_gain is None else format_multiple(f.median_gain),
                open=f.unresolved,
                unpriced=f.unpriced,
            )
        )
    return "\n".join(lines)


async def channels(event: Message | CallbackQuery, language: str, channel_stats: ChannelStatistics) -> None:
    await acknowledge(event)
    try:
        rated = await channel_stats.rated()
    except _UNAVAILABLE as exc:
        logger.warning("/channels (admin): the stores did not answer (%r)", exc)
        await show(event, text("unavailable", language))
        return
    await show(event, render_channels(most_measured(rated), language), keyboards.admin_back(language))


# ------------------------------------------------------------------ /payments


async def payments(event: Message | CallbackQuery, language: str, admin_queries: AdminQueries) -> None:
    await acknowledge(event)
    try:
        summary = await admin_queries.payments()
    except _UNAVAILABLE as exc:
        logger.warning("/payments: the stores did not answer (%r)", exc)
        await show(event, text("unavailable", language))
        return
    if not summary.recent:
        await show(event, text("payments_none", language), keyboards.admin_back(language))
        return
    by_rail: dict[str, list[str]] = {}
    for (rail, status), count in summary.counts.items():
        by_rail.setdefault(rail, []).append(f"{status} {count}")
    lines = [text("payments_title", language), "", text("payments_counts", language)]
    lines += [
        text("payments_counts_line", language, rail=rail, statuses=", ".join(statuses))
        for rail, statuses in by_rail.items()
    ]
    lines += ["", text("payments_recent", language)]
    lines += [_payment_line(payment, language, with_user=True) for payment in summary.recent]
    await show(event, "\n".join(lines), keyboards.admin_back(language))


# ------------------------------------------------------------------ /export


async def export(
    event: Message | CallbackQuery, language: str, admin_queries: AdminQueries, store: SubscriberStore
) -> None:
    """Users, subscriptions and payments, each a CSV file sent to the admin as a document."""
    await acknowledge(event, text("export_sending", language))
    target = event if isinstance(event, Message) else event.message
    if not isinstance(target, Message):
        return
    stamp = _now().strftime("%Y%m%d-%H%M")
    for table in EXPORTS:
        try:
            exported = await admin_queries.export(table)
        except _UNAVAILABLE as exc:
            logger.warning("/export %s: the stores did not answer (%r)", table, exc)
            await target.answer(text("unavailable", language))
            return
        await target.answer_document(
            BufferedInputFile(exported.data, filename=f"{table}-{stamp}.csv"),
            caption=text("export_caption", language, table=table, rows=exported.rows),
        )
    logger.warning("admin %s exported %s", _admin_id(event), ", ".join(EXPORTS))
    await store.log_activity(_admin_id(event), "export", {"tables": list(EXPORTS)})


def build_router() -> Router:
    router = Router(name="admin_panel")
    for name, handler in (("admin", admin_menu), ("stats", stats), ("channels", channels), ("payments", payments)):
        router.message(Command(name), IsAdmin())(handler)
        if name != "admin":
            router.callback_query(AdminCB.filter(F.action == name), IsAdmin())(handler)
    router.callback_query(AdminCB.filter(F.action == "menu"), IsAdmin())(admin_menu)
    router.message(Command("export"), IsAdmin())(export)
    router.callback_query(AdminCB.filter(F.action == "export"), IsAdmin())(export)
    router.message(Command("user"), IsAdmin())(user)
    router.message(Command("ban"), IsAdmin())(ban)
    router.message(Command("unban"), IsAdmin())(unban)
    router.callback_query(AdminCB.filter(F.action.in_({"grant30", "revoke", "ban", "unban"})), IsAdmin())(user_action)
    return router
