"""SOL orders paid on chain: the watcher that finds their transactions by reference, and
signatures users paste; each outcome is a `SolOutcome` for the bot to word (docs/architecture.md,
"SOL payments")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from domain.plans import Order, Payment, Rail, sol_to_lamports
from payments.ledger import PaymentLedger, PaymentsUnavailable
from payments.records import CreditOutcome
from payments.sol_rpc import SolRpc, SolRpcUnavailable, check_signature
from payments.sol_verify import MEMO_PROGRAMS, TransferCheck, Verdict, account_keys, check_transfer
from services.loops import BackgroundLoop

logger = logging.getLogger("alertbot.sol_watcher")

__all__ = ["LEDGER_UNTOLD", "SolNotify", "SolOutcome", "SolOutcomeKind", "SolWatcher"]

# A pasted transaction with more account keys than this is no wallet's transfer: not looked into.
_MAX_KEYS_LOOKED_UP = 64
# Keys of a payment that are never an order's reference: not looked up.
_PROGRAMS = frozenset(
    {"11111111111111111111111111111111", "ComputeBudget111111111111111111111111111111"} | MEMO_PROGRAMS
)


class SolOutcomeKind(StrEnum):
    CREDITED = "credited"  # the order is paid: the plan runs until plan_end
    PARTIAL = "partial"  # counted towards the order; `shortfall` SOL is still missing
    ALREADY = "already"  # this signature was credited before: nothing changed
    NOT_PAID = "not_paid"  # the transaction paid nothing: `verdict` says why (failed on chain, ...)
    REJECTED = "rejected"  # the order no longer takes payments (expired, cancelled, paid): `reason`
    NOT_FOUND = "not_found"  # no finalized transaction with this signature (yet): try again later
    NO_ORDER = "no_order"  # the transaction carries the reference of no order of this user
    INVALID = "invalid"  # not a transaction signature
    UNAVAILABLE = "unavailable"  # no Solana RPC endpoint answered, or the ledger could not book it: later


@dataclass(frozen=True)
class SolOutcome:
    """What became of one transaction for one user, for the bot to word."""

    kind: SolOutcomeKind
    telegram_id: int
    signature: str
    order: Order | None = None  # the order as the ledger left it
    check: TransferCheck | None = None
    plan_end: datetime | None = None
    reason: str = ""  # REJECTED: the ledger's reason

    @property
    def verdict(self) -> Verdict | None:
        return None if self.check is None else self.check.verdict

    @property
    def received(self) -> Decimal:
        """SOL this transaction brought."""
        return Decimal(0) if self.check is None else self.check.received

    @property
    def shortfall(self) -> Decimal:
        """SOL still missing for the order."""
        return Decimal(0) if self.order is None else self.order.shortfall


SolNotify = Callable[[SolOutcome], Awaitable[None]]

# What the watcher tells users by default: the ledger already posts a notice for every credit,
# partial credit and rejection (payments/notices.py), so only what it never sees is left.
LEDGER_UNTOLD = frozenset({SolOutcomeKind.NOT_PAID})


class SolWatcher:
    """Credits SOL orders from the chain: `scan()` once, or `start()` to scan every `interval`."""

    def __init__(
        self,
        ledger: PaymentLedger,
        rpc: SolRpc,
        receiver: str,
        notify: SolNotify,
        *,
        tolerance: Decimal = Decimal(0),
        interval: float = 10.0,
        tell: frozenset[SolOutcomeKind] = LEDGER_UNTOLD,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.ledger = ledger
        self.rpc = rpc
        self.receiver = receiver
        self.notify = notify
        self.tolerance = tolerance
        self.interval = interval
        self.tell = tell  # the outcomes of a pass handed to `notify`
        # Signatures already decided, per open order's reference: never read again while it is
        # open. Dropped with the order; the ledger's DUPLICATE keeps the once-ever promise anyway.
        self._checked: dict[str, set[str]] = {}
        self._loop = BackgroundLoop("sol-watcher")
        self.scans = 0  # passes completed
        self.last_error: str | None = None

    # --- one pass ---------------------------------------------------------------------------

    async def scan(self) -> list[SolOutcome]:
        """Look at every open SOL order's transactions once; the outcomes (those in `tell` are
        also handed to `notify`)."""
        outcomes: list[SolOutcome] = []
        try:
            orders = [order for order in await self.ledger.open_orders(Rail.SOL) if order.reference]
            open_references = {order.reference for order in orders}
            for reference in list(self._checked):
                if reference not in open_references:
                    del self._checked[reference]
            for order in orders:
                try:
                    outcomes += await self._scan_order(order)
                except (SolRpcUnavailable, PaymentsUnavailable) as exc:
                    # Every endpoint, or both stores, down: the other orders would fare no better.
                    self.last_error = str(exc)
                    logger.warning("sol watcher: pass cut short: %s", exc)
                    break
        finally:
            self.scans += 1
        return outcomes

    async def _scan_order(self, order: Order) -> list[SolOutcome]:
        assert order.reference is not None
        checked = self._checked.setdefault(order.reference, set())
        listed = await self.rpc.signatures_for_address(order.reference)
        outcomes: list[SolOutcome] = []
        # Oldest first: a first part, then its top-up, are told in the order they were paid.
        for info in reversed(listed):
            signature = info["signature"]
            if signature in checked:
                continue
            outcome = await self._examine(order, signature, info)
            if outcome is None:
                continue  # listed but not readable yet: the next pass tries again
            checked.add(signature)
            outcomes.append(outcome)
            if outcome.kind in self.tell:
                await self._tell(outcome)
            # The order as the ledger left it: a top-up in the same pass is checked against it.
            if outcome.order is not None:
                order = outcome.order
        return outcomes

    async def _examine(self, order: Order, signature: str, info: Mapping[str, Any]) -> SolOutcome | None:
        if info.get("err") is not None:
            # Failed on chain: the listing says so already, no need to read the transaction.
            check = TransferCheck(
                verdict=Verdict.FAILED,
                signature=signature,
                received_lamports=0,
                expected_lamports=sol_to_lamports(order.shortfall),
                slot=info.get("slot"),
                block_time=info.get("blockTime"),
                error=info["err"],
            )
            return await self._settle(order, signature, check, dict(info))
        tx = await self.rpc.transaction(signature)
        if tx is None:
            return None
        return await self._settle(order, signature, self._check(order, tx), tx)

    def _check(self, order: Order, tx: Mapping[str, Any]) -> TransferCheck:
        assert order.reference is not None
        return check_transfer(
            tx,
            receiver=self.receiver,
            reference=order.reference,
            min_lamports=sol_to_lamports(order.shortfall),
            tolerance=self.tolerance,
        )

    async def _settle(self, order: Order, signature: str, check: TransferCheck, raw: dict[str, Any]) -> SolOutcome:
        """Credit what `check` found to `order`, or record why not."""
        if not check.counts:
            if check.verdict is Verdict.MALFORMED:
                logger.error("sol watcher: transaction %s is unreadable: %s", signature, check.detail)
            try:
                await self.ledger.record_event(Rail.SOL, signature, f"not_paid:{check.verdict}", raw, order_id=order.id)
            except PaymentsUnavailable as exc:  # the audit row is lost, the user is still told
                logger.warning("sol watcher: cannot keep the event of %s: %s", signature, exc)
            return SolOutcome(SolOutcomeKind.NOT_PAID, order.telegram_id, signature, order=order, check=check)
        payment = Payment(
            rail=Rail.SOL,
            external_id=signature,
            telegram_id=order.telegram_id,
            days=order.days,
            amount=check.received,
            currency="SOL",
            order_id=order.id,
            plan_code=order.plan_code,
            raw=raw,
        )
        result = await self.ledger.credit(payment, tolerance=self.tolerance)
        kind = {
            CreditOutcome.CREDITED: SolOutcomeKind.CREDITED,
            CreditOutcome.PARTIAL: SolOutcomeKind.PARTIAL,
            CreditOutcome.DUPLICATE: SolOutcomeKind.ALREADY,
            CreditOutcome.REJECTED: SolOutcomeKind.REJECTED,
        }[result.outcome]
        if kind is SolOutcomeKind.REJECTED:
            # Money arrived for an order that takes none: the operator may owe a refund.
            logger.warning(
                "sol watcher: %s SOL in %s for order %s rejected: %s",
                check.received,
                signature,
                order.id,
                result.reason,
            )
        return SolOutcome(
            kind,
            order.telegram_id,
            signature,
            order=result.order or order,
            check=check,
            plan_end=result.plan_end,
            reason=result.reason,
        )

    async def _tell(self, outcome: SolOutcome) -> None:
        try:
            await self.notify(outcome)
        except asyncio.CancelledError:
            raise
        except Exception:  # the payment is booked; a failed message must not undo the pass
            logger.exception("sol watcher: telling user %s about %s failed", outcome.telegram_id, outcome.signature)

    # --- a pasted signature ------------------------------------------------------------------

    async def submit_signature(self, telegram_id: int, signature: str) -> SolOutcome:
        """Check a signature a user pasted against their SOL orders; the outcome, for the caller
        to answer with (not handed to `notify`; the ledger posts its notice as for any credit)."""
        signature = signature.strip()
        try:
            check_signature(signature)
        except ValueError:
            return SolOutcome(SolOutcomeKind.INVALID, telegram_id, signature)
        try:
            tx = await self.rpc.transaction(signature)
            if tx is None:
                return SolOutcome(SolOutcomeKind.NOT_FOUND, telegram_id, signature)
            order = await self._order_of(telegram_id, tx)
            if order is None:
                return SolOutcome(SolOutcomeKind.NO_ORDER, telegram_id, signature)
            outcome = await self._settle(order, signature, self._check(order, tx), tx)
        except (SolRpcUnavailable, PaymentsUnavailable) as exc:
            logger.warning("sol watcher: cannot check pasted %s: %s", signature, exc)
            return SolOutcome(SolOutcomeKind.UNAVAILABLE, telegram_id, signature)
        if order.reference is not None:
            self._checked.setdefault(order.reference, set()).add(signature)
        return outcome

    async def _order_of(self, telegram_id: int, tx: Mapping[str, Any]) -> Order | None:
        """The order of `telegram_id` whose reference `tx` carries (any state), or None."""
        try:
            keys = account_keys(tx)
        except ValueError:
            return None
        for key in dict.fromkeys(keys[:_MAX_KEYS_LOOKED_UP]):
            if key == self.receiver or key in _PROGRAMS:
                continue
            order = await self.ledger.order_by_reference(Rail.SOL, key)
            if order is not None and order.telegram_id == telegram_id:
                return order
        return None

    # --- in the background -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._loop.running

    def poke(self) -> None:
        """Scan now rather than at the next tick (a new order, a user saying they paid)."""
        self._loop.wake.set()

    async def start(self) -> None:
        self._loop.start(self._run)

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        while not self._loop.stopping:
            self._loop.wake.clear()
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or a store outage must not end the loop: payments would wait forever
                logger.exception("sol watcher: pass failed")
            await self._loop.sleep(self.interval)
