"""PostgreSQL's side of the payments ledger: the queue's writer, the direct writes made while
Redis is down, and the reads that fall back to PostgreSQL.

The ledger puts every change on the `payments:pg` Redis stream; `PaymentsWriter` applies each
entry in one transaction and acknowledges it only after the commit, so a PostgreSQL outage or a
crash leaves it to be applied again (each entry is idempotent: payments are unique on
(rail, external_id), orders are upserted). An entry PostgreSQL refuses for good goes to
`payments:pg:dead` with the reason, loudly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import asyncpg
import redis.exceptions

from domain.plans import PAID_RAILS, Order, OrderStatus, Payment, Rail, covers, paid_period
from managers.postgres import PostgresManager
from managers.redis_manager import REDIS_ERRORS, RedisManager
from payments.records import CreditOutcome, CreditResult, payment_entry
from services.loops import BackgroundLoop
from services.subscribers import PG_FAILURES, SubscriberStore, epoch_text, from_epoch_text, subscriber_key

logger = logging.getLogger("alertbot.payments")

QUEUE_KEY = "payments:pg"
DEAD_KEY = "payments:pg:dead"
GROUP = "pg"
CONSUMER = "writer"
# Set once Redis holds every plan and payment PostgreSQL has; missing after Redis lost its data.
REBUILT_KEY = "payments:rebuilt"
SEEN_KEY = "payments:seen"  # field "rail:external_id" -> "outcome|telegram_id"
PLAN_ENDS_KEY = "plans:ends"  # telegram id -> plan end (epoch), for reminders
PLAN_SET_AT_KEY = "plans:set_at"  # telegram id -> when the plan end was last moved (epoch)
BATCH = 100
RETRY_MIN = 0.2
RETRY_MAX = 5.0
SOURCES = {Rail.GRANT: "grant", Rail.TRIAL: "trial", Rail.REFERRAL: "referral"}

# What retrying cannot fix.
_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.SyntaxOrAccessError,
    KeyError,
    ValueError,
    TypeError,
)

__all__ = ["PG_FAILURES", "PLAN_ENDS_KEY", "PLAN_SET_AT_KEY", "QUEUE_KEY", "SEEN_KEY", "PaymentsWriter"]


def _order_from_row(row: Mapping[str, Any]) -> Order:
    return Order(
        id=row["id"],
        telegram_id=int(row["telegram_id"] or 0),
        plan_code=row["plan_code"],
        days=int(row["days"]),
        rail=Rail(row["rail"]),
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        status=OrderStatus(row["status"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        paid_amount=Decimal(row["paid_amount"]),
        reference=row["reference"],
        pay_url=row["pay_url"],
    )


async def _nothing(telegram_id: int) -> None:
    return None


class PaymentsWriter:
    def __init__(self, redis: RedisManager, postgres: PostgresManager, store: SubscriberStore) -> None:
        self.redis = redis
        self.postgres = postgres
        self.store = store
        self._loop = BackgroundLoop("payments-writer")
        self._idle = asyncio.Event()
        # Users whose plan PostgreSQL has and Redis may not (written while Redis was down).
        self._resync: set[int] = set()
        self.applied = 0
        self.refused = 0
        # Called with the payer's id after a paid credit reaches PostgreSQL, before its entry is
        # acknowledged (so a crash in between calls it again; it must be idempotent).
        self.on_paid: Callable[[int], Awaitable[None]] = _nothing

    # ------------------------------------------------------------------ the queue

    async def start(self) -> None:
        await self.rebuild_if_lost()
        self._loop.start(self._run)

    async def stop(self) -> None:
        await self._loop.stop()

    def poke(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._idle.clear()
        self._loop.wake.set()

    async def drained(self, timeout: float = 10.0) -> None:
        """Wait until every queued change is in PostgreSQL (tests, shutdown)."""
        self.poke()
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _run(self) -> None:
        delay = RETRY_MIN
        while not self._loop.stopping:
            try:
                await self._ensure_group()
                self._loop.wake.clear()  # a poke from here on means: look again before idling
                busy = await self._pass()
                if not busy:
                    await self._resync_plans()
                    if not self._loop.wake.is_set():
                        self._idle.set()
                        await self._loop.sleep(1.0)
                delay = RETRY_MIN
            except asyncio.CancelledError:
                raise
            except (*PG_FAILURES, *REDIS_ERRORS) as exc:
                logger.warning("payments queue waits for the stores (%r); retrying in %.1f s", exc, delay)
                await self._loop.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
            except Exception:
                logger.exception("payments writer failed; retrying")
                await self._loop.sleep(RETRY_MAX)

    async def _ensure_group(self) -> None:
        async with self.redis.guarded() as client:
            try:
                await client.xgroup_create(QUEUE_KEY, GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _pass(self) -> bool:
        """Apply this consumer's pending entries, then new ones; True when any were applied."""
        async with self.redis.guarded() as client:
            pending: Any = await client.xreadgroup(GROUP, CONSUMER, {QUEUE_KEY: "0"}, count=BATCH)
            entries: list[tuple[str, dict[str, str]]] = pending[0][1] if pending else []
            if not entries:
                fresh: Any = await client.xreadgroup(GROUP, CONSUMER, {QUEUE_KEY: ">"}, count=BATCH)
                entries = fresh[0][1] if fresh else []
        for entry_id, fields in entries:
            try:
                await self.apply(fields)
                if fields.get("kind") == "payment" and fields.get("outcome") == "credited":
                    data = json.loads(fields["data"])
                    if Rail(data["rail"]) in PAID_RAILS:
                        await self.on_paid(int(data["telegram_id"]))
            except _REFUSED as exc:
                self.refused += 1
                logger.error(
                    "PostgreSQL refuses payments entry %s %s for good (%r); kept in %s", entry_id, fields, exc, DEAD_KEY
                )
                async with self.redis.guarded() as client:
                    await client.xadd(DEAD_KEY, cast(Any, {**fields, "error": repr(exc)[:500]}))
            async with self.redis.guarded() as client:
                await client.xack(QUEUE_KEY, GROUP, entry_id)
                await client.xdel(QUEUE_KEY, entry_id)
            self.applied += 1
        return bool(entries)

    async def apply(self, fields: Mapping[str, str]) -> None:
        """One queue entry into PostgreSQL, in one transaction; safe to apply twice."""
        kind = fields["kind"]
        async with self.postgres.transaction() as conn:
            if kind == "order":
                await self._upsert_order(conn, json.loads(fields["data"]))
            elif kind == "payment":
                await self._apply_payment(conn, fields)
            elif kind == "revoke":
                data = json.loads(fields["data"])
                await self._revoke(conn, int(data["telegram_id"]), datetime.fromisoformat(data["at"]))
            elif kind == "refund":
                await conn.execute(
                    "UPDATE payments SET status = 'refunded' WHERE rail = $1 AND external_id = $2",
                    fields["rail"],
                    fields["external_id"],
                )
            elif kind == "event":
                data = json.loads(fields["data"])
                await conn.execute(
                    """
                    INSERT INTO payment_events (rail, external_id, order_id, kind, raw, received_at)
                    VALUES ($1, $2, $3, $4, $5, $6)
                    """,
                    data["rail"],
                    data["external_id"],
                    data["order_id"],
                    data["kind"],
                    data["raw"],
                    datetime.fromisoformat(data["at"]),
                )
            elif kind == "gateway_status":
                data = json.loads(fields["data"])
                await conn.execute(
                    """
                    INSERT INTO gateway_statuses (rail, external_id, status) VALUES ($1, $2, $3)
                    ON CONFLICT (rail, external_id) DO UPDATE SET status = EXCLUDED.status
                    """,
                    data["rail"],
                    data["external_id"],
                    data["status"],
                )
            else:
                raise ValueError(f"unknown payments entry kind {kind!r}")

    @staticmethod
    async def _upsert_order(conn: asyncpg.Connection, data: Mapping[str, Any]) -> None:
        await conn.execute(
            """
            INSERT INTO orders (id, telegram_id, plan_code, days, rail, amount, currency, paid_amount, status,
                                reference, pay_url, created_at, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT (id) DO UPDATE
               SET status = EXCLUDED.status, paid_amount = EXCLUDED.paid_amount,
                   reference = EXCLUDED.reference, pay_url = EXCLUDED.pay_url, expires_at = EXCLUDED.expires_at
            """,
            data["id"],
            data["telegram_id"],
            data["plan_code"],
            data["days"],
            data["rail"],
            Decimal(data["amount"]),
            data["currency"],
            Decimal(data["paid_amount"]),
            data["status"],
            data["reference"],
            data["pay_url"],
            datetime.fromisoformat(data["created_at"]),
            datetime.fromisoformat(data["expires_at"]),
        )

    async def _apply_payment(self, conn: asyncpg.Connection, fields: Mapping[str, str]) -> None:
        data = json.loads(fields["data"])
        outcome = fields["outcome"]
        credited = outcome == "credited"
        if data["order_id"]:
            await conn.execute(
                "UPDATE orders SET paid_amount = $2, status = $3 WHERE id = $1",
                data["order_id"],
                Decimal(int(fields["paid_units"])) / 10**9,
                "paid" if credited else "partial",
            )
        inserted = await self._insert_payment(conn, data, credited=credited)
        if inserted is None:
            if credited:
                # Credited in Redis, yet PostgreSQL had it: Redis's plan is re-read from here.
                logger.warning("payment %s %s was already in PostgreSQL", data["rail"], data["external_id"])
                self._resync.add(int(data["telegram_id"]))
            return
        if credited:
            start, end = from_epoch_text(fields["plan_start"]), from_epoch_text(fields["plan_end"])
            await self._insert_subscription(conn, data, inserted, start, end)

    @staticmethod
    async def _insert_payment(conn: asyncpg.Connection, data: Mapping[str, Any], *, credited: bool) -> int | None:
        return await conn.fetchval(
            """
            INSERT INTO payments (user_id, telegram_id, plan_id, rail, external_id, amount, currency, status, raw,
                                  confirmed_at, order_id)
            VALUES ((SELECT id FROM users WHERE telegram_id = $1), $1, (SELECT id FROM plans WHERE code = $2),
                    $3, $4, $5, $6, $7, $8, CASE WHEN $7 = 'confirmed' THEN now() END,
                    (SELECT id FROM orders WHERE id = $9))
            ON CONFLICT (rail, external_id) DO NOTHING
            RETURNING id
            """,
            int(data["telegram_id"]),
            data["plan_code"],
            data["rail"],
            data["external_id"],
            Decimal(data["amount"]),
            data["currency"] or None,
            "confirmed" if credited else "pending",
            data["raw"] or None,
            data["order_id"],
        )

    @staticmethod
    async def _insert_subscription(
        conn: asyncpg.Connection,
        data: Mapping[str, Any],
        payment_id: int,
        start: datetime | None,
        end: datetime | None,
    ) -> None:
        if start is None or end is None:
            raise ValueError(f"credited payment {data['external_id']} without its period")
        user_id = await conn.fetchval("SELECT id FROM users WHERE telegram_id = $1", int(data["telegram_id"]))
        if user_id is None:
            logger.error(
                "payment %s %s of unknown user %s: no subscription row",
                data["rail"],
                data["external_id"],
                data["telegram_id"],
            )
            return
        await conn.execute(
            """
            INSERT INTO subscriptions (user_id, plan_id, payment_id, source, granted_by, starts_at, expires_at)
            VALUES ($1, (SELECT id FROM plans WHERE code = $2), $3, $4, $5, $6, $7)
            """,
            user_id,
            data["plan_code"],
            payment_id,
            SOURCES.get(Rail(data["rail"]), "payment"),
            data["granted_by"],
            start,
            end,
        )

    @staticmethod
    async def _revoke(conn: asyncpg.Connection, telegram_id: int, at: datetime) -> int:
        status = await conn.execute(
            """
            UPDATE subscriptions SET revoked_at = $2
             WHERE user_id = (SELECT id FROM users WHERE telegram_id = $1)
               AND revoked_at IS NULL AND expires_at > $2
            """,
            telegram_id,
            at,
        )
        return int(status.split()[-1])

    # ------------------------------------------------------------------ while Redis is down

    async def credit_directly(self, payment: Payment, tolerance: Decimal, now: datetime) -> CreditResult:
        """The ledger's credit done in PostgreSQL alone; the plan reaches Redis when it returns."""
        data = payment_entry(payment)
        async with self.postgres.transaction() as conn:
            user_id = await conn.fetchval("SELECT id FROM users WHERE telegram_id = $1 FOR UPDATE", payment.telegram_id)
            exists = await conn.fetchval(
                "SELECT 1 FROM payments WHERE rail = $1 AND external_id = $2", payment.rail.value, payment.external_id
            )
            if exists:
                return CreditResult(CreditOutcome.DUPLICATE)
            days = payment.days
            order: Order | None = None
            credited = True
            if payment.order_id:
                row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1 FOR UPDATE", payment.order_id)
                if row is None:
                    return CreditResult(CreditOutcome.REJECTED, reason="unknown order")
                order = _order_from_row(row)
                if order.telegram_id != payment.telegram_id:
                    return CreditResult(CreditOutcome.REJECTED, reason="order of another user")
                if order.status is OrderStatus.PAID:
                    return CreditResult(CreditOutcome.REJECTED, order=order, reason="order already paid")
                paid = order.paid_amount + payment.amount
                credited = covers(order, paid, tolerance)
                days = order.days
                status = OrderStatus.PAID if credited else OrderStatus.PARTIAL
                await conn.execute(
                    "UPDATE orders SET paid_amount = $2, status = $3 WHERE id = $1", order.id, paid, status.value
                )
                order = replace(order, paid_amount=paid, status=status)
            payment_id = await self._insert_payment(conn, data, credited=credited)
            if not credited:
                return CreditResult(CreditOutcome.PARTIAL, order=order)
            current = await conn.fetchval(
                "SELECT max(expires_at) FROM subscriptions WHERE user_id = $1 AND revoked_at IS NULL", user_id
            )
            start, end = paid_period(current, now, days)
            assert payment_id is not None
            await self._insert_subscription(conn, data, payment_id, start, end)
        self._resync.add(payment.telegram_id)
        return CreditResult(CreditOutcome.CREDITED, plan_end=end, order=order)

    async def revoke_directly(self, telegram_id: int, now: datetime, reason: str) -> bool:
        async with self.postgres.transaction() as conn:
            revoked = await self._revoke(conn, telegram_id, now) > 0
        if revoked:
            self._resync.add(telegram_id)
        return revoked

    async def _resync_plans(self) -> None:
        """Put into Redis the plans written to PostgreSQL alone (the queue is empty now)."""
        while self._resync:
            telegram_id = self._resync.pop()
            try:
                end = await self.postgres.fetchval(
                    """
                    SELECT max(expires_at) FROM subscriptions
                     WHERE user_id = (SELECT id FROM users WHERE telegram_id = $1) AND revoked_at IS NULL
                    """,
                    telegram_id,
                )
                await self._put_plan(telegram_id, end)
                await self._mark_payments(telegram_id)
            except BaseException:
                self._resync.add(telegram_id)
                raise
            await self.store.plan_changed(telegram_id)
            logger.info("plan of user %s put back into Redis from PostgreSQL", telegram_id)

    async def _put_plan(self, telegram_id: int, end: datetime | None) -> None:
        async with self.redis.guarded() as client:
            await client.hset(subscriber_key(telegram_id), "plan_expires_at", epoch_text(end))

    async def _mark_payments(self, telegram_id: int | None = None) -> int:
        rows = await self.postgres.fetch(
            "SELECT rail, external_id, telegram_id, status FROM payments"
            + (" WHERE telegram_id = $1" if telegram_id is not None else " WHERE telegram_id IS NOT NULL"),
            *([telegram_id] if telegram_id is not None else []),
        )
        if not rows:
            return 0
        async with self.redis.guarded() as client:
            async with client.pipeline(transaction=False) as pipe:
                for row in rows:
                    outcome = "credited" if row["status"] in ("confirmed", "refunded") else "partial"
                    pipe.hsetnx(
                        "payments:seen", f"{row['rail']}:{row['external_id']}", f"{outcome}|{row['telegram_id']}"
                    )
                await pipe.execute()
        return len(rows)

    async def rebuild_if_lost(self) -> int:
        """When Redis lost the plans (a restart without persistence), put every live plan and
        every payment's seen mark back from PostgreSQL; returns how many plans."""
        async with self.redis.guarded() as client:
            if await client.exists(REBUILT_KEY):
                return 0
        rows = await self.postgres.fetch(
            """
            SELECT u.telegram_id, max(s.expires_at) AS plan_end
              FROM subscriptions s JOIN users u ON u.id = s.user_id
             WHERE s.revoked_at IS NULL AND s.expires_at > now()
             GROUP BY u.telegram_id
            """
        )
        for row in rows:
            await self._put_plan(int(row["telegram_id"]), row["plan_end"])
        marked = await self._mark_payments()
        async with self.redis.guarded() as client:
            await client.set(REBUILT_KEY, "1")
        if rows or marked:
            logger.warning(
                "Redis had no payments state: rebuilt %d plans and %d payments from PostgreSQL", len(rows), marked
            )
        for row in rows:
            await self.store.plan_changed(int(row["telegram_id"]))
        return len(rows)

    # ------------------------------------------------------------------ reads

    async def known(self, rail: Rail, external_id: str) -> bool:
        """Whether PostgreSQL has this payment; False when it cannot say (Redis decides then)."""
        try:
            return bool(
                await self.postgres.fetchval(
                    "SELECT 1 FROM payments WHERE rail = $1 AND external_id = $2", rail.value, external_id
                )
            )
        except PG_FAILURES:
            return False

    async def referrer(self, telegram_id: int) -> int | None:
        """Who invited the user (their telegram id), None when nobody did."""
        value = await self.postgres.fetchval(
            "SELECT r.telegram_id FROM users u JOIN users r ON r.id = u.referred_by WHERE u.telegram_id = $1",
            telegram_id,
        )
        return None if value is None else int(value)

    async def payer(self, rail: Rail, external_id: str) -> int | None:
        try:
            value = await self.postgres.fetchval(
                "SELECT telegram_id FROM payments WHERE rail = $1 AND external_id = $2", rail.value, external_id
            )
        except PG_FAILURES:
            return None
        return None if value is None else int(value)

    async def gateway_status(self, rail: Rail, external_id: str) -> str | None:
        return await self.postgres.fetchval(
            "SELECT status FROM gateway_statuses WHERE rail = $1 AND external_id = $2", rail.value, external_id
        )

    async def order(self, order_id: str) -> Order | None:
        try:
            row = await self.postgres.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        except PG_FAILURES:
            return None
        return None if row is None else _order_from_row(row)

    async def order_by_reference(self, rail: Rail, reference: str) -> Order | None:
        try:
            row = await self.postgres.fetchrow(
                "SELECT * FROM orders WHERE rail = $1 AND reference = $2", rail.value, reference
            )
        except PG_FAILURES:
            return None
        return None if row is None else _order_from_row(row)

    async def open_orders(self, rail: Rail, now: datetime) -> list[Order]:
        try:
            rows = await self.postgres.fetch(
                "SELECT * FROM orders WHERE rail = $1 AND status IN ('open', 'partial') AND expires_at > $2"
                " ORDER BY expires_at",
                rail.value,
                now,
            )
        except PG_FAILURES:
            return []
        return [_order_from_row(row) for row in rows]

    async def user_orders(self, telegram_id: int, limit: int) -> list[Order]:
        rows = await self.postgres.fetch(
            "SELECT * FROM orders WHERE telegram_id = $1 ORDER BY created_at DESC LIMIT $2", telegram_id, limit
        )
        return [_order_from_row(row) for row in rows]
