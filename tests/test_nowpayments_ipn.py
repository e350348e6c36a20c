"""NOWPayments end to end: an invoice made against the stand-in API, its IPNs posted by the
stand-in to the bot's own HTTP app, the ledger on real Redis and PostgreSQL.

Shown: a forged IPN gets 401 and changes nothing; the same valid IPN twice credits once;
statuses arriving out of order never move a payment back; `partially_paid` tells the payer what
is missing; a store outage answers 5xx and the retry credits once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from domain.plans import Order, OrderStatus, Plan, Rail
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from payments.ledger import GATEWAY_STATUS_KEY, PaymentLedger, seen_field
from payments.nowpayments import NowPaymentsClient, ipn_callback_url
from payments.nowpayments_ipn import NowPaymentsIpn, Underpaid
from payments.pg_writer import PaymentsWriter
from payments.records import CreditResult
from services.http_api import ServingFlag, build_http_app
from services.subscribers import SubscriberStore
from standins.nowpayments import NowPaymentsServer, sign_ipn
from standins.tcp_proxy import TcpProxy
from tests.conftest import Stores

API_KEY = "NP-API-KEY-0001"
SECRET = "ipn-secret-7c1f"
USER = 424242
PRO = Plan(
    code="pro30",
    title="Pro",
    days=30,
    price_stars=500,
    price_sol=Decimal("0.05"),
    price_usd=Decimal("9.99"),
)


@dataclass
class Told:
    """What the rail told users, with an event per notice so tests wait on it."""

    underpaid: list[Underpaid] = field(default_factory=list)
    credited: list[tuple[Order, CreditResult]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_underpaid(self, notice: Underpaid) -> None:
        self.underpaid.append(notice)
        self.changed.set()

    async def on_credited(self, order: Order, result: CreditResult) -> None:
        self.credited.append((order, result))
        self.changed.set()


@dataclass
class Rig:
    stores: Stores
    store: SubscriberStore
    writer: PaymentsWriter
    ledger: PaymentLedger
    gateway: NowPaymentsServer
    client: NowPaymentsClient
    ipn: NowPaymentsIpn
    told: Told
    public_base_url: str

    async def order_with_invoice(self) -> tuple[Order, str]:
        """An open NOWPayments order and the invoice id the stand-in made for it."""
        order = await self.ledger.create_order(USER, PRO, Rail.NOWPAYMENTS)
        invoice = await self.client.create_invoice(
            price_amount=order.amount,
            price_currency=order.currency,
            order_id=order.id,
            ipn_callback_url=ipn_callback_url(self.public_base_url),
            order_description=f"{PRO.title}, {PRO.days} days",
        )
        await self.ledger.update_order(order.id, reference=invoice.id, pay_url=invoice.url)
        return order, invoice.id

    async def plan_end(self) -> datetime | None:
        sub = await self.store.get(USER)
        assert sub is not None
        return sub.plan_expires_at

    async def pg(self, query: str, *args: object) -> object:
        await self.writer.drained()
        return await self.stores.postgres.fetchval(query, *args)

    async def gateway_status(self, payment_id: int | str) -> str | None:
        value = await self.stores.redis.hget(GATEWAY_STATUS_KEY, seen_field(Rail.NOWPAYMENTS, str(payment_id)))
        return None if value is None else str(value)


@pytest.fixture
async def rig(stores: Stores) -> AsyncIterator[Rig]:
    store = SubscriberStore(stores.redis, stores.postgres, stores.caches, frozenset())
    writer = PaymentsWriter(stores.redis, stores.postgres, store)
    await writer.start()
    ledger = PaymentLedger(stores.redis, writer, store)
    await store.register(USER, username="payer", first_name="Pay", language_code="en")
    told = Told()
    ipn = NowPaymentsIpn(ledger, SECRET, notify_underpaid=told.on_underpaid, notify_credited=told.on_credited)
    app = build_http_app(_no_health, ServingFlag(), CollectorRegistry(), nowpayments_ipn_handler=ipn)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    public_base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with NowPaymentsServer(API_KEY, SECRET) as gateway:
        client = NowPaymentsClient(gateway.url, API_KEY, asyncio.Semaphore(4))
        try:
            yield Rig(stores, store, writer, ledger, gateway, client, ipn, told, public_base_url)
        finally:
            await client.close()
            await ipn.drain()
            await runner.cleanup()
            await writer.stop()


async def _no_health() -> dict[str, object]:
    return {}


async def test_the_invoice_carries_the_order_and_the_public_ipn_url(rig: Rig) -> None:
    order, invoice_id = await rig.order_with_invoice()
    made = rig.gateway.invoice(invoice_id)
    assert made.request["ipn_callback_url"] == rig.public_base_url + "/ipn/nowpayments"
    assert made.request["order_id"] == order.id
    assert Decimal(str(made.request["price_amount"])) == order.amount == Decimal("9.99")
    assert (await rig.ledger.order_by_reference(Rail.NOWPAYMENTS, invoice_id)) is not None


async def test_a_forged_ipn_gets_401_and_changes_nothing(rig: Rig) -> None:
    order, invoice_id = await rig.order_with_invoice()
    before = await rig.plan_end()

    assert await rig.gateway.pay(invoice_id, "finished", forged=True) == 401
    body = rig.gateway.ipn_body(invoice_id, "finished")
    url = ipn_callback_url(rig.public_base_url)
    assert await rig.gateway.send_ipn(url, body, signature="") == 401  # no header
    assert await rig.gateway.send_ipn(url, body, raw=b"[1, 2, 3]") == 401  # signed, but not an IPN object

    assert rig.ipn.rejected == 3
    assert await rig.plan_end() == before
    stored = await rig.ledger.order(order.id)
    assert stored is not None and stored.status is OrderStatus.OPEN and stored.paid_amount == 0
    assert await rig.gateway_status(body["payment_id"]) is None
    assert await rig.pg("SELECT count(*) FROM payment_events") == 0
    assert await rig.pg("SELECT count(*) FROM payments WHERE rail = 'nowpayments'") == 0
    assert rig.told.credited == [] and rig.told.underpaid == []


async def test_the_same_valid_ipn_twice_credits_once(rig: Rig) -> None:
    order, invoice_id = await rig.order_with_invoice()

    assert await rig.gateway.pay(invoice_id, "finished") == 200
    await rig.told.changed.wait()
    first_end = await rig.plan_end()
    assert first_end is not None
    assert await rig.gateway.pay(invoice_id, "finished") == 200

    assert await rig.plan_end() == first_end
    payment_id = rig.gateway.invoice(invoice_id).payment_id
    await rig.ipn.drain()
    assert len(rig.told.credited) == 1
    credited_order, result = rig.told.credited[0]
    assert credited_order.id == order.id and result.plan_end == first_end
    stored = await rig.ledger.order(order.id)
    assert stored is not None and stored.status is OrderStatus.PAID
    assert (
        await rig.pg("SELECT count(*) FROM payments WHERE rail = 'nowpayments' AND external_id = $1", str(payment_id))
        == 1
    )
    # Both IPNs are kept, the repeat too.
    assert await rig.pg("SELECT count(*) FROM payment_events WHERE external_id = $1", str(payment_id)) == 2


async def test_statuses_out_of_order_never_move_a_payment_back(rig: Rig) -> None:
    order, invoice_id = await rig.order_with_invoice()

    assert await rig.gateway.pay(invoice_id, "finished") == 200
    await rig.told.changed.wait()
    end = await rig.plan_end()
    payment_id = rig.gateway.invoice(invoice_id).payment_id
    assert payment_id is not None
    for late in ("confirming", "waiting", "sending", "partially_paid"):
        assert await rig.gateway.pay(invoice_id, late) == 200
        assert await rig.gateway_status(payment_id) == "finished"

    assert await rig.plan_end() == end
    await rig.ipn.drain()
    assert len(rig.told.credited) == 1
    assert rig.told.underpaid == []  # the late partially_paid did not move, so nobody is told
    assert await rig.pg("SELECT status FROM gateway_statuses WHERE external_id = $1", str(payment_id)) == "finished"


async def test_statuses_in_order_move_forward_and_credit_on_finished(rig: Rig) -> None:
    order, invoice_id = await rig.order_with_invoice()
    for status in ("waiting", "confirming", "confirmed", "sending"):
        assert await rig.gateway.pay(invoice_id, status) == 200
        payment_id = rig.gateway.invoice(invoice_id).payment_id
        assert payment_id is not None
        assert await rig.gateway_status(payment_id) == status
        assert await rig.plan_end() is None
    assert await rig.gateway.pay(invoice_id, "finished") == 200
    await rig.told.changed.wait()
    assert await rig.plan_end() is not None


async def test_partially_paid_tells_the_payer_what_is_missing(rig: Rig) -> None:
    order, invoice_id = await rig.order_with_invoice()
    body = rig.gateway.ipn_body(invoice_id, "partially_paid")
    pay_amount = Decimal(str(body["pay_amount"]))
    paid = (pay_amount - Decimal("0.0125")).quantize(Decimal("0.000000001"))

    assert await rig.gateway.pay(invoice_id, "partially_paid", actually_paid=paid) == 200
    await rig.told.changed.wait()

    [notice] = rig.told.underpaid
    assert notice.telegram_id == USER and notice.order_id == order.id
    assert notice.missing == Decimal("0.0125")
    assert notice.currency == "SOL"
    assert (notice.paid, notice.expected) == (paid, pay_amount)
    assert await rig.plan_end() is None
    # The same status again tells nobody twice.
    assert await rig.gateway.pay(invoice_id, "partially_paid", actually_paid=paid) == 200
    await rig.ipn.drain()
    assert len(rig.told.underpaid) == 1


async def test_an_ipn_for_no_order_of_ours_is_kept_and_credits_nothing(rig: Rig) -> None:
    invoice = await rig.client.create_invoice(
        price_amount=Decimal("9.99"),
        price_currency="usd",
        order_id="no-such-order",
        ipn_callback_url=ipn_callback_url(rig.public_base_url),
    )
    assert await rig.gateway.pay(invoice.id, "finished") == 200
    assert await rig.plan_end() is None
    assert rig.told.credited == []
    assert await rig.pg("SELECT count(*) FROM payment_events WHERE order_id = 'no-such-order'") == 1
    assert await rig.pg("SELECT count(*) FROM payments WHERE rail = 'nowpayments'") == 0


async def test_a_store_outage_answers_5xx_in_time_and_the_retry_credits_once(rig: Rig) -> None:
    order, invoice_id = await rig.order_with_invoice()
    body = rig.gateway.ipn_body(invoice_id, "finished")
    redis_parts = urlsplit(rig.stores.redis_url)
    pg_parts = urlsplit(rig.stores.database_url)
    # A second bot on the same stores, through proxies that swallow every byte: the stores hang.
    async with (
        TcpProxy(redis_parts.hostname or "127.0.0.1", redis_parts.port or 6379) as redis_proxy,
        TcpProxy(pg_parts.hostname or "127.0.0.1", pg_parts.port or 5432) as pg_proxy,
    ):
        redis = RedisManager.from_url(redis_proxy.url("redis", redis_parts.path))
        await redis.start()
        userinfo = pg_parts.netloc.rpartition("@")[0]
        postgres = PostgresManager(pg_proxy.url("postgresql", pg_parts.path, userinfo), min_size=1, max_size=2)
        await postgres.start()
        store = SubscriberStore(redis, postgres, rig.stores.caches, frozenset())
        ledger = PaymentLedger(redis, PaymentsWriter(redis, postgres, store), store)
        stalled = NowPaymentsIpn(ledger, SECRET, deadline=0.5)
        try:
            await redis_proxy.stop_forwarding("blackhole")
            await pg_proxy.stop_forwarding("blackhole")
            assert await stalled(json.dumps(body).encode(), sign_ipn(body, SECRET)) == 503
            await redis_proxy.resume()
            await pg_proxy.resume()
        finally:
            await postgres.close()
            await redis.close()
    assert await rig.plan_end() is None
    # NOWPayments sends it again, to a bot whose stores answer: credited, once.
    url = ipn_callback_url(rig.public_base_url)
    assert await rig.gateway.send_ipn(url, body) == 200
    assert await rig.gateway.send_ipn(url, body) == 200
    await rig.ipn.drain()
    assert len(rig.told.credited) == 1
    assert await rig.plan_end() is not None
    assert await rig.pg("SELECT count(*) FROM payments WHERE rail = 'nowpayments'") == 1
