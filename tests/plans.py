"""Plans for tests: granted through the payments ledger, as /grant does, and written through to
PostgreSQL before returning."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from payments.ledger import PaymentLedger
from payments.pg_writer import PaymentsWriter
from services.subscribers import SubscriberStore

GRANTED_BY = 1000


async def grant(
    store: SubscriberStore, telegram_id: int, days: int, *, clock: Callable[[], datetime] | None = None
) -> datetime:
    """`days` more for the user (from `clock`'s now, by default the store's); the new plan end."""
    writer = PaymentsWriter(store.redis, store.postgres, store)
    ledger = PaymentLedger(store.redis, writer, store, clock=clock or store.clock)
    end = await ledger.grant(telegram_id, days, granted_by=GRANTED_BY)
    await writer.start()
    try:
        await writer.drained()
    finally:
        await writer.stop()
    return end


async def revoke(store: SubscriberStore, telegram_id: int) -> bool:
    writer = PaymentsWriter(store.redis, store.postgres, store)
    revoked = await PaymentLedger(store.redis, writer, store, clock=store.clock).revoke(telegram_id, reason="test")
    await writer.start()
    try:
        await writer.drained()
    finally:
        await writer.stop()
    return revoked
