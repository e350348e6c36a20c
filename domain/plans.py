"""Plans, orders and payments as the rules see them, and the arithmetic of a paid period.

No I/O: the ledger (payments/ledger.py) stores these records; each rail (Stars, SOL,
NOWPayments) turns what its gateway says into a `Payment`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

LAMPORTS_PER_SOL = 1_000_000_000
# Telegram Stars subscriptions renew every 30 days; Telegram accepts no other period.
STARS_SUBSCRIPTION_SECONDS = 30 * 24 * 3600


class Rail(StrEnum):
    """How a plan was paid for, or given."""

    STARS = "stars"
    SOL = "sol"
    NOWPAYMENTS = "nowpayments"
    GRANT = "grant"  # an admin's /grant
    TRIAL = "trial"  # the one free trial of a user
    REFERRAL = "referral"  # days for the inviter when an invitee first pays


# The rails a user pays on, with the currency each prices a plan in.
PAID_RAILS: dict[Rail, str] = {Rail.STARS: "XTR", Rail.SOL: "SOL", Rail.NOWPAYMENTS: "USD"}


class OrderStatus(StrEnum):
    OPEN = "open"  # waiting for the payment
    PARTIAL = "partial"  # some of it arrived; the rest completes it
    PAID = "paid"
    CANCELLED = "cancelled"  # by the user
    EXPIRED = "expired"  # nothing (enough) came before expires_at


OPEN_STATUSES = frozenset({OrderStatus.OPEN, OrderStatus.PARTIAL})


@dataclass(frozen=True)
class Plan:
    code: str
    title: str
    days: int
    price_stars: int | None
    price_sol: Decimal | None
    price_usd: Decimal | None

    def price(self, rail: Rail) -> Decimal | None:
        """The plan's price on `rail` in that rail's currency, None when not sold there."""
        if rail is Rail.STARS:
            return None if self.price_stars is None else Decimal(self.price_stars)
        if rail is Rail.SOL:
            return self.price_sol
        if rail is Rail.NOWPAYMENTS:
            return self.price_usd
        return None

    def rails(self) -> list[Rail]:
        return [rail for rail in PAID_RAILS if self.price(rail) is not None]


@dataclass(frozen=True)
class Order:
    """A user's intent to buy a plan on one rail, for one amount, until `expires_at`."""

    id: str
    telegram_id: int
    plan_code: str
    days: int
    rail: Rail
    amount: Decimal
    currency: str
    status: OrderStatus
    created_at: datetime
    expires_at: datetime
    paid_amount: Decimal = Decimal(0)
    # SOL: the Solana Pay reference key; NOWPayments: the invoice id; Stars: unused.
    reference: str | None = None
    pay_url: str | None = None

    def is_open(self, now: datetime) -> bool:
        return self.status in OPEN_STATUSES and now < self.expires_at

    @property
    def shortfall(self) -> Decimal:
        return max(Decimal(0), self.amount - self.paid_amount)


@dataclass(frozen=True)
class Payment:
    """Money that arrived (or a grant), as one rail reports it; credited at most once per
    (rail, external_id)."""

    rail: Rail
    # stars: telegram_payment_charge_id; sol: the transaction signature; nowpayments:
    # payment_id; grant/trial: an id made up where it happens.
    external_id: str
    telegram_id: int
    days: int
    amount: Decimal
    currency: str
    order_id: str | None = None
    plan_code: str | None = None
    granted_by: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def paid_period(current_end: datetime | None, now: datetime, days: int) -> tuple[datetime, datetime]:
    """(start, end) of `days` bought at `now`: from the later of now and the current plan's end,
    so days add up and never overlap."""
    if days <= 0:
        raise ValueError("days must be positive")
    start = now if current_end is None or current_end < now else current_end
    return start, start + timedelta(days=days)


def covers(order: Order, paid: Decimal, tolerance: Decimal = Decimal(0)) -> bool:
    """Whether `paid` in the order's currency settles it (an underpayment within `tolerance` does)."""
    return paid + tolerance >= order.amount


def sol_to_lamports(amount: Decimal) -> int:
    return int((amount * LAMPORTS_PER_SOL).to_integral_value())


def lamports_to_sol(lamports: int) -> Decimal:
    return (Decimal(lamports) / LAMPORTS_PER_SOL).normalize()


# NOWPayments' payment statuses in the order a payment goes through them; an IPN never moves
# a payment back (they may arrive out of order). The final ones share the last rank.
NOWPAYMENTS_STATUS_RANK: dict[str, int] = {
    "waiting": 0,
    "confirming": 1,
    "confirmed": 2,
    "sending": 3,
    "partially_paid": 4,
    "finished": 5,
    "failed": 5,
    "refunded": 5,
    "expired": 5,
}


def moves_forward(current: str | None, new: str) -> bool:
    """Whether a NOWPayments status `new` may replace `current` (unknown statuses never do)."""
    if new not in NOWPAYMENTS_STATUS_RANK:
        return False
    if current is None or current not in NOWPAYMENTS_STATUS_RANK:
        return True
    return NOWPAYMENTS_STATUS_RANK[new] > NOWPAYMENTS_STATUS_RANK[current]


# Reminders before a plan ends: (kind, how long before the end it is due).
REMINDERS: tuple[tuple[str, timedelta], ...] = (
    ("3d", timedelta(days=3)),
    ("1d", timedelta(days=1)),
    ("ended", timedelta(0)),
)


# An end notice later than this after the end (the bot was down for long) is not worth sending.
LATE_NOTICE = timedelta(days=2)


def due_reminder(plan_end: datetime, now: datetime, sent: frozenset[str], set_at: datetime | None = None) -> str | None:
    """The reminder to send now for a plan ending at `plan_end`, given those already sent for
    that end: only the latest one due, so a bot that was down two days sends "1d", not both.
    A reminder that was already due when the end was set (`set_at`: a 3-day trial has no "3 days
    left") is not sent."""
    if now >= plan_end + LATE_NOTICE:
        return None
    due = [kind for kind, before in REMINDERS if now >= plan_end - before]
    if not due or due[-1] in sent:
        return None
    latest = due[-1]
    if set_at is not None and plan_end - dict(REMINDERS)[latest] <= set_at:
        return None
    return latest
