"""Buying a plan with Telegram Stars, end to end: the real Dispatcher polling the Telegram
stand-in, on real Redis and PostgreSQL. From /plans through the invoice, the pre-checkout query
and the successful payment to an active plan and its receipt; refunds; the monthly subscription
with its renewals and its cancellation; the checks that refuse a payment."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bot.callbacks import PayCB
from bot.texts import TEXTS
from domain.plans import OrderStatus, Rail
from payments.checkout import CheckoutService, SolPaymentRequest
from payments.notices import NOTICES_KEY
from standins.telegram import AnsweredPreCheckout, SentRecord
from tests.bot_env import ADMIN, REPLY_TIMEOUT, BotEnv, Chat, running_bot
from tests.conftest import Stores
from tests.outages import postgres_behind_proxy, redis_behind_proxy
from tests.test_ledger import until

pytestmark = pytest.mark.timeout(90)

MONTH_STARS = 750  # the "month" plan of migrations/0001
DAY = timedelta(days=1)


def t(key: str, language: str = "en") -> str:
    """A text as the user sees it: tags removed (the stand-in strips markup), no placeholders."""
    return re.sub(r"<[^>]+>", "", TEXTS[language][key])


def head(key: str, language: str = "en") -> str:
    """A text's words up to its first placeholder, as the user sees them."""
    return t(key, language).split("{")[0].strip()


@pytest.fixture
async def env(stores: Stores) -> AsyncIterator[BotEnv]:
    async with running_bot(stores, notices=True) as running:
        yield running


async def invoice_for(env: BotEnv, chat: Chat, plan_label: str = "1 month") -> SentRecord:
    """/plans, the plan, its Stars button: the order screen, and the invoice the bot sent."""
    plans = await chat.ask("/plans")
    assert plan_label in chat.screen(plans.message_id).labels()
    card = await chat.press(plan_label)
    assert head("plan_choose_rail") in card.text
    invoices = len([r for r in chat.sent() if r.method == "sendInvoice"])
    await chat.press("with Telegram Stars")
    sent = [r for r in chat.sent() if r.method == "sendInvoice"]
    assert len(sent) == invoices + 1
    return sent[-1]


async def pre_checkout(
    env: BotEnv, user_id: int, amount: int, payload: str, currency: str = "XTR"
) -> AnsweredPreCheckout:
    update_id = env.server.inject_pre_checkout(user_id, currency, amount, payload)
    await env.server.wait_for(
        lambda: any(a.update_id == update_id for a in env.server.answered_pre_checkouts),
        REPLY_TIMEOUT,
        description="the pre-checkout answer",
    )
    return next(a for a in env.server.answered_pre_checkouts if a.update_id == update_id)


def paid_update(
    env: BotEnv,
    chat: Chat,
    amount: int,
    payload: str,
    charge_id: str,
    *,
    subscription_expiration_date: int | None = None,
    is_first_recurring: bool = False,
) -> int:
    """Telegram's successful_payment; the update id."""
    return env.server.inject_successful_payment(
        chat.user_id,
        "XTR",
        amount,
        payload,
        charge_id,
        subscription_expiration_date=subscription_expiration_date,
        is_first_recurring=is_first_recurring,
    )


async def pay(
    env: BotEnv,
    chat: Chat,
    amount: int,
    payload: str,
    charge_id: str,
    *,
    subscription_expiration_date: int | None = None,
    is_first_recurring: bool = False,
) -> SentRecord:
    """Telegram's successful_payment; returns what the bot says next (the receipt)."""
    before = len(chat.sent())
    paid_update(
        env,
        chat,
        amount,
        payload,
        charge_id,
        subscription_expiration_date=subscription_expiration_date,
        is_first_recurring=is_first_recurring,
    )
    records = await env.server.wait_for_sent(
        lambda r: r.chat_id == chat.user_id, count=before + 1, timeout=REPLY_TIMEOUT
    )
    return records[before]


async def pay_again(env: BotEnv, chat: Chat, amount: int, payload: str, charge_id: str, **subscription: Any) -> None:
    """The same successful_payment once more: handled, and every notice it caused delivered."""
    update_id = paid_update(env, chat, amount, payload, charge_id, **subscription)
    await env.handled.wait(update_id)
    await notices_delivered(env)


async def notices_delivered(env: BotEnv) -> None:
    """Every payment notice posted so far is with Telegram (delivered ones leave the stream)."""

    async def empty() -> bool:
        return int(await env.stores.redis.client.xlen(NOTICES_KEY)) == 0

    await until(empty)


def receipts(chat: Chat) -> list[str]:
    return [r.text or "" for r in chat.sent() if (r.text or "").startswith("🧾")]


async def plan_end(env: BotEnv, user_id: int) -> datetime | None:
    subscriber = await env.store.get(user_id)
    assert subscriber is not None
    return subscriber.plan_expires_at


def near(moment: datetime | None, expected: datetime, slack: timedelta = timedelta(minutes=2)) -> bool:
    return moment is not None and abs(moment - expected) < slack


# ------------------------------------------------------------------------------ the purchase


async def test_a_stars_purchase_from_plans_to_an_active_plan_and_a_refund_ends_it(env: BotEnv) -> None:
    chat = env.chat(301)
    await chat.ask("/start")
    invoice = await invoice_for(env, chat)

    # The order's screen: amount, time to pay by, status, and Cancel.
    screen = chat.latest_with(TEXTS["en"]["button_cancel_order"])
    assert "750 ⭐" in screen.text and head("order_expires") in screen.text
    assert t("order_status_open") in screen.text
    # The invoice: Stars, no provider token, one price, the order id as payload.
    assert invoice.invoice is not None
    assert invoice.invoice["currency"] == "XTR" and invoice.invoice["total_amount"] == MONTH_STARS
    assert not invoice.params.get("provider_token")  # aiogram leaves the empty token off the wire
    assert [price["amount"] for price in invoice.invoice["prices"]] == [MONTH_STARS]
    order_id = invoice.invoice["payload"]
    order = await env.services.ledger.order(order_id)
    assert order is not None and order.telegram_id == 301 and order.rail is Rail.STARS
    assert order.status is OrderStatus.OPEN and order.amount == Decimal(MONTH_STARS)
    assert f"Order {order_id}" in screen.text

    answer = await pre_checkout(env, 301, MONTH_STARS, order_id)
    assert answer.ok and answer.error_message is None

    before = datetime.now(UTC)
    receipt = await pay(env, chat, MONTH_STARS, order_id, "charge-301")
    end = await plan_end(env, 301)
    assert end is not None and near(end, before + 30 * DAY)
    subscriber = await env.store.get(301)
    assert subscriber is not None and subscriber.has_active_plan(datetime.now(UTC))
    assert receipt.text is not None
    assert "Payment received" in receipt.text and "Plan: 30 days of alerts" in receipt.text and "750 ⭐" in receipt.text
    assert end.strftime("%Y-%m-%d %H:%M UTC") in receipt.text
    paid = await env.services.ledger.order(order_id)
    assert paid is not None and paid.status is OrderStatus.PAID

    await env.services.ledger.writer.drained()
    pg = env.stores.postgres
    row = await pg.fetchrow(
        "SELECT telegram_id, amount, currency, status, order_id, raw FROM payments"
        " WHERE rail = 'stars' AND external_id = $1",
        "charge-301",
    )
    assert (row["telegram_id"], row["amount"], row["currency"], row["status"], row["order_id"]) == (
        301,
        Decimal(MONTH_STARS),
        "XTR",
        "confirmed",
        order_id,
    )
    assert row["raw"]["telegram_payment_charge_id"] == "charge-301"
    sub = await pg.fetchrow(
        "SELECT s.source, s.expires_at, p.code FROM subscriptions s JOIN plans p ON p.id = s.plan_id"
        " JOIN users u ON u.id = s.user_id WHERE u.telegram_id = 301"
    )
    assert sub["source"] == "payment" and sub["code"] == "month" and sub["expires_at"] == end
    assert await pg.fetchval("SELECT status FROM orders WHERE id = $1", order_id) == "paid"
    kinds = [
        r["kind"] for r in await pg.fetch("SELECT kind FROM payment_events WHERE order_id = $1 ORDER BY id", order_id)
    ]
    assert kinds == ["pre_checkout_query", "successful_payment"]

    # The admin refunds it: Telegram returns the Stars, the plan ends, both are told.
    admin = env.chat(ADMIN)
    user_messages = len(chat.sent())
    reply = await admin.ask("/refund charge-301")
    assert "Refunded" in reply.text and "301" in reply.text
    assert env.server.refunds == [(301, "charge-301")]
    assert await plan_end(env, 301) is None
    notice = await env.server.wait_for_sent(lambda r: r.chat_id == 301, count=user_messages + 1)
    assert notice[-1].text == t("refund_notice")
    await env.services.ledger.writer.drained()
    assert await pg.fetchval("SELECT status FROM payments WHERE external_id = 'charge-301'") == "refunded"
    assert await pg.fetchval("SELECT revoked_at IS NOT NULL FROM subscriptions") is True
    # Again: Telegram says it was refunded already; nothing more to undo.
    assert "already refunded" in (await admin.ask("/refund charge-301")).text
    assert env.server.refunds == [(301, "charge-301")]


async def test_the_same_successful_payment_twice_is_credited_once(env: BotEnv) -> None:
    chat = env.chat(302)
    invoice = await invoice_for(env, chat, "1 week")
    assert invoice.invoice is not None and invoice.invoice["total_amount"] == 250
    order_id = invoice.invoice["payload"]
    assert (await pre_checkout(env, 302, 250, order_id)).ok
    before = datetime.now(UTC)
    first = await pay(env, chat, 250, order_id, "charge-302")
    assert first.text is not None and "Payment received" in first.text and "Plan: 7 days of alerts" in first.text
    await pay_again(env, chat, 250, order_id, "charge-302")
    assert len(receipts(chat)) == 1
    assert near(await plan_end(env, 302), before + 7 * DAY)  # 7 days, not 14
    await env.services.ledger.writer.drained()
    pg = env.stores.postgres
    assert await pg.fetchval("SELECT count(*) FROM payments WHERE rail = 'stars'") == 1
    assert await pg.fetchval("SELECT count(*) FROM subscriptions") == 1


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_a_payment_is_refused_before_it_is_taken_unless_it_is_the_users_own_open_order_at_its_amount(
    env: BotEnv, language: str
) -> None:
    chat = env.chat(303, language)
    await chat.ask("/start")
    order = (await env.services.checkout.start(303, "month", Rail.STARS)).order

    async def refused(user_id: int, amount: int, payload: str, currency: str = "XTR") -> str | None:
        answer = await pre_checkout(env, user_id, amount, payload, currency)
        assert not answer.ok
        return answer.error_message

    assert await refused(303, MONTH_STARS, "no-such-order") == t("precheckout_unknown", language)
    assert await refused(303, MONTH_STARS - 1, order.id) == t("precheckout_amount", language)
    assert await refused(303, MONTH_STARS, order.id, "USD") == t("precheckout_amount", language)
    assert await refused(999, MONTH_STARS, order.id) == t("precheckout_not_yours", "en")  # unknown: Telegram's
    assert (await pre_checkout(env, 303, MONTH_STARS, order.id)).ok
    await env.services.checkout.cancel(order.id, 303)
    assert await refused(303, MONTH_STARS, order.id) == t("precheckout_closed", language)
    assert await plan_end(env, 303) is None


async def test_an_order_is_cancelled_from_its_screen(env: BotEnv) -> None:
    chat = env.chat(304)
    invoice = await invoice_for(env, chat)
    assert invoice.invoice is not None
    order_id = invoice.invoice["payload"]
    screen = await chat.press(TEXTS["en"]["button_cancel_order"])
    assert t("order_cancelled") in screen.text and t("order_status_cancelled") in screen.text
    assert TEXTS["en"]["button_cancel_order"] not in screen.labels()
    order = await env.services.ledger.order(order_id)
    assert order is not None and order.status is OrderStatus.CANCELLED
    # Its invoice can no longer be paid.
    answer = await pre_checkout(env, 304, MONTH_STARS, order_id)
    assert not answer.ok and answer.error_message == t("precheckout_closed")
    # Another user's order id in a forged press cancels nothing.
    other = (await env.services.checkout.start(305, "week", Rail.STARS)).order
    forged = PayCB(action="cancel", order=other.id).pack()
    env.server.inject_callback(304, screen.message_id, forged, check_button=False)
    await env.server.wait_for(lambda: any(a.data == forged for a in env.server.answered_callbacks), REPLY_TIMEOUT)
    still = await env.services.ledger.order(other.id)
    assert still is not None and still.status is OrderStatus.OPEN


async def test_the_plan_deep_link_opens_the_card_with_its_buy_buttons(env: BotEnv) -> None:
    chat = env.chat(306, "ru")
    replies = await chat.say("/start plan_quarter", replies=2)
    card = chat.screen(replies[1].message_id)
    assert "3 months" in card.text
    labels = card.labels()
    assert any("2000 ⭐" in label for label in labels)
    # No SOL receiver and no NOWPayments key here: those rails are not offered.
    assert not any("SOL" in label for label in labels)
    assert not any(TEXTS["ru"]["button_monthly"].split("{")[0] in label for label in labels)  # 90 days


# ------------------------------------------------------------------------------ the monthly subscription


async def test_a_monthly_subscription_renews_once_per_charge_and_is_cancelled_from_status(env: BotEnv) -> None:
    chat = env.chat(307)
    await chat.ask("/plans")
    await chat.press("1 month")
    offer = await chat.press("Monthly (auto-renew)")
    link = env.server.invoice_links[-1]
    assert link["subscription_period"] == 30 * 24 * 3600 and link["total_amount"] == MONTH_STARS
    assert link["currency"] == "XTR" and link["payload"] == "sub:month:307"
    message = env.server.message(307, offer.message_id)
    assert message is not None
    assert message["reply_markup"]["inline_keyboard"][0][0]["url"] == link["url"]

    assert (await pre_checkout(env, 307, MONTH_STARS, "sub:month:307")).ok
    refused = await pre_checkout(env, 308, MONTH_STARS, "sub:month:307")
    assert not refused.ok and refused.error_message == t("precheckout_not_yours")

    now = datetime.now(UTC)
    period_end = int((now + 30 * DAY).timestamp())
    first = await pay(
        env,
        chat,
        MONTH_STARS,
        "sub:month:307",
        "sub-1",
        subscription_expiration_date=period_end,
        is_first_recurring=True,
    )
    assert first.text is not None and "Payment received" in first.text and "Plan: 30 days of alerts" in first.text
    assert near(await plan_end(env, 307), now + 30 * DAY)

    status = await chat.ask("/status")
    assert "Auto-renew: 750 ⭐ every 30 days" in status.text
    assert TEXTS["en"]["button_cancel_autorenew"] in chat.screen(status.message_id).labels()

    # Telegram renews it a month later: 30 more days, once however often the update comes.
    renewal = await pay(
        env, chat, MONTH_STARS, "sub:month:307", "sub-2", subscription_expiration_date=period_end + 30 * 86400
    )
    assert renewal.text is not None and "Payment received" in renewal.text
    assert near(await plan_end(env, 307), now + 60 * DAY)
    await pay_again(
        env, chat, MONTH_STARS, "sub:month:307", "sub-2", subscription_expiration_date=period_end + 30 * 86400
    )
    assert len(receipts(chat)) == 2
    assert near(await plan_end(env, 307), now + 60 * DAY)
    await env.services.ledger.writer.drained()
    pg = env.stores.postgres
    assert await pg.fetchval("SELECT count(*) FROM payments WHERE rail = 'stars' AND telegram_id = 307") == 2
    assert await pg.fetchval("SELECT count(*) FROM subscriptions WHERE source = 'payment'") == 2

    await chat.ask("/status")
    confirm = await chat.press(TEXTS["en"]["button_cancel_autorenew"])
    assert head("unsub_confirm") in confirm.text
    done = await chat.press(TEXTS["en"]["button_unsub_confirm"])
    assert head("unsub_done") in done.text
    assert env.server.subscription_edits == [(307, "sub-1", True)]  # named by its first charge
    status = await chat.ask("/status")
    assert "Auto-renew: cancelled" in status.text
    assert TEXTS["en"]["button_cancel_autorenew"] not in chat.screen(status.message_id).labels()
    assert near(await plan_end(env, 307), now + 60 * DAY)  # the paid months stand

    # Redis lost the record: it comes back from PostgreSQL, cancelled.
    await env.services.ledger.writer.drained()
    await env.stores.redis.delete("stars:subscription:307")
    again = await env.services.stars.subscription(307)
    assert again is not None and again.charge_id == "sub-1" and again.last_charge_id == "sub-2" and again.canceled


# ------------------------------------------------------------------------------ admins


async def test_refund_is_for_admins_and_names_a_known_charge(env: BotEnv) -> None:
    assert "admins only" in (await env.chat(309).ask("/refund charge-x")).text
    admin = env.chat(ADMIN)
    assert "/refund CHARGE_ID" in (await admin.ask("/refund")).text
    assert "No Stars payment" in (await admin.ask("/refund nope")).text
    assert env.server.refunds == []


# ------------------------------------------------------------------------------ other rails' seam


async def test_rails_are_offered_only_where_configured(env: BotEnv) -> None:
    plans = env.services.checkout

    async def sol(order: object) -> SolPaymentRequest:
        return SolPaymentRequest("solana:Receiver?amount=0.09", b"\x89PNG", "Ref111")

    async def invoice(order: object) -> str:
        return "https://nowpayments.example/invoice/1"

    month = await plans.plan("month")
    assert month is not None
    assert plans.rails(month) == [Rail.STARS]
    full = CheckoutService(env.services.ledger, env.services.accounts.plans, sol=sol, nowpayments=invoice)
    assert full.rails(month) == [Rail.STARS, Rail.SOL, Rail.NOWPAYMENTS]
    started = await full.start(310, "month", Rail.SOL)
    assert started.pay_url == "solana:Receiver?amount=0.09" and started.qr_png == b"\x89PNG"
    assert started.order.reference == "Ref111"
    found = await env.services.ledger.order_by_reference(Rail.SOL, "Ref111")
    assert found is not None and found.id == started.order.id
    paid_by_page = await full.start(310, "month", Rail.NOWPAYMENTS)
    assert paid_by_page.order.pay_url == "https://nowpayments.example/invoice/1"


# ------------------------------------------------------------------------------ both stores down


async def test_a_payment_neither_store_takes_is_kept_and_credited_when_they_return(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        postgres_behind_proxy(stores.database_url) as (pg_proxy, postgres),
        redis_behind_proxy(stores.redis_url) as (redis_proxy, redis, caches),
    ):
        proxied = Stores(redis, postgres, caches, stores.database_url, stores.redis_url)
        async with running_bot(proxied, notices=True) as env:
            env.services.stars.retry_min = 0.2
            chat = env.chat(311)
            invoice = await invoice_for(env, chat)
            assert invoice.invoice is not None
            order_id = invoice.invoice["payload"]
            assert (await pre_checkout(env, 311, MONTH_STARS, order_id)).ok
            await pg_proxy.stop_forwarding()
            await redis_proxy.stop_forwarding()
            with caplog.at_level("ERROR", logger="alertbot.payments"):
                answer = await pay(env, chat, MONTH_STARS, order_id, "charge-311")
            assert answer.text == t("receipt_pending")
            assert any("charge-311" in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)
            assert env.services.stars.kept == ["charge-311"]
            before = len(chat.sent())
            await pg_proxy.resume()
            await redis_proxy.resume()
            later = await env.server.wait_for_sent(lambda r: r.chat_id == 311, count=before + 1, timeout=30)
            assert "Payment received" in later[-1].text
            stars = env.services.stars

            async def nothing_kept() -> bool:
                return not stars.kept

            await until(nothing_kept)  # the retry ends just after sending its receipt
            await env.services.ledger.writer.drained(timeout=30)
    end = await stores.postgres.fetchval(
        "SELECT s.expires_at FROM subscriptions s JOIN users u ON u.id = s.user_id WHERE u.telegram_id = 311"
    )
    assert end is not None and end > datetime.now(UTC) + 29 * DAY
    assert await stores.redis.hget("payments:seen", "stars:charge-311") is not None
