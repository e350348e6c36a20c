"""Buying a plan: which rails a plan is offered on, and an order started on one of them with what
its screen shows.

No Telegram imports: the bot turns a `Checkout` into messages (for Stars, an invoice). Stars is
offered wherever the plan has a Stars price. The SOL and NOWPayments rails come in as callables,
and a rail without its callable (no SOL_RECEIVER, no NOWPAYMENTS_API_KEY) is not offered:
- SOL: order -> `SolPaymentRequest` (the solana: URL, its QR code as PNG, the reference key the
  watcher finds the transfer by);
- NOWPayments: order -> the invoice URL.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from domain.plans import Order, Plan, Rail
from payments.ledger import ORDER_TTL, PaymentLedger
from services.subscribers import StoreUnavailable

logger = logging.getLogger("alertbot.payments")


@dataclass(frozen=True)
class SolPaymentRequest:
    url: str  # solana:<receiver>?amount=...&reference=...
    qr_png: bytes
    reference: str


SolRequester = Callable[[Order], Awaitable[SolPaymentRequest]]
InvoiceMaker = Callable[[Order], Awaitable[str]]
PlanSource = Callable[[], Awaitable[list[Plan]]]


@dataclass(frozen=True)
class Checkout:
    """An order and what its screen shows beside it."""

    order: Order
    plan: Plan
    pay_url: str | None = None  # SOL: the solana: URL; NOWPayments: the invoice page
    qr_png: bytes | None = None  # SOL: the QR code of `pay_url`


class UnknownPlan(LookupError):
    """No plan on offer has this code."""


class RailNotOffered(LookupError):
    """The plan is not sold on this rail, or the rail is not configured."""


class RailFailed(RuntimeError):
    """The rail could not make its payment request; the order was cancelled."""


class CheckoutService:
    def __init__(
        self,
        ledger: PaymentLedger,
        plans: PlanSource,
        *,
        sol: SolRequester | None = None,
        nowpayments: InvoiceMaker | None = None,
        order_ttl: Mapping[Rail, timedelta] | None = None,
    ) -> None:
        self.ledger = ledger
        self._plans = plans
        self.sol = sol
        self.nowpayments = nowpayments
        # How long an order waits for its payment, per rail (the ledger's default otherwise).
        self.order_ttl = dict(order_ttl or {})

    def rails(self, plan: Plan) -> list[Rail]:
        """The rails the plan is offered on, in the order the buttons show them."""
        configured = {Rail.STARS: True, Rail.SOL: self.sol is not None, Rail.NOWPAYMENTS: self.nowpayments is not None}
        return [rail for rail in plan.rails() if configured.get(rail, False)]

    async def plans(self) -> list[Plan]:
        """The plans on offer (raises StoreUnavailable when they cannot be read)."""
        return await self._plans()

    async def plan(self, code: str) -> Plan | None:
        return next((plan for plan in await self._plans() if plan.code == code), None)

    async def start(self, telegram_id: int, plan_code: str, rail: Rail) -> Checkout:
        """A new open order for the plan on `rail`, with the rail's payment request made.

        Raises UnknownPlan, RailNotOffered, RailFailed, or the ledger's PaymentsUnavailable.
        """
        plan = await self.plan(plan_code)
        if plan is None:
            raise UnknownPlan(plan_code)
        if rail not in self.rails(plan):
            raise RailNotOffered(f"plan {plan_code} is not offered on {rail}")
        order = await self.ledger.create_order(telegram_id, plan, rail, ttl=self.order_ttl.get(rail, ORDER_TTL))
        try:
            return await self._request(order, plan)
        except Exception as exc:
            # The order cannot be paid without its request: nobody should wait on it.
            logger.warning("order %s: %s could not make its payment request (%r); cancelled", order.id, rail, exc)
            await self.ledger.cancel_order(order.id, telegram_id)
            raise RailFailed(f"{rail} could not make the payment request of order {order.id}") from exc

    async def _request(self, order: Order, plan: Plan) -> Checkout:
        if order.rail is Rail.SOL and self.sol is not None:
            request = await self.sol(order)
            saved = await self.ledger.update_order(order.id, reference=request.reference, pay_url=request.url)
            return Checkout(saved or order, plan, request.url, request.qr_png)
        if order.rail is Rail.NOWPAYMENTS and self.nowpayments is not None:
            url = await self.nowpayments(order)
            saved = await self.ledger.update_order(order.id, pay_url=url)
            return Checkout(saved or order, plan, url)
        return Checkout(order, plan)

    async def checkout(self, order_id: str, telegram_id: int) -> Checkout | None:
        """The user's order as its screen shows it now; None when it is not theirs."""
        order = await self.ledger.order(order_id)
        if order is None or order.telegram_id != telegram_id:
            return None
        return Checkout(order, await self._plan_of(order), order.pay_url)

    async def cancel(self, order_id: str, telegram_id: int) -> Checkout | None:
        """The user's open order, cancelled; None when it is not theirs or no longer open."""
        order = await self.ledger.cancel_order(order_id, telegram_id)
        if order is None:
            return None
        return Checkout(order, await self._plan_of(order), order.pay_url)

    async def _plan_of(self, order: Order) -> Plan:
        """The order's plan; as the order recorded it when the plan is no longer on offer."""
        try:
            plan = await self.plan(order.plan_code)
        except StoreUnavailable:
            plan = None
        return plan or Plan(order.plan_code, order.plan_code, order.days, None, None, None)
