"""The payments ledger: orders, credits, refunds, grants and trials, Redis first.

A credit is one Lua script: it marks (rail, external id) as seen, counts the amount towards the
order, extends the plan in the subscriber's Redis hash when the order is covered, and queues the
change for PostgreSQL on the `payments:pg` stream, all or nothing. The hot path reads the plan
from Redis, so a PostgreSQL outage delays the rows (payments/pg_writer.py writes them and
acknowledges after commit), never the plan. While Redis is down the ledger writes PostgreSQL
directly and puts the plans back into Redis when it returns.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from domain.plans import (
    NOWPAYMENTS_STATUS_RANK,
    OPEN_STATUSES,
    PAID_RAILS,
    Order,
    OrderStatus,
    Payment,
    Plan,
    Rail,
    moves_forward,
)
from managers.redis_manager import REDIS_ERRORS, RedisManager
from payments.notices import NoticeBoard
from payments.pg_writer import PG_FAILURES, PLAN_ENDS_KEY, PLAN_SET_AT_KEY, QUEUE_KEY, SEEN_KEY, PaymentsWriter
from payments.records import CreditOutcome, CreditResult, NoticeKind, PaymentNotice, payment_entry
from services.subscribers import SubscriberStore, UnknownSubscriber, epoch_text, from_epoch_text, subscriber_key

logger = logging.getLogger("alertbot.payments")

GATEWAY_STATUS_KEY = "payments:gateway_status"  # field "rail:external_id" -> latest status
ORDER_TTL = timedelta(minutes=60)
# Watchers keep looking this long past an order's end: a payment sent just in time may be
# confirmed a little later. Orders are marked expired after it.
ORDER_GRACE = timedelta(minutes=10)
# An order's Redis hash outlives the order by this long, for late payments and support.
ORDER_KEEP_SECONDS = 90 * 24 * 3600
# Amounts are counted in Redis as integers of this many units per currency unit (lamports for SOL).
UNITS = 10**9
SECONDS_PER_DAY = 86400


Clock = Callable[[], datetime]


class PaymentsUnavailable(RuntimeError):
    """Neither Redis nor PostgreSQL could take the change; nothing was changed."""


def order_key(order_id: str) -> str:
    return f"order:{order_id}"


def open_orders_key(rail: Rail) -> str:
    return f"orders:open:{rail.value}"


def reference_key(rail: Rail, reference: str) -> str:
    return f"orders:ref:{rail.value}:{reference}"


def seen_field(rail: Rail, external_id: str) -> str:
    return f"{rail.value}:{external_id}"


def to_units(amount: Decimal) -> int:
    return int((amount * UNITS).to_integral_value())


def from_units(units: int | str) -> Decimal:
    return (Decimal(int(units)) / UNITS).normalize()


def _moment(raw: str | float) -> datetime:
    return datetime.fromtimestamp(float(raw), UTC)


def new_order_id() -> str:
    # Short enough for callback data and invoice payloads, unguessable enough not to be tried.
    return secrets.token_urlsafe(9)


def order_to_hash(order: Order) -> dict[str, str]:
    return {
        "telegram_id": str(order.telegram_id),
        "plan_code": order.plan_code,
        "days": str(order.days),
        "rail": order.rail.value,
        "amount_units": str(to_units(order.amount)),
        "currency": order.currency,
        "status": order.status.value,
        "created_at": epoch_text(order.created_at),
        "expires_at": epoch_text(order.expires_at),
        "paid_units": str(to_units(order.paid_amount)),
        "reference": order.reference or "",
        "pay_url": order.pay_url or "",
    }


def order_from_hash(order_id: str, stored: Mapping[str, str]) -> Order:
    return Order(
        id=order_id,
        telegram_id=int(stored["telegram_id"]),
        plan_code=stored["plan_code"],
        days=int(stored["days"]),
        rail=Rail(stored["rail"]),
        amount=from_units(stored["amount_units"]),
        currency=stored["currency"],
        status=OrderStatus(stored["status"]),
        created_at=_moment(stored["created_at"]),
        expires_at=_moment(stored["expires_at"]),
        paid_amount=from_units(stored.get("paid_units") or 0),
        reference=stored.get("reference") or None,
        pay_url=stored.get("pay_url") or None,
    )


def order_entry(order: Order) -> str:
    """An order as the queue carries it to PostgreSQL."""
    return json.dumps(
        {
            "id": order.id,
            "telegram_id": order.telegram_id,
            "plan_code": order.plan_code,
            "days": order.days,
            "rail": order.rail.value,
            "amount": str(order.amount),
            "currency": order.currency,
            "status": order.status.value,
            "created_at": order.created_at.isoformat(),
            "expires_at": order.expires_at.isoformat(),
            "paid_amount": str(order.paid_amount),
            "reference": order.reference,
            "pay_url": order.pay_url,
        }
    )


# Saves an order and queues it for PostgreSQL; a new reference must not be taken.
# KEYS: order hash, open zset, reference key (or the order key again), queue.
# ARGV: id, expires epoch, keep seconds, entry json, then the hash's field/value pairs.
_SAVE_ORDER_LUA = """
if KEYS[3] ~= KEYS[1] then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[3])
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'open' or status == 'partial' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('XADD', KEYS[4], '*', 'kind', 'order', 'data', ARGV[4])
return 1
"""

# The credit: all or nothing, reads before writes.
# KEYS: seen hash, subscriber hash, order hash (or the seen hash when no order), open zset, queue,
#       plan ends zset, plan set-at hash.
# ARGV: seen field, now epoch, days, amount units, tolerance units, order id ('' none),
#       telegram id, payment json.
# Reply: {outcome, reason, plan start, plan end, paid units, days}.
_CREDIT_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return {'duplicate', '', '', '', '', ''}
end
local now = tonumber(ARGV[2])
local days = tonumber(ARGV[3])
local paid = 0
local outcome = 'credited'
local order_id = ARGV[6]
if order_id ~= '' then
  local o = redis.call('HMGET', KEYS[3], 'telegram_id', 'status', 'amount_units', 'paid_units', 'days')
  if not o[1] then return {'rejected', 'unknown order', '', '', '', ''} end
  if o[1] ~= ARGV[7] then return {'rejected', 'order of another user', '', '', '', ''} end
  if o[2] == 'paid' then return {'rejected', 'order already paid', '', '', '', ''} end
  paid = tonumber(o[4] or '0') + tonumber(ARGV[4])
  days = tonumber(o[5])
  if paid + tonumber(ARGV[5]) < tonumber(o[3]) then
    outcome = 'partial'
    redis.call('HSET', KEYS[3], 'paid_units', string.format('%d', paid), 'status', 'partial')
  else
    redis.call('HSET', KEYS[3], 'paid_units', string.format('%d', paid), 'status', 'paid')
    redis.call('ZREM', KEYS[4], order_id)
  end
end
local start_at = ''
local end_at = ''
if outcome == 'credited' then
  local current = tonumber(redis.call('HGET', KEYS[2], 'plan_expires_at') or '')
  local start = now
  if current and current > now then start = current end
  local finish = start + days * 86400
  redis.call('HSET', KEYS[2], 'plan_expires_at', string.format('%.6f', finish))
  redis.call('ZADD', KEYS[6], finish, ARGV[7])
  redis.call('HSET', KEYS[7], ARGV[7], ARGV[2])
  start_at = string.format('%.6f', start)
  end_at = string.format('%.6f', finish)
end
redis.call('HSET', KEYS[1], ARGV[1], outcome .. '|' .. ARGV[7])
redis.call('XADD', KEYS[5], '*', 'kind', 'payment', 'data', ARGV[8], 'outcome', outcome,
  'plan_start', start_at, 'plan_end', end_at, 'paid_units', string.format('%d', paid),
  'days', string.format('%d', days))
return {outcome, '', start_at, end_at, string.format('%d', paid), string.format('%d', days)}
"""

# Ends a plan now and queues the revocation. KEYS: subscriber hash, queue, plan ends zset.
# ARGV: now, json, telegram id.
_REVOKE_LUA = """
local current = tonumber(redis.call('HGET', KEYS[1], 'plan_expires_at') or '')
if not current or current <= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'plan_expires_at', '')
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'kind', 'revoke', 'data', ARGV[2])
return 1
"""

# Stores a gateway status only if it moves forward. KEYS: status hash, queue.
# ARGV: field, new status, json, then the statuses in rank order as "name=rank" pairs.
_ADVANCE_LUA = """
local ranks = {}
for i = 4, #ARGV do
  local name, rank = string.match(ARGV[i], '^(.-)=(%d+)$')
  ranks[name] = tonumber(rank)
end
local new = ranks[ARGV[2]]
if not new then return 0 end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and ranks[current] and ranks[current] >= new then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'kind', 'gateway_status', 'data', ARGV[3])
return 1
"""


Notify = Callable[[int], Awaitable[None]]


class PaymentLedger:
    """Every change of an order or a plan goes through here (see the module doc)."""

    def __init__(
        self,
        redis: RedisManager,
        writer: PaymentsWriter,
        store: SubscriberStore,
        *,
        notices: NoticeBoard | None = None,
        referral_days: int = 0,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.redis = redis
        self.writer = writer
        self.store = store
        self.notices = notices or NoticeBoard(redis)
        self.referral_days = referral_days
        self.clock = clock
        self._scripts: dict[str, Any] = {}
        # Payments handled since start, by (rail, outcome: credited, partial, duplicate, rejected,
        # refunded): for /metrics.
        self.counts: Counter[tuple[str, ...]] = Counter()
        writer.on_paid = self._reward_referrer

    # ------------------------------------------------------------------ orders

    async def create_order(
        self,
        telegram_id: int,
        plan: Plan,
        rail: Rail,
        *,
        reference: str | None = None,
        pay_url: str | None = None,
        ttl: timedelta = ORDER_TTL,
    ) -> Order:
        price = plan.price(rail)
        if price is None:
            raise ValueError(f"plan {plan.code} is not sold on {rail}")
        now = self.clock()
        order = Order(
            id=new_order_id(),
            telegram_id=telegram_id,
            plan_code=plan.code,
            days=plan.days,
            rail=rail,
            amount=price,
            currency=PAID_RAILS[rail],
            status=OrderStatus.OPEN,
            created_at=now,
            expires_at=now + ttl,
            reference=reference,
            pay_url=pay_url,
        )
        await self._save_order(order)
        logger.info(
            "order %s created: user %s plan %s on %s for %s %s, until %s",
            order.id,
            telegram_id,
            plan.code,
            rail,
            order.amount,
            order.currency,
            order.expires_at.isoformat(),
        )
        return order

    async def update_order(
        self, order_id: str, *, reference: str | None = None, pay_url: str | None = None
    ) -> Order | None:
        order = await self.order(order_id)
        if order is None:
            return None
        changed = replace(
            order, reference=reference or order.reference, pay_url=pay_url if pay_url is not None else order.pay_url
        )
        await self._save_order(changed)
        return changed

    async def order(self, order_id: str) -> Order | None:
        try:
            stored = await self._redis_hgetall(order_key(order_id))
        except REDIS_ERRORS:
            return await self.writer.order(order_id)
        if not stored:
            return await self.writer.order(order_id)
        return order_from_hash(order_id, stored)

    async def order_by_reference(self, rail: Rail, reference: str) -> Order | None:
        try:
            async with self.redis.guarded() as client:
                order_id = await client.get(reference_key(rail, reference))
        except REDIS_ERRORS:
            return await self.writer.order_by_reference(rail, reference)
        if order_id is None:
            return await self.writer.order_by_reference(rail, reference)
        return await self.order(str(order_id))

    async def open_orders(self, rail: Rail, grace: timedelta = ORDER_GRACE) -> list[Order]:
        """Orders on `rail` still waiting for (the rest of) their payment, or whose time ran out
        less than `grace` ago, soonest to expire first."""
        since = self.clock() - grace
        try:
            async with self.redis.guarded() as client:
                ids = await client.zrangebyscore(open_orders_key(rail), since.timestamp(), "+inf")
        except REDIS_ERRORS:
            return await self.writer.open_orders(rail, since)
        orders = [await self.order(str(order_id)) for order_id in ids]
        return [order for order in orders if order is not None and order.is_open(since)]

    async def user_orders(self, telegram_id: int, limit: int = 5) -> list[Order]:
        return await self.writer.user_orders(telegram_id, limit)

    async def cancel_order(self, order_id: str, telegram_id: int) -> Order | None:
        """The user's open order, cancelled; None when it is not theirs or no longer open."""
        order = await self.order(order_id)
        if order is None or order.telegram_id != telegram_id or order.status not in OPEN_STATUSES:
            return None
        cancelled = replace(order, status=OrderStatus.CANCELLED)
        await self._save_order(cancelled)
        logger.info("order %s cancelled by user %s", order_id, telegram_id)
        return cancelled

    async def expire_orders(self, grace: timedelta = ORDER_GRACE) -> list[Order]:
        """Orders whose time ran out more than `grace` ago with nothing (enough) paid: marked
        expired, returned."""
        until = self.clock() - grace
        expired: list[Order] = []
        for rail in (Rail.STARS, Rail.SOL, Rail.NOWPAYMENTS):
            try:
                async with self.redis.guarded() as client:
                    ids = await client.zrangebyscore(open_orders_key(rail), "-inf", until.timestamp())
            except REDIS_ERRORS:
                return expired
            for order_id in ids:
                order = await self.order(str(order_id))
                if order is None or order.status not in OPEN_STATUSES:
                    async with self.redis.guarded() as client:
                        await client.zrem(open_orders_key(rail), str(order_id))
                    continue
                ended = replace(order, status=OrderStatus.EXPIRED)
                await self._save_order(ended)
                logger.info(
                    "order %s expired (paid %s of %s %s)", order.id, order.paid_amount, order.amount, order.currency
                )
                expired.append(ended)
        return expired

    # ------------------------------------------------------------------ money

    async def credit(self, payment: Payment, *, tolerance: Decimal = Decimal(0)) -> CreditResult:
        """Credit `payment` once (see the module doc). Raises PaymentsUnavailable when neither
        store takes it."""
        if await self.writer.known(payment.rail, payment.external_id):
            await self._mark_seen(payment)
            self.counts[(payment.rail.value, CreditOutcome.DUPLICATE.value)] += 1
            return CreditResult(CreditOutcome.DUPLICATE)
        try:
            result = await self._credit_in_redis(payment, tolerance)
        except REDIS_ERRORS as exc:
            logger.warning("Redis is down (%r): crediting %s %s in PostgreSQL", exc, payment.rail, payment.external_id)
            try:
                result = await self.writer.credit_directly(payment, tolerance, self.clock())
            except PG_FAILURES as pg_exc:
                raise PaymentsUnavailable(f"no store took {payment.rail} {payment.external_id}: {pg_exc!r}") from pg_exc
        self._log_credit(payment, result)
        self.counts[(payment.rail.value, result.outcome.value)] += 1
        if result.outcome is CreditOutcome.REJECTED:
            # Money that bought nothing: its record stays for support to settle by hand.
            await self.record_event(
                payment.rail, payment.external_id, f"rejected: {result.reason}", payment.raw, order_id=payment.order_id
            )
        if result.outcome is CreditOutcome.CREDITED:
            await self.store.plan_changed(payment.telegram_id)
        if payment.rail in PAID_RAILS:
            await self._tell(payment, result)
        return result

    async def _tell(self, payment: Payment, result: CreditResult) -> None:
        """The payer hears what became of their money: a receipt, the shortfall, or why not."""
        order = result.order
        if result.outcome is CreditOutcome.CREDITED and result.plan_end is not None:
            paid = order.paid_amount if order else payment.amount
            values = {
                "plan": order.plan_code if order else payment.plan_code or "",
                "days": str(order.days if order else payment.days),
                "amount": f"{paid.normalize():f}",
                "currency": payment.currency,
                "plan_end": result.plan_end.isoformat(),
            }
            await self.notices.post(PaymentNotice(payment.telegram_id, NoticeKind.RECEIPT, values))
        elif result.outcome is CreditOutcome.PARTIAL and order is not None:
            values = {
                "paid": f"{order.paid_amount.normalize():f}",
                "missing": f"{order.shortfall.normalize():f}",
                "currency": order.currency,
            }
            await self.notices.post(PaymentNotice(payment.telegram_id, NoticeKind.PARTIAL, values))
        elif result.outcome is CreditOutcome.REJECTED:
            await self.notices.post(PaymentNotice(payment.telegram_id, NoticeKind.REJECTED, {"reason": result.reason}))

    async def _reward_referrer(self, invitee: int) -> None:
        """The inviter's days when the user they invited pays (once per invitee, ever)."""
        if self.referral_days <= 0:
            return
        inviter = await self.writer.referrer(invitee)
        if inviter is None:
            return
        reward = Payment(
            rail=Rail.REFERRAL,
            external_id=str(invitee),
            telegram_id=inviter,
            days=self.referral_days,
            amount=Decimal(0),
            currency="",
        )
        result = await self.credit(reward)
        if result.outcome is CreditOutcome.CREDITED and result.plan_end is not None:
            values = {"days": str(self.referral_days), "plan_end": result.plan_end.isoformat()}
            await self.notices.post(PaymentNotice(inviter, NoticeKind.REFERRAL_REWARD, values))

    async def grant(self, telegram_id: int, days: int, *, granted_by: int, rail: Rail = Rail.GRANT) -> datetime:
        """Add `days` to the user's plan (an admin's /grant, a referral reward); the new end.
        Raises UnknownSubscriber, or PaymentsUnavailable when no store takes it."""
        if await self.store.get(telegram_id) is None:
            raise UnknownSubscriber(telegram_id)
        payment = Payment(
            rail=rail,
            external_id=uuid.uuid4().hex,
            telegram_id=telegram_id,
            days=days,
            amount=Decimal(0),
            currency="",
            granted_by=granted_by,
        )
        result = await self.credit(payment)
        assert result.plan_end is not None  # a grant has no order, so it is always credited
        return result.plan_end

    async def start_trial(self, telegram_id: int, days: int) -> datetime | None:
        """The user's one free trial; None when they had it already."""
        payment = Payment(
            rail=Rail.TRIAL,
            external_id=str(telegram_id),
            telegram_id=telegram_id,
            days=days,
            amount=Decimal(0),
            currency="",
        )
        result = await self.credit(payment)
        return result.plan_end if result.outcome is CreditOutcome.CREDITED else None

    async def had_trial(self, telegram_id: int) -> bool:
        field = seen_field(Rail.TRIAL, str(telegram_id))
        try:
            async with self.redis.guarded() as client:
                if await client.hexists(SEEN_KEY, field):
                    return True
        except REDIS_ERRORS:
            pass
        return await self.writer.known(Rail.TRIAL, str(telegram_id))

    async def revoke(self, telegram_id: int, *, reason: str) -> bool:
        """End the user's plan now; False when they had none."""
        now = self.clock()
        entry = json.dumps({"telegram_id": telegram_id, "at": now.isoformat(), "reason": reason})
        try:
            revoked = bool(
                await self._run(
                    "revoke",
                    _REVOKE_LUA,
                    [subscriber_key(telegram_id), QUEUE_KEY, PLAN_ENDS_KEY],
                    [now.timestamp(), entry, telegram_id],
                )
            )
        except REDIS_ERRORS:
            try:
                revoked = await self.writer.revoke_directly(telegram_id, now, reason)
            except PG_FAILURES as exc:
                raise PaymentsUnavailable(f"cannot revoke {telegram_id}'s plan: {exc!r}") from exc
        if revoked:
            logger.info("plan of user %s ended: %s", telegram_id, reason)
            await self.store.plan_changed(telegram_id)
        return revoked

    async def payer(self, rail: Rail, external_id: str) -> int | None:
        """Who made the payment; None when it is unknown (a refund asks before returning money)."""
        return await self._owner(rail, external_id)

    async def refund(self, rail: Rail, external_id: str) -> int | None:
        """Mark the payment refunded and end its payer's plan; the payer's id, None when the
        payment is unknown."""
        owner = await self._owner(rail, external_id)
        if owner is None:
            return None
        await self._queue({"kind": "refund", "rail": rail.value, "external_id": external_id})
        await self.revoke(owner, reason=f"refund of {rail} {external_id}")
        self.counts[(rail.value, "refunded")] += 1
        logger.info("payment %s %s refunded", rail, external_id)
        return owner

    async def advance_status(self, rail: Rail, external_id: str, status: str) -> bool:
        """Keep a gateway's status for the payment only if it moves forward."""
        entry = json.dumps({"rail": rail.value, "external_id": external_id, "status": status})
        ranks = [f"{name}={rank}" for name, rank in NOWPAYMENTS_STATUS_RANK.items()]
        try:
            moved = await self._run(
                "advance",
                _ADVANCE_LUA,
                [GATEWAY_STATUS_KEY, QUEUE_KEY],
                [seen_field(rail, external_id), status, entry, *ranks],
            )
        except REDIS_ERRORS:
            current = await self.writer.gateway_status(rail, external_id)
            if not moves_forward(current, status):
                return False
            await self.writer.apply({"kind": "gateway_status", "data": entry})
            return True
        if moved:
            logger.info("payment %s %s is now %s", rail, external_id, status)
        return bool(moved)

    async def record_event(
        self, rail: Rail, external_id: str | None, kind: str, raw: Mapping[str, Any], *, order_id: str | None = None
    ) -> None:
        """Keep a gateway's raw event for audit (PostgreSQL, through the queue)."""
        data = {
            "rail": rail.value,
            "external_id": external_id,
            "order_id": order_id,
            "kind": kind,
            "raw": dict(raw),
            "at": self.clock().isoformat(),
        }
        await self._queue({"kind": "event", "data": json.dumps(data, default=str)})

    # ------------------------------------------------------------------ internals

    async def _credit_in_redis(self, payment: Payment, tolerance: Decimal) -> CreditResult:
        order_id = payment.order_id or ""
        reply = await self._run(
            "credit",
            _CREDIT_LUA,
            [
                SEEN_KEY,
                subscriber_key(payment.telegram_id),
                order_key(order_id) if order_id else SEEN_KEY,
                open_orders_key(payment.rail) if payment.rail in (Rail.STARS, Rail.SOL, Rail.NOWPAYMENTS) else SEEN_KEY,
                QUEUE_KEY,
                PLAN_ENDS_KEY,
                PLAN_SET_AT_KEY,
            ],
            [
                seen_field(payment.rail, payment.external_id),
                self.clock().timestamp(),
                payment.days,
                to_units(payment.amount),
                to_units(tolerance),
                order_id,
                payment.telegram_id,
                json.dumps(payment_entry(payment), default=str),
            ],
        )
        outcome, reason, _start, end = (str(part) for part in reply[:4])
        order = await self.order(order_id) if order_id else None
        return CreditResult(CreditOutcome(outcome), from_epoch_text(end), order, reason)

    async def _save_order(self, order: Order) -> None:
        keep = ORDER_KEEP_SECONDS
        fields = [item for pair in order_to_hash(order).items() for item in pair]
        ref = reference_key(order.rail, order.reference) if order.reference else order_key(order.id)
        try:
            saved = await self._run(
                "save_order",
                _SAVE_ORDER_LUA,
                [order_key(order.id), open_orders_key(order.rail), ref, QUEUE_KEY],
                [order.id, order.expires_at.timestamp(), keep, order_entry(order), *fields],
            )
        except REDIS_ERRORS:
            try:
                await self.writer.apply({"kind": "order", "data": order_entry(order)})
            except PG_FAILURES as exc:
                raise PaymentsUnavailable(f"cannot save order {order.id}: {exc!r}") from exc
            return
        if not saved:
            raise ValueError(f"reference {order.reference} belongs to another order")

    async def _queue(self, fields: Mapping[str, str]) -> None:
        try:
            async with self.redis.guarded() as client:
                await client.xadd(QUEUE_KEY, cast(Any, dict(fields)))
        except REDIS_ERRORS:
            try:
                await self.writer.apply(dict(fields))
            except PG_FAILURES as exc:
                raise PaymentsUnavailable(f"cannot keep {fields.get('kind')}: {exc!r}") from exc

    async def _owner(self, rail: Rail, external_id: str) -> int | None:
        try:
            async with self.redis.guarded() as client:
                seen = await client.hget(SEEN_KEY, seen_field(rail, external_id))
        except REDIS_ERRORS:
            seen = None
        if seen:
            return int(str(seen).split("|")[1])
        return await self.writer.payer(rail, external_id)

    async def _mark_seen(self, payment: Payment) -> None:
        try:
            async with self.redis.guarded() as client:
                await client.hsetnx(
                    SEEN_KEY, seen_field(payment.rail, payment.external_id), f"credited|{payment.telegram_id}"
                )
        except REDIS_ERRORS:
            pass

    async def _redis_hgetall(self, key: str) -> dict[str, str]:
        async with self.redis.guarded() as client:
            return cast(dict[str, str], await client.hgetall(key))

    async def _run(self, name: str, source: str, keys: list[str], args: list[Any]) -> Any:
        async with self.redis.guarded() as client:
            script = self._scripts.get(name)
            if script is None:
                script = self._scripts[name] = client.register_script(source)
            return await script(keys=keys, args=args, client=client)

    def _log_credit(self, payment: Payment, result: CreditResult) -> None:
        where = f"order {payment.order_id}" if payment.order_id else f"{payment.days} days"
        end = result.plan_end.isoformat() if result.plan_end else "-"
        logger.info(
            "payment %s %s of user %s (%s %s, %s): %s%s; plan until %s",
            payment.rail,
            payment.external_id,
            payment.telegram_id,
            payment.amount,
            payment.currency,
            where,
            result.outcome,
            f" ({result.reason})" if result.reason else "",
            end,
        )
