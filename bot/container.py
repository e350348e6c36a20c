"""The services handlers use, built once per runtime and handed to them through the dispatcher.

Handlers ask for them by field name (`store`, `accounts`, `presets`, `replay`, `paysupport`, `ledger`,
`checkout`, `stars`, `channel_stats`); they never see a store manager. Each service talks to the managers itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from domain.plans import Rail
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from payments.checkout import CheckoutService, InvoiceMaker, SolRequester
from payments.ledger import PaymentLedger
from payments.pg_writer import PaymentsWriter
from payments.stars import StarsPayments
from services.accounts import AccountService, PaySupportGate
from services.cache import CacheRegistry
from services.channel_stats import ChannelStatistics
from services.presets import PresetStore
from services.replay import FilterReplay
from services.subscribers import SubscriberStore


@dataclass(frozen=True)
class Services:
    store: SubscriberStore
    accounts: AccountService
    presets: PresetStore
    replay: FilterReplay
    paysupport: PaySupportGate
    ledger: PaymentLedger
    checkout: CheckoutService
    stars: StarsPayments
    channel_stats: ChannelStatistics

    def workflow_data(self) -> dict[str, Any]:
        """Each service under its field name, for `Dispatcher(**...)`."""
        return {item.name: getattr(self, item.name) for item in fields(self)}


def build_services(
    redis: RedisManager,
    postgres: PostgresManager,
    caches: CacheRegistry,
    admin_ids: Iterable[int],
    *,
    referral_days: int = 0,
    sol: SolRequester | None = None,
    nowpayments: InvoiceMaker | None = None,
    sol_order_minutes: int | None = None,
) -> Services:
    """Every handler-facing service, once; call after the stores are started. The payments
    ledger's writer (`ledger.writer`) is started, and `stars` closed, by whoever runs the
    services. `sol` and `nowpayments` make those rails' payment requests; a rail without one
    is not offered."""
    store = SubscriberStore(redis, postgres, caches, frozenset(admin_ids))
    accounts = AccountService(store, postgres)
    ledger = PaymentLedger(redis, PaymentsWriter(redis, postgres, store), store, referral_days=referral_days)
    return Services(
        store=store,
        accounts=accounts,
        presets=PresetStore(postgres),
        replay=FilterReplay(postgres),
        paysupport=PaySupportGate(redis),
        ledger=ledger,
        checkout=CheckoutService(
            ledger,
            accounts.plans,
            sol=sol,
            nowpayments=nowpayments,
            order_ttl={Rail.SOL: timedelta(minutes=sol_order_minutes)} if sol_order_minutes else None,
        ),
        stars=StarsPayments(ledger, accounts.plans, redis, postgres),
        channel_stats=ChannelStatistics(postgres),
    )
