"""What the service does with a NOWPayments IPN: verify it, keep it, move the payment's status
forward, credit the plan on `finished`, tell the payer what is missing on `partially_paid`.

`NowPaymentsIpn` is the handler `build_http_app` takes for `POST /ipn/nowpayments`: it gets the
raw body and the `x-nowpayments-sig` header and returns the HTTP status to answer.

- A body whose signature does not verify: 401, and nothing is read or written.
- NOWPayments waits 3 s for the answer, so the store work is bounded (`deadline`); when it runs
  out or a store fails the answer is 503 and NOWPayments sends the IPN again. That is safe:
  the credit is idempotent on the payment id and a repeated status does not move.
- IPNs may arrive out of order: a status is stored only if it ranks above the stored one
  (domain.plans.moves_forward), and only `finished` credits, so a late `confirming` after
  `finished` changes nothing.
- A `finished` credits whatever status the payment had (a retry after a store failure between
  the credit and the status must still credit); the ledger's dedup on (rail, payment id) keeps
  it to once.
- Users are told through the callbacks the bot layer passes in, outside the answer's time
  bound; the records they get carry numbers, and the bot words them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from domain.plans import Order, Payment, Rail
from payments.ledger import PaymentLedger
from payments.nowpayments import IpnRecord, parse_ipn, underpayment, verify_ipn
from payments.records import CreditOutcome, CreditResult

logger = logging.getLogger("alertbot.nowpayments")

__all__ = ["DEADLINE_SECONDS", "NowPaymentsIpn", "Underpaid"]

# NOWPayments gives up on an answer after 3 s; leave room for the network.
DEADLINE_SECONDS: Final[float] = 2.5
FINISHED: Final[str] = "finished"
PARTIALLY_PAID: Final[str] = "partially_paid"


@dataclass(frozen=True)
class Underpaid:
    """A payment NOWPayments saw as short: `missing` more `currency` completes it."""

    telegram_id: int
    order_id: str
    payment_id: str
    missing: Decimal
    currency: str
    paid: Decimal
    expected: Decimal


NotifyUnderpaid = Callable[[Underpaid], Awaitable[None]]
NotifyCredited = Callable[[Order, CreditResult], Awaitable[None]]


class NowPaymentsIpn:
    """The IPN handler (see the module doc)."""

    def __init__(
        self,
        ledger: PaymentLedger,
        ipn_secret: str,
        *,
        notify_underpaid: NotifyUnderpaid | None = None,
        notify_credited: NotifyCredited | None = None,
        deadline: float = DEADLINE_SECONDS,
    ) -> None:
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.ledger = ledger
        self._secret = ipn_secret
        self.notify_underpaid = notify_underpaid
        self.notify_credited = notify_credited
        self.deadline = deadline
        self._notices: set[asyncio.Task[None]] = set()
        self.rejected = 0  # bodies whose signature did not verify

    async def __call__(self, body: bytes, signature: str | None) -> int:
        payload = verify_ipn(body, signature, self._secret)
        if payload is None:
            self.rejected += 1
            header = "no signature header" if not signature else "a signature that does not verify"
            logger.warning("nowpayments ipn refused: %d bytes with %s", len(body), header)
            return 401
        try:
            async with asyncio.timeout(self.deadline):
                await self._process(payload)
        except TimeoutError:
            logger.warning("nowpayments ipn: the stores took over %gs; NOWPayments will send it again", self.deadline)
            return 503
        except Exception:
            logger.exception("nowpayments ipn: processing failed; NOWPayments will send it again")
            return 503
        return 200

    async def _process(self, payload: dict[str, Any]) -> None:
        try:
            record = parse_ipn(payload)
        except ValueError as exc:
            await self.ledger.record_event(Rail.NOWPAYMENTS, None, "malformed", payload)
            logger.warning("nowpayments ipn: signed but unusable (%s); kept, nothing done", exc)
            return
        await self.ledger.record_event(
            Rail.NOWPAYMENTS, record.payment_id, record.payment_status, payload, order_id=record.order_id
        )
        if record.payment_status == FINISHED:
            order = await self._order(record)
            if order is None:
                self._log_no_order(record)
            else:
                await self._credit(record, order)
            # After the credit: the payment's row is there for its status to land on.
            await self.ledger.advance_status(Rail.NOWPAYMENTS, record.payment_id, record.payment_status)
            return
        moved = await self.ledger.advance_status(Rail.NOWPAYMENTS, record.payment_id, record.payment_status)
        if not moved:
            logger.info(
                "nowpayments ipn: payment %s stays put (%s is not ahead of what it has)",
                record.payment_id,
                record.payment_status,
            )
            return
        if record.payment_status == PARTIALLY_PAID:
            order = await self._order(record)
            if order is None:
                self._log_no_order(record)
            else:
                self._tell_underpaid(record, order)

    @staticmethod
    def _log_no_order(record: IpnRecord) -> None:
        logger.warning(
            "nowpayments ipn: payment %s (%s) is for no order of ours (order_id %r, invoice %r); nothing done",
            record.payment_id,
            record.payment_status,
            record.order_id,
            record.invoice_id,
        )

    async def _order(self, record: IpnRecord) -> Order | None:
        order = await self.ledger.order(record.order_id) if record.order_id else None
        if order is None and record.invoice_id:
            order = await self.ledger.order_by_reference(Rail.NOWPAYMENTS, record.invoice_id)
        if order is not None and order.rail is not Rail.NOWPAYMENTS:
            logger.warning("nowpayments ipn: order %s is a %s order", order.id, order.rail)
            return None
        return order

    async def _credit(self, record: IpnRecord, order: Order) -> None:
        payment = Payment(
            rail=Rail.NOWPAYMENTS,
            external_id=record.payment_id,
            telegram_id=order.telegram_id,
            days=order.days,
            amount=order.amount,
            currency="USD",
            order_id=order.id,
            plan_code=order.plan_code,
            raw=record.raw,
        )
        result = await self.ledger.credit(payment)
        if result.outcome is CreditOutcome.CREDITED:
            if self.notify_credited is not None:
                self._spawn(self.notify_credited(result.order or order, result), f"credited {record.payment_id}")
        elif result.outcome is CreditOutcome.REJECTED:
            # The money arrived, the order no longer takes it (expired or cancelled): support's case.
            logger.warning(
                "nowpayments ipn: finished payment %s for order %s not credited: %s",
                record.payment_id,
                order.id,
                result.reason or "rejected",
            )
        elif result.outcome is CreditOutcome.DUPLICATE:
            logger.info("nowpayments ipn: payment %s was credited before", record.payment_id)
        else:
            logger.warning("nowpayments ipn: payment %s counted, order %s not covered", record.payment_id, order.id)

    def _tell_underpaid(self, record: IpnRecord, order: Order) -> None:
        missing = underpayment(record)
        if missing is None or record.pay_amount is None:
            logger.info("nowpayments ipn: payment %s partially paid, the IPN says not by how much", record.payment_id)
            return
        notice = Underpaid(
            telegram_id=order.telegram_id,
            order_id=order.id,
            payment_id=record.payment_id,
            missing=missing,
            currency=record.pay_currency,
            paid=record.actually_paid or Decimal(0),
            expected=record.pay_amount,
        )
        logger.info(
            "nowpayments ipn: payment %s for order %s is %s %s short",
            record.payment_id,
            order.id,
            missing,
            record.pay_currency,
        )
        if self.notify_underpaid is not None:
            self._spawn(self.notify_underpaid(notice), f"underpaid {record.payment_id}")

    def _spawn(self, notice: Awaitable[None], what: str) -> None:
        async def run() -> None:
            try:
                await notice
            except Exception:
                logger.exception("nowpayments ipn: telling the user (%s) failed", what)

        task = asyncio.create_task(run(), name=f"nowpayments-notice-{what}")
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def drain(self) -> None:
        """Wait for the user notices already under way (on shutdown)."""
        while self._notices:
            await asyncio.gather(*list(self._notices), return_exceptions=True)
