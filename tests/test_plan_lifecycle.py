"""Around the payment: the free trial, reminders before a plan ends, the inviter's reward and the
notices that reach the user through the sender."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.callbacks import MenuCB
from bot.notices import NoticeDelivery
from domain.plans import Payment, Plan, Rail
from payments.ledger import PaymentLedger
from payments.notices import NOTICES_KEY, NoticeBoard
from payments.pg_writer import PaymentsWriter
from payments.records import CreditOutcome, NoticeKind, PaymentNotice
from payments.reminders import PlanReminders
from services.sender import MessageSender
from services.subscribers import SubscriberStore
from standins.telegram import FakeTelegramServer
from tests.bot_env import ADMIN, BotEnv, running_bot
from tests.conftest import Stores
from tests.outages import postgres_behind_proxy, with_postgres

USER = 601
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
MONTH = Plan("month", "1 month", 30, 750, Decimal("0.09"), Decimal(15))


@pytest.fixture
async def env(stores: Stores) -> AsyncIterator[BotEnv]:
    async with running_bot(stores) as running:
        yield running


async def notices(stores: Stores) -> list[PaymentNotice]:
    from payments.notices import decode

    async with stores.redis.guarded() as client:
        entries = await client.xrange(NOTICES_KEY)
    return [decode(fields) for _, fields in entries]


async def test_a_new_user_starts_the_trial_once_from_the_welcome_screen(env: BotEnv) -> None:
    chat = env.chat(USER)
    welcome = await chat.ask("/start")
    assert "🎁 Try 3 days free" in chat.screen(welcome.message_id).labels()
    screen = await chat.press("🎁 Try 3 days free")
    assert "free trial is on" in screen.text
    sub = await env.store.get(USER)
    assert sub is not None and sub.has_active_plan(datetime.now(UTC))
    # The button is gone for good, and pressing an old one changes nothing.
    again = await chat.ask("/start")
    assert "🎁 Try 3 days free" not in chat.screen(again.message_id).labels()
    # A button kept on an older message (the press edited this one) is pressed again.
    update_id = env.server.inject_callback(USER, again.message_id, MenuCB(screen="trial").pack(), check_button=False)
    await env.handled.wait(update_id)
    assert "had your free trial already" in chat.screen(again.message_id).text
    end = sub.plan_expires_at
    assert (await env.store.get(USER)).plan_expires_at == end  # type: ignore[union-attr]


async def test_reminders_go_once_each_even_across_a_restart(stores: Stores) -> None:
    store = SubscriberStore(stores.redis, stores.postgres, stores.caches, frozenset())
    await store.register(USER, username=None, first_name="Pat", language_code="en")
    writer = PaymentsWriter(stores.redis, stores.postgres, store)
    ledger = PaymentLedger(stores.redis, writer, store, clock=lambda: NOW)
    end = await ledger.grant(USER, 10, granted_by=ADMIN)
    board = NoticeBoard(stores.redis)

    def at(moment: datetime) -> PlanReminders:  # a fresh process each time
        return PlanReminders(stores.redis, board.post, clock=lambda: moment)

    assert await at(NOW).run_once() == 0  # ten days left
    assert await at(end - timedelta(days=2, hours=23)).run_once() == 1
    assert await at(end - timedelta(days=2)).run_once() == 0  # "3d" was sent
    assert await at(end - timedelta(hours=20)).run_once() == 1
    assert await at(end - timedelta(hours=10)).run_once() == 0
    assert await at(end + timedelta(minutes=5)).run_once() == 1
    assert await at(end + timedelta(hours=5)).run_once() == 0
    assert [n.kind for n in await notices(stores)] == [
        NoticeKind.REMINDER_3D,
        NoticeKind.REMINDER_1D,
        NoticeKind.PLAN_ENDED,
    ]
    # A plan renewed before its end has a new end, and its reminders start afresh.
    renewed = await PaymentLedger(stores.redis, writer, store, clock=lambda: end - timedelta(hours=1)).grant(
        USER, 30, granted_by=ADMIN
    )
    assert await at(renewed - timedelta(days=2)).run_once() == 1


async def test_an_inviter_gets_days_once_when_the_invitee_first_pays(stores: Stores) -> None:
    store = SubscriberStore(stores.redis, stores.postgres, stores.caches, frozenset())
    await store.register(700, username=None, first_name="Inviter", language_code="en")
    await store.register(USER, username=None, first_name="Invitee", language_code="en")
    await stores.postgres.execute(
        "UPDATE users SET referred_by = (SELECT id FROM users WHERE telegram_id = 700) WHERE telegram_id = $1", USER
    )
    writer = PaymentsWriter(stores.redis, stores.postgres, store)
    ledger = PaymentLedger(stores.redis, writer, store, referral_days=7)
    await writer.start()
    try:
        for signature in ("sig1", "sig2"):
            order = await ledger.create_order(USER, MONTH, Rail.SOL, reference=f"ref-{signature}")
            paid = await ledger.credit(
                Payment(Rail.SOL, signature, USER, 30, Decimal("0.09"), "SOL", order_id=order.id, plan_code="month")
            )
            assert paid.outcome is CreditOutcome.CREDITED
            await writer.drained()
        await writer.drained()
    finally:
        await writer.stop()
    inviter = await store.get(700)
    assert inviter is not None and inviter.has_active_plan(datetime.now(UTC))
    rewards = await stores.postgres.fetchval("SELECT count(*) FROM subscriptions WHERE source = 'referral'")
    assert rewards == 1
    kinds = [(n.telegram_id, n.kind) for n in await notices(stores)]
    assert kinds.count((700, NoticeKind.REFERRAL_REWARD)) == 1
    assert kinds.count((USER, NoticeKind.RECEIPT)) == 2


async def test_notices_reach_the_user_in_their_language_once_and_survive_a_restart(stores: Stores) -> None:
    store = SubscriberStore(stores.redis, stores.postgres, stores.caches, frozenset())
    await store.register(USER, username=None, first_name="Pat", language_code="ru")
    board = NoticeBoard(stores.redis)
    values = {"plan": "month", "days": "30", "amount": "750", "currency": "XTR", "plan_end": NOW.isoformat()}
    await board.post(PaymentNotice(USER, NoticeKind.RECEIPT, values))
    async with FakeTelegramServer() as server:
        for _ in range(2):  # the second run finds nothing left to send
            sender = MessageSender(server.create_bot())
            await sender.start()
            delivery = NoticeDelivery(stores.redis, sender, store)
            await delivery.start()
            await server.wait_for(lambda: len(server.messages_to(USER)) >= 1, 10, description="the receipt")
            await asyncio.sleep(0.3)
            await delivery.stop()
            await sender.stop(drain=True, timeout=5)
        [receipt] = server.messages_to(USER)
    assert "Оплата получена" in receipt.text and "2026-12-02 12:00 UTC" in receipt.text
    assert await notices(stores) == []


async def test_grant_works_while_postgresql_is_down_and_its_row_follows(stores: Stores) -> None:
    async with postgres_behind_proxy(stores.database_url) as (proxy, postgres):
        async with running_bot(with_postgres(stores, postgres)) as env:
            chat = env.chat(USER)
            await chat.ask("/start")
            await proxy.stop_forwarding()
            answer = await env.chat(ADMIN).ask(f"/grant {USER} 5")
            assert "Granted 5 days" in answer.text
            sub = await env.store.get(USER)
            assert sub is not None and sub.has_active_plan(datetime.now(UTC))
            await proxy.resume()
            rows = "SELECT count(*) FROM subscriptions WHERE source = 'grant'"
            for _ in range(300):
                if await stores.postgres.fetchval(rows):
                    break
                await asyncio.sleep(0.05)
            assert await stores.postgres.fetchval(rows) == 1
