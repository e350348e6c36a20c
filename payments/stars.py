"""The Telegram Stars rail: the pre-checkout check, the credit of a successful payment (an
order's, or a month of the subscription), refunds, and the subscription's record (a Redis hash,
rebuilt from PostgreSQL's payments and events when Redis lost it). A payment neither store takes
is kept and retried in the background, and logged at once with its charge id. No Telegram imports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.plans import Order, OrderStatus, Payment, Plan, Rail
from domain.stars import (
    STARS_CURRENCY,
    SUBSCRIPTION_DAYS,
    Refusal,
    StarsPaid,
    StarsSubscription,
    order_refusal,
    parse_subscription_payload,
    subscription_refusal,
)
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from payments.checkout import PlanSource
from payments.ledger import PaymentLedger, PaymentsUnavailable
from payments.records import CreditOutcome, CreditResult
from services.subscribers import PG_FAILURES, StoreUnavailable

logger = logging.getLogger("alertbot.payments")

RETRY_MIN = 1.0
RETRY_MAX = 60.0
CANCELED_EVENT = "subscription_canceled"
# What a pre-checkout check may meet when the stores are down: it answers "try again".
_STORES_DOWN: tuple[type[BaseException], ...] = (StoreUnavailable, PaymentsUnavailable, ConnectionError, *PG_FAILURES)

Clock = Callable[[], datetime]


def subscription_key(telegram_id: int) -> str:
    return f"stars:subscription:{telegram_id}"


def _subscription_from_hash(telegram_id: int, stored: Mapping[str, str]) -> StarsSubscription | None:
    if not stored.get("charge_id"):
        return None
    expires = stored.get("expires_at")
    return StarsSubscription(
        telegram_id=telegram_id,
        plan_code=stored.get("plan_code", ""),
        charge_id=stored["charge_id"],
        last_charge_id=stored.get("last_charge_id") or stored["charge_id"],
        expires_at=datetime.fromtimestamp(float(expires), UTC) if expires else None,
        canceled=stored.get("canceled") == "1",
    )


def _subscription_to_hash(subscription: StarsSubscription) -> dict[str, str]:
    return {
        "plan_code": subscription.plan_code,
        "charge_id": subscription.charge_id,
        "last_charge_id": subscription.last_charge_id,
        "expires_at": repr(subscription.expires_at.timestamp()) if subscription.expires_at else "",
        "canceled": "1" if subscription.canceled else "0",
    }


class StarsPayments:
    def __init__(
        self,
        ledger: PaymentLedger,
        plans: PlanSource,
        redis: RedisManager,
        postgres: PostgresManager,
        *,
        retry_min: float = RETRY_MIN,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self.ledger = ledger
        self._plans = plans
        self.redis = redis
        self.postgres = postgres
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._kept: dict[str, asyncio.Task[None]] = {}  # charge id -> its retry

    @property
    def clock(self) -> Clock:
        return self.ledger.clock

    # ------------------------------------------------------------------ before the payment

    async def check(self, telegram_id: int, payload: str, currency: str, total_amount: int) -> Refusal | None:
        """Whether the payment Telegram asks about may go ahead (None) or why not."""
        subscription = parse_subscription_payload(payload)
        try:
            if subscription is not None:
                plan = await self._plan(subscription.plan_code)
                return subscription_refusal(subscription, plan, telegram_id, currency, total_amount)
            order = await self.ledger.order(payload)
        except _STORES_DOWN as exc:
            logger.warning("pre-checkout of user %s for %r: stores unavailable (%r)", telegram_id, payload, exc)
            return Refusal.UNAVAILABLE
        if order is None and not self.redis.available:
            # The ledger falls back to PostgreSQL, which may not have the order yet: no answer.
            return Refusal.UNAVAILABLE
        return order_refusal(order, telegram_id, currency, total_amount, self.clock())

    async def note_pre_checkout(
        self, telegram_id: int, payload: str, raw: Mapping[str, Any], refusal: Refusal | None
    ) -> None:
        """The query and its answer, for audit."""
        order_id = None if parse_subscription_payload(payload) else payload
        answer = {"answer": "ok" if refusal is None else refusal.value}
        await self._record_raw(None, "pre_checkout_query", {**raw, **answer}, order_id=order_id)

    # ------------------------------------------------------------------ the payment

    async def credit(self, paid: StarsPaid) -> CreditResult:
        """Credit a successful payment once and keep its raw event; the ledger posts the payer's
        receipt. Raises PaymentsUnavailable when neither store takes it (see `keep`)."""
        subscription = parse_subscription_payload(paid.payload)
        if subscription is not None:
            result = await self.ledger.credit(self._payment(paid, SUBSCRIPTION_DAYS, subscription.plan_code, None))
            await self._note_subscription(paid, subscription.plan_code)
            await self._record(paid, "successful_payment")
            return result
        result = await self._credit_order(paid)
        await self._record(paid, "successful_payment", order_id=paid.payload)
        return result

    async def _credit_order(self, paid: StarsPaid) -> CreditResult:
        # The order decides the days. One the ledger cannot read now (stores down) still goes to
        # the ledger's credit, which then raises rather than letting it pass for unknown.
        order = await self.ledger.order(paid.payload)
        if order is not None and order.status is OrderStatus.PAID:
            # A second payment for a settled order (two raced past the pre-checkout) bought the
            # same days: it adds them rather than being lost.
            return await self._credit_again(paid, order, "order already paid")
        days, plan_code = (order.days, order.plan_code) if order else (0, None)
        result = await self.ledger.credit(self._payment(paid, days, plan_code, paid.payload))
        order = result.order or order
        if result.outcome is not CreditOutcome.REJECTED:
            return result
        if order is None or order.telegram_id != paid.telegram_id:
            # Money was taken for an order nobody knows: nothing says what it buys.
            logger.error(
                "Stars payment %s of user %s (%s XTR) for order %r not credited (%s): refund or grant by hand",
                paid.charge_id,
                paid.telegram_id,
                paid.total_amount,
                paid.payload,
                result.reason,
            )
            return result
        return await self._credit_again(paid, order, result.reason)

    async def _credit_again(self, paid: StarsPaid, order: Order, reason: str) -> CreditResult:
        logger.warning(
            "Stars payment %s of user %s for order %s (%s): credited as %d days of %s",
            paid.charge_id,
            paid.telegram_id,
            order.id,
            reason,
            order.days,
            order.plan_code,
        )
        return await self.ledger.credit(self._payment(paid, order.days, order.plan_code, None))

    @staticmethod
    def _payment(paid: StarsPaid, days: int, plan_code: str | None, order_id: str | None) -> Payment:
        return Payment(
            rail=Rail.STARS,
            external_id=paid.charge_id,
            telegram_id=paid.telegram_id,
            days=days,
            amount=Decimal(paid.total_amount),
            currency=paid.currency or STARS_CURRENCY,
            order_id=order_id,
            plan_code=plan_code,
            raw=dict(paid.raw),
        )

    def keep(self, paid: StarsPaid) -> None:
        """Credit `paid` in the background until a store takes it (the ledger then posts the
        receipt). Logged at once with everything needed to credit it by hand."""
        logger.error(
            "Stars payment %s of user %s (%s %s, payload %r, raw %s) could not be credited now; "
            "retrying in the background",
            paid.charge_id,
            paid.telegram_id,
            paid.total_amount,
            paid.currency,
            paid.payload,
            paid.raw,
        )
        if paid.charge_id in self._kept:
            return
        task = asyncio.create_task(self._retry(paid), name=f"stars-credit-{paid.charge_id}")
        self._kept[paid.charge_id] = task
        task.add_done_callback(lambda _: self._kept.pop(paid.charge_id, None))

    async def _retry(self, paid: StarsPaid) -> None:
        delay = self.retry_min
        while True:
            await asyncio.sleep(delay)
            try:
                result = await self.credit(paid)
            except PaymentsUnavailable as exc:
                logger.warning("Stars payment %s still waits for the stores (%r)", paid.charge_id, exc)
                delay = min(self.retry_max, delay * 2)
                continue
            except Exception:  # noqa: BLE001 - whatever failed, the payment is still owed
                logger.exception("Stars payment %s failed to credit; retrying", paid.charge_id)
                delay = min(self.retry_max, delay * 2)
                continue
            logger.info("kept Stars payment %s of user %s now %s", paid.charge_id, paid.telegram_id, result.outcome)
            return

    @property
    def kept(self) -> list[str]:
        """Charge ids waiting for the stores."""
        return list(self._kept)

    async def close(self) -> None:
        """Stop retrying; what is still kept is logged again, charge id by charge id."""
        for charge_id, task in list(self._kept.items()):
            logger.error("Stars payment %s was not credited before shutdown: credit it by hand", charge_id)
            task.cancel()
        await asyncio.gather(*self._kept.values(), return_exceptions=True)
        self._kept.clear()

    # ------------------------------------------------------------------ refunds

    async def payer(self, charge_id: str) -> int | None:
        """Who made the Stars payment `charge_id`; None when the ledger does not know it."""
        return await self.ledger.payer(Rail.STARS, charge_id)

    async def refund(self, charge_id: str, *, refunded_by: int) -> int | None:
        """After Telegram returned the Stars: the payment marked refunded and its payer's plan
        ended; the payer's id, None when the payment is unknown."""
        owner = await self.ledger.refund(Rail.STARS, charge_id)
        if owner is not None:
            await self._record_raw(charge_id, "refund", {"refunded_by": refunded_by, "telegram_id": owner})
        return owner

    # ------------------------------------------------------------------ the monthly subscription

    async def subscription(self, telegram_id: int) -> StarsSubscription | None:
        """The user's latest Stars subscription (live or not), None when they never had one."""
        try:
            stored = await self.redis.hgetall(subscription_key(telegram_id))
        except ConnectionError:
            stored = {}
        found = _subscription_from_hash(telegram_id, stored)
        if found is not None:
            return found
        found = await self._subscription_from_pg(telegram_id)
        if found is not None:
            await self._save_subscription(found)
        return found

    async def canceled(self, subscription: StarsSubscription, *, by: int) -> StarsSubscription:
        """Telegram took the cancellation: no renewal; the paid month runs to its end."""
        done = StarsSubscription(
            subscription.telegram_id,
            subscription.plan_code,
            subscription.charge_id,
            subscription.last_charge_id,
            subscription.expires_at,
            canceled=True,
        )
        await self._save_subscription(done)
        await self._record_raw(subscription.charge_id, CANCELED_EVENT, {"telegram_id": done.telegram_id, "by": by})
        logger.info("Stars subscription %s of user %s cancelled", subscription.charge_id, subscription.telegram_id)
        return done

    async def _note_subscription(self, paid: StarsPaid, plan_code: str) -> StarsSubscription:
        known = await self.subscription(paid.telegram_id)
        # The first payment names a new subscription; a renewal keeps the one it renews.
        fresh = paid.is_first_recurring or known is None or known.plan_code != plan_code
        record = StarsSubscription(
            telegram_id=paid.telegram_id,
            plan_code=plan_code,
            charge_id=paid.charge_id if fresh or known is None else known.charge_id,
            last_charge_id=paid.charge_id,
            expires_at=paid.subscription_expires_at,
            canceled=False if fresh or known is None else known.canceled,
        )
        await self._save_subscription(record)
        return record

    async def _save_subscription(self, subscription: StarsSubscription) -> None:
        try:
            await self.redis.hset(
                subscription_key(subscription.telegram_id), mapping=_subscription_to_hash(subscription)
            )
        except ConnectionError as exc:
            logger.warning("could not keep the subscription of %s in Redis (%r)", subscription.telegram_id, exc)

    async def _subscription_from_pg(self, telegram_id: int) -> StarsSubscription | None:
        """Rebuilt from the payments the subscription made and the cancellations the bot sent."""
        try:
            rows = await self.postgres.fetch(
                """
                SELECT p.external_id, p.raw, pl.code AS plan_code
                  FROM payments p LEFT JOIN plans pl ON pl.id = p.plan_id
                 WHERE p.telegram_id = $1 AND p.rail = 'stars' AND (p.raw ->> 'is_recurring')::boolean
                 ORDER BY p.created_at DESC, p.id DESC
                 LIMIT 50
                """,
                telegram_id,
            )
            if not rows:
                return None
            latest = rows[0]
            first = next((row for row in rows if (row["raw"] or {}).get("is_first_recurring")), latest)
            canceled = await self.postgres.fetchval(
                "SELECT EXISTS (SELECT 1 FROM payment_events WHERE rail = 'stars' AND kind = $2 AND external_id = $1)",
                first["external_id"],
                CANCELED_EVENT,
            )
        except PG_FAILURES as exc:
            logger.warning("cannot read the subscription of %s from PostgreSQL (%r)", telegram_id, exc)
            return None
        expires = (latest["raw"] or {}).get("subscription_expiration_date")
        return StarsSubscription(
            telegram_id=telegram_id,
            plan_code=latest["plan_code"] or "",
            charge_id=first["external_id"],
            last_charge_id=latest["external_id"],
            expires_at=datetime.fromtimestamp(int(expires), UTC) if expires else None,
            canceled=bool(canceled),
        )

    # ------------------------------------------------------------------ internals

    async def _plan(self, code: str) -> Plan | None:
        return next((plan for plan in await self._plans() if plan.code == code), None)

    async def _record(self, paid: StarsPaid, kind: str, *, order_id: str | None = None) -> None:
        await self._record_raw(paid.charge_id, kind, {"telegram_id": paid.telegram_id, **paid.raw}, order_id=order_id)

    async def _record_raw(
        self, charge_id: str | None, kind: str, raw: Mapping[str, Any], *, order_id: str | None = None
    ) -> None:
        """The event for audit; never worth failing a credit, refund or cancellation for."""
        try:
            await self.ledger.record_event(Rail.STARS, charge_id, kind, raw, order_id=order_id)
        except PaymentsUnavailable as exc:
            logger.warning("Stars %s event of %s not kept (%r): %s", kind, charge_id, exc, dict(raw))
