"""The payments ledger on real Redis and PostgreSQL: credits once, plans in Redis at once and in
PostgreSQL through the queue, and outages of either store lose nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from domain.plans import OrderStatus, Payment, Plan, Rail
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from payments.ledger import PaymentLedger, PaymentsUnavailable
from payments.pg_writer import DEAD_KEY, QUEUE_KEY, REBUILT_KEY, PaymentsWriter
from payments.records import CreditOutcome
from services.cache import CacheRegistry
from services.subscribers import SubscriberStore, subscriber_key
from tests.conftest import Stores
from tests.outages import postgres_behind_proxy, redis_behind_proxy

MONTH = Plan("month", "1 month", 30, 750, Decimal("0.09"), Decimal(15))
USER = 501


@dataclass
class Books:
    store: SubscriberStore
    writer: PaymentsWriter
    ledger: PaymentLedger
    postgres: PostgresManager
    redis: RedisManager


@asynccontextmanager
async def books(redis: RedisManager, postgres: PostgresManager, caches: CacheRegistry) -> AsyncIterator[Books]:
    store = SubscriberStore(redis, postgres, caches, frozenset())
    writer = PaymentsWriter(redis, postgres, store)
    await writer.start()
    try:
        yield Books(store, writer, PaymentLedger(redis, writer, store), postgres, redis)
    finally:
        await writer.stop()


@pytest.fixture
async def ledger_env(stores: Stores) -> AsyncIterator[Books]:
    async with books(stores.redis, stores.postgres, stores.caches) as env:
        await env.store.register(USER, username="payer", first_name="Pat", language_code="en")
        yield env


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def payment(external_id: str, amount: str, *, order_id: str | None = None, user: int = USER) -> Payment:
    return Payment(
        rail=Rail.SOL,
        external_id=external_id,
        telegram_id=user,
        days=MONTH.days,
        amount=Decimal(amount),
        currency="SOL",
        order_id=order_id,
        plan_code=MONTH.code,
        raw={"signature": external_id},
    )


async def plan_end(env: Books, user: int = USER) -> datetime | None:
    sub = await env.store.get(user)
    assert sub is not None
    return sub.plan_expires_at


async def pg_plan_end(postgres: PostgresManager, user: int = USER) -> datetime | None:
    return await postgres.fetchval(
        "SELECT max(expires_at) FROM subscriptions s JOIN users u ON u.id = s.user_id"
        " WHERE u.telegram_id = $1 AND s.revoked_at IS NULL",
        user,
    )


async def count(postgres: PostgresManager, query: str, *args: Any) -> int:
    return int(await postgres.fetchval(query, *args))


async def test_an_order_paid_in_two_parts_is_credited_once_and_reaches_postgresql_in_the_same_shape(
    ledger_env: Books,
) -> None:
    env = ledger_env
    order = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="Ref1111")
    first = await env.ledger.credit(payment("sigA", "0.05", order_id=order.id))
    assert first.outcome is CreditOutcome.PARTIAL
    assert first.order is not None and first.order.shortfall == Decimal("0.04")
    assert await plan_end(env) is None

    before = datetime.now(UTC)
    second = await env.ledger.credit(payment("sigB", "0.04", order_id=order.id))
    assert second.outcome is CreditOutcome.CREDITED and second.plan_end is not None
    assert second.plan_end - before >= timedelta(days=30) - timedelta(seconds=5)
    assert await plan_end(env) == second.plan_end  # Redis has it at once

    again = await env.ledger.credit(payment("sigB", "0.04", order_id=order.id))
    assert again.outcome is CreditOutcome.DUPLICATE
    stored = await env.ledger.order(order.id)
    assert stored is not None and stored.status is OrderStatus.PAID and stored.paid_amount == Decimal("0.09")

    await env.writer.drained()
    pg = env.postgres
    assert await pg_plan_end(pg) == second.plan_end
    assert await count(pg, "SELECT count(*) FROM payments WHERE rail = 'sol'") == 2
    assert await count(pg, "SELECT count(*) FROM subscriptions WHERE source = 'payment'") == 1
    row = await pg.fetchrow("SELECT status, paid_amount FROM orders WHERE id = $1", order.id)
    assert row["status"] == "paid" and row["paid_amount"] == Decimal("0.09")
    # Known to PostgreSQL: the same signature is a duplicate even if Redis forgot it.
    await env.redis.delete("payments:seen")
    assert (await env.ledger.credit(payment("sigB", "0.04", order_id=order.id))).outcome is CreditOutcome.DUPLICATE


async def test_one_payment_arriving_many_times_at_once_is_credited_once(ledger_env: Books) -> None:
    env = ledger_env
    order = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="Ref2222")
    results = await asyncio.gather(*(env.ledger.credit(payment("sigC", "0.09", order_id=order.id)) for _ in range(8)))
    outcomes = sorted(result.outcome.value for result in results)
    assert outcomes == ["credited"] + ["duplicate"] * 7
    await env.writer.drained()
    assert await count(env.postgres, "SELECT count(*) FROM subscriptions") == 1


async def test_paid_days_run_from_the_later_of_now_and_the_current_end(ledger_env: Books) -> None:
    env = ledger_env
    first = await env.ledger.grant(USER, 10, granted_by=1)
    second = await env.ledger.grant(USER, 30, granted_by=1)
    assert second - first == timedelta(days=30)
    await env.writer.drained()
    rows = await env.postgres.fetch("SELECT starts_at, expires_at, source FROM subscriptions ORDER BY id")
    assert [r["source"] for r in rows] == ["grant", "grant"]
    assert rows[1]["starts_at"] == rows[0]["expires_at"]


async def test_a_payment_for_someone_elses_or_an_already_paid_order_is_refused(ledger_env: Books) -> None:
    env = ledger_env
    await env.store.register(777, username=None, first_name="Other", language_code="en")
    order = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="Ref3333")
    other = await env.ledger.credit(payment("sigD", "0.09", order_id=order.id, user=777))
    assert other.outcome is CreditOutcome.REJECTED and "another user" in other.reason
    assert (await env.ledger.credit(payment("sigE", "0.09", order_id=order.id))).outcome is CreditOutcome.CREDITED
    late = await env.ledger.credit(payment("sigF", "0.09", order_id=order.id))
    assert late.outcome is CreditOutcome.REJECTED and "already paid" in late.reason
    await env.writer.drained()  # the refused money is on record for support
    kinds = [r["kind"] for r in await env.postgres.fetch("SELECT kind FROM payment_events WHERE external_id = 'sigF'")]
    assert kinds == ["rejected: order already paid"]


async def test_a_trial_is_given_once_per_user(ledger_env: Books) -> None:
    env = ledger_env
    assert await env.ledger.had_trial(USER) is False
    first, second = await asyncio.gather(env.ledger.start_trial(USER, 3), env.ledger.start_trial(USER, 3))
    assert [first is None, second is None].count(True) == 1
    assert await env.ledger.start_trial(USER, 3) is None
    assert await env.ledger.had_trial(USER) is True
    await env.writer.drained()
    assert await count(env.postgres, "SELECT count(*) FROM subscriptions WHERE source = 'trial'") == 1


async def test_a_refund_ends_the_plan_and_marks_the_payment(ledger_env: Books) -> None:
    env = ledger_env
    order = await env.ledger.create_order(USER, MONTH, Rail.STARS)
    stars = Payment(Rail.STARS, "charge-1", USER, 30, Decimal(750), "XTR", order_id=order.id, plan_code="month")
    assert (await env.ledger.credit(stars)).outcome is CreditOutcome.CREDITED
    assert await env.ledger.refund(Rail.STARS, "charge-1") == USER
    sub = await env.store.get(USER)
    assert sub is not None and not sub.has_active_plan(datetime.now(UTC))
    await env.writer.drained()
    assert await pg_plan_end(env.postgres) is None
    assert await env.postgres.fetchval("SELECT status FROM payments WHERE external_id = 'charge-1'") == "refunded"
    assert await env.ledger.refund(Rail.STARS, "no-such-charge") is None


async def test_gateway_statuses_only_move_forward(ledger_env: Books) -> None:
    ledger = ledger_env.ledger
    assert await ledger.advance_status(Rail.NOWPAYMENTS, "np1", "waiting")
    assert await ledger.advance_status(Rail.NOWPAYMENTS, "np1", "finished")
    assert not await ledger.advance_status(Rail.NOWPAYMENTS, "np1", "confirming")
    assert not await ledger.advance_status(Rail.NOWPAYMENTS, "np1", "finished")
    assert not await ledger.advance_status(Rail.NOWPAYMENTS, "np1", "no-such-status")
    await ledger_env.writer.drained()  # kept in PostgreSQL before any payment row exists
    assert await ledger_env.writer.gateway_status(Rail.NOWPAYMENTS, "np1") == "finished"


async def test_cancelled_and_expired_orders_leave_the_open_list(ledger_env: Books) -> None:
    env = ledger_env
    kept = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="RefK")
    gone = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="RefG")
    just = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="RefJ", ttl=timedelta(minutes=-1))
    short = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="RefS", ttl=timedelta(minutes=-11))
    assert await env.ledger.cancel_order(gone.id, 999) is None  # not theirs
    cancelled = await env.ledger.cancel_order(gone.id, USER)
    assert cancelled is not None and cancelled.status is OrderStatus.CANCELLED
    # An order whose time ran out a minute ago is still watched for a payment sent in time.
    assert {order.id for order in await env.ledger.open_orders(Rail.SOL)} == {kept.id, just.id}
    expired = await env.ledger.expire_orders()
    assert [order.id for order in expired] == [short.id]
    found = await env.ledger.order_by_reference(Rail.SOL, "RefK")
    assert found is not None and found.id == kept.id
    await env.writer.drained()
    statuses = dict(await env.postgres.fetch("SELECT id, status FROM orders"))
    assert statuses == {kept.id: "open", just.id: "open", gone.id: "cancelled", short.id: "expired"}


async def test_with_postgresql_down_a_payment_and_a_grant_take_effect_at_once_and_their_rows_follow(
    stores: Stores,
) -> None:
    async with postgres_behind_proxy(stores.database_url) as (proxy, postgres):
        async with books(stores.redis, postgres, stores.caches) as env:
            await env.store.register(USER, username=None, first_name="Pat", language_code="en")
            order = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="RefPG")
            await env.writer.drained()
            await proxy.stop_forwarding()
            paid = await env.ledger.credit(payment("sigPG", "0.09", order_id=order.id))
            assert paid.outcome is CreditOutcome.CREDITED
            granted = await env.ledger.grant(USER, 5, granted_by=1)
            assert await plan_end(env) == granted  # active at once
            assert await count(stores.postgres, "SELECT count(*) FROM subscriptions") == 0
            await proxy.resume()
            await env.writer.drained(timeout=30)
            assert await pg_plan_end(stores.postgres) == granted
            assert await count(stores.postgres, "SELECT count(*) FROM payments") == 2


async def test_with_redis_down_a_payment_goes_to_postgresql_and_the_plan_returns_to_redis(stores: Stores) -> None:
    async with redis_behind_proxy(stores.redis_url) as (proxy, redis, caches):
        async with books(redis, stores.postgres, caches) as env:
            await env.store.register(USER, username=None, first_name="Pat", language_code="en")
            order = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="RefRD")
            await env.writer.drained()
            await proxy.stop_forwarding()
            paid = await env.ledger.credit(payment("sigRD", "0.09", order_id=order.id))
            assert paid.outcome is CreditOutcome.CREDITED and paid.plan_end is not None
            assert await pg_plan_end(stores.postgres) == paid.plan_end
            again = await env.ledger.credit(payment("sigRD", "0.09", order_id=order.id))
            assert again.outcome is CreditOutcome.DUPLICATE
            await proxy.resume()
            end = paid.plan_end.timestamp()

            async def back_in_redis() -> bool:
                raw = await stores.redis.hget(subscriber_key(USER), "plan_expires_at")
                return bool(raw) and float(raw or 0) == pytest.approx(end)

            await until(back_in_redis, timeout=45)
            assert await stores.redis.hget("payments:seen", "sol:sigRD") is not None


async def test_with_both_stores_down_a_credit_says_so_and_changes_nothing(stores: Stores) -> None:
    async with (
        postgres_behind_proxy(stores.database_url) as (pg_proxy, postgres),
        redis_behind_proxy(stores.redis_url) as (redis_proxy, redis, caches),
        books(redis, postgres, caches) as env,
    ):
        await env.store.register(USER, username=None, first_name="Pat", language_code="en")
        await pg_proxy.stop_forwarding()
        await redis_proxy.stop_forwarding()
        with pytest.raises(PaymentsUnavailable):
            await env.ledger.credit(payment("sigXX", "0.09"))
        await pg_proxy.resume()
        await redis_proxy.resume()
    assert await count(stores.postgres, "SELECT count(*) FROM payments") == 0


async def test_plans_lost_by_redis_are_rebuilt_from_postgresql_at_start(stores: Stores) -> None:
    async with books(stores.redis, stores.postgres, stores.caches) as env:
        await env.store.register(USER, username=None, first_name="Pat", language_code="en")
        end = await env.ledger.grant(USER, 30, granted_by=1)
        await env.writer.drained()
    await stores.redis.delete(subscriber_key(USER), "payments:seen", REBUILT_KEY)
    async with books(stores.redis, stores.postgres, stores.caches) as env:
        assert await plan_end(env) == end
        assert await stores.redis.get(REBUILT_KEY) == "1"


async def test_an_entry_postgresql_refuses_for_good_is_set_aside_and_the_queue_goes_on(ledger_env: Books) -> None:
    env = ledger_env
    async with env.redis.guarded() as client:
        await client.xadd(QUEUE_KEY, {"kind": "no-such-kind", "data": "{}"})
    end = await env.ledger.grant(USER, 3, granted_by=1)
    await env.writer.drained()
    assert await pg_plan_end(env.postgres) == end
    async with env.redis.guarded() as client:
        dead = await client.xrange(DEAD_KEY)
    assert len(dead) == 1 and "unknown payments entry kind" in dead[0][1]["error"]


async def test_money_that_arrives_after_the_order_expired_or_was_cancelled_still_buys_the_plan(
    ledger_env: Books,
) -> None:
    env = ledger_env
    late = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="RefLate", ttl=timedelta(hours=-1))
    assert [order.id for order in await env.ledger.expire_orders()] == [late.id]
    assert (await env.ledger.credit(payment("sigLate", "0.09", order_id=late.id))).outcome is CreditOutcome.CREDITED
    dropped = await env.ledger.create_order(USER, MONTH, Rail.SOL, reference="RefDrop")
    await env.ledger.cancel_order(dropped.id, USER)
    result = await env.ledger.credit(payment("sigDrop", "0.09", order_id=dropped.id))
    assert result.outcome is CreditOutcome.CREDITED and result.order is not None
    assert result.order.status is OrderStatus.PAID


async def test_entries_a_killed_writer_had_read_but_not_acknowledged_are_written_by_the_next(stores: Stores) -> None:
    from payments.pg_writer import CONSUMER, GROUP

    store = SubscriberStore(stores.redis, stores.postgres, stores.caches, frozenset())
    await store.register(USER, username=None, first_name="Pat", language_code="en")
    writer = PaymentsWriter(stores.redis, stores.postgres, store)
    ledger = PaymentLedger(stores.redis, writer, store)
    end = await ledger.grant(USER, 30, granted_by=1)
    async with stores.redis.guarded() as client:
        await client.xgroup_create(QUEUE_KEY, GROUP, id="0", mkstream=True)
        # What a writer killed between reading and committing leaves: entries pending, unwritten.
        taken = await client.xreadgroup(GROUP, CONSUMER, {QUEUE_KEY: ">"}, count=10)
    assert len(taken[0][1]) == 1
    await writer.start()
    try:
        await writer.drained()
    finally:
        await writer.stop()
    assert await pg_plan_end(stores.postgres) == end
    async with stores.redis.guarded() as client:
        assert await client.xpending(QUEUE_KEY, GROUP) == {"pending": 0, "min": None, "max": None, "consumers": []}
