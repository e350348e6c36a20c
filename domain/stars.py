"""The Telegram Stars rail's rules: what an invoice's payload says, which payment may go ahead,
and what a payment of a monthly subscription buys.

No I/O: payments/stars.py applies these to the ledger; the bot turns Telegram's objects into
`StarsPaid`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from domain.plans import OPEN_STATUSES, STARS_SUBSCRIPTION_SECONDS, Order, Plan, Rail

STARS_CURRENCY = "XTR"
# Telegram refuses a subscription dearer than this many Stars a period.
MAX_SUBSCRIPTION_STARS = 10_000
SUBSCRIPTION_DAYS = STARS_SUBSCRIPTION_SECONDS // 86400
_SUBSCRIPTION_PREFIX = "sub"


class Refusal(StrEnum):
    """Why a pre-checkout query is answered "no"; each has a text for the user."""

    UNKNOWN = "unknown"  # no such order or plan
    NOT_YOURS = "not_yours"
    CLOSED = "closed"  # paid, cancelled or expired
    AMOUNT = "amount"  # the invoice's amount or currency is not the order's
    UNAVAILABLE = "unavailable"  # the stores could not say in time


@dataclass(frozen=True)
class SubscriptionPayload:
    """An invoice link's payload for the monthly subscription: whose and which plan, not an order
    (renewals arrive for months with no order behind them)."""

    plan_code: str
    telegram_id: int

    def encode(self) -> str:
        return f"{_SUBSCRIPTION_PREFIX}:{self.plan_code}:{self.telegram_id}"


def parse_subscription_payload(payload: str) -> SubscriptionPayload | None:
    """`sub:month:42` -> SubscriptionPayload("month", 42); anything else (an order id) -> None."""
    kind, _, rest = payload.partition(":")
    code, _, user = rest.rpartition(":")
    if kind != _SUBSCRIPTION_PREFIX or not code or not user.isdecimal():
        return None
    return SubscriptionPayload(code, int(user))


def offers_subscription(plan: Plan) -> bool:
    """The monthly auto-renewing plan: a Stars subscription always lasts 30 days."""
    return (
        plan.days == SUBSCRIPTION_DAYS and plan.price_stars is not None and plan.price_stars <= MAX_SUBSCRIPTION_STARS
    )


def order_refusal(
    order: Order | None, telegram_id: int, currency: str, total_amount: int, now: datetime
) -> Refusal | None:
    """Why the Stars payment of `order` must not go ahead, or None when it may."""
    if order is None or order.rail is not Rail.STARS:
        return Refusal.UNKNOWN
    if order.telegram_id != telegram_id:
        return Refusal.NOT_YOURS
    if order.status not in OPEN_STATUSES or now >= order.expires_at:
        return Refusal.CLOSED
    if currency != STARS_CURRENCY or Decimal(total_amount) != order.shortfall:
        return Refusal.AMOUNT
    return None


def subscription_refusal(
    payload: SubscriptionPayload, plan: Plan | None, telegram_id: int, currency: str, total_amount: int
) -> Refusal | None:
    """Why the first payment of a subscription must not go ahead, or None when it may."""
    if plan is None or not offers_subscription(plan):
        return Refusal.UNKNOWN
    if payload.telegram_id != telegram_id:
        return Refusal.NOT_YOURS
    if currency != STARS_CURRENCY or total_amount != plan.price_stars:
        return Refusal.AMOUNT
    return None


@dataclass(frozen=True)
class StarsPaid:
    """A successful_payment as the rail needs it (Telegram's object, without Telegram)."""

    telegram_id: int
    charge_id: str  # telegram_payment_charge_id: what a refund names
    payload: str
    currency: str
    total_amount: int
    is_recurring: bool = False
    is_first_recurring: bool = False
    subscription_expires_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StarsSubscription:
    """A user's monthly Stars subscription as the bot knows it."""

    telegram_id: int
    plan_code: str
    # The charge of its first payment: how Telegram names the subscription.
    charge_id: str
    last_charge_id: str
    expires_at: datetime | None
    canceled: bool = False

    def renews(self, now: datetime) -> bool:
        """Telegram will charge it again at `expires_at`."""
        return not self.canceled and self.is_live(now)

    def is_live(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at > now
