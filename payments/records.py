"""What the ledger answers and what its queue carries to PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
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
