"""What the ledger answers and what its queue carries to PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.plans import Order, Payment


class CreditOutcome(StrEnum):
    CREDITED = "credited"
    PARTIAL = "partial"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class CreditResult:
    outcome: CreditOutcome
    plan_end: datetime | None = None
    order: Order | None = None
    reason: str = ""


def payment_entry(payment: Payment) -> dict[str, Any]:
    return {
        "rail": payment.rail.value,
        "external_id": payment.external_id,
        "telegram_id": payment.telegram_id,
        "days": payment.days,
        "amount": str(payment.amount),
        "currency": payment.currency,
        "order_id": payment.order_id,
        "plan_code": payment.plan_code,
        "granted_by": payment.granted_by,
        "raw": payment.raw,
    }


class NoticeKind(StrEnum):
    """What the payments side tells a user; the bot words each in the user's language."""

    RECEIPT = "receipt"  # plan, amount, currency, plan_end
    PARTIAL = "partial"  # paid, missing, currency
    REJECTED = "rejected"  # reason
    REMINDER_3D = "reminder_3d"  # plan_end
    REMINDER_1D = "reminder_1d"  # plan_end
    PLAN_ENDED = "plan_ended"
    REFERRAL_REWARD = "referral_reward"  # days, plan_end


@dataclass(frozen=True)
class PaymentNotice:
    telegram_id: int
    kind: NoticeKind
    values: Mapping[str, str] = field(default_factory=dict)


Notify = Callable[[PaymentNotice], Awaitable[None]]
