"""SOL payments against local Solana JSON-RPC nodes (standins/solana_rpc.py): the node's wire
format, the client's rotation over several endpoints (payments/sol_rpc.py), and the watcher and
pasted signatures crediting the ledger (payments/sol_watcher.py) on real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from solders.keypair import Keypair
from solders.rpc.responses import GetSignaturesForAddressResp, GetTransactionResp

from domain.plans import Order, OrderStatus, Rail, sol_to_lamports
from payments.ledger import PaymentLedger
from payments.notices import NOTICES_KEY, decode
from payments.records import NoticeKind
from payments.sol_rpc import SolRpc, SolRpcUnavailable
from payments.sol_verify import Verdict
from payments.sol_watcher import SolOutcome, SolOutcomeKind, SolWatcher
from payments.solana_pay import TransferRequest
from standins.solana_rpc import SolanaRpcServer, insufficient_funds_error
from tests.conftest import Stores
from tests.test_ledger import MONTH, USER, Books, books

SOL = 1_000_000_000


def key() -> str:
    return str(Keypair().pubkey())


RECEIVER = key()
PAYER = key()


@pytest.fixture
async def node() -> AsyncIterator[SolanaRpcServer]:
    async with SolanaRpcServer() as server:
        yield server


@pytest.fixture
async def node2() -> AsyncIterator[SolanaRpcServer]:
    async with SolanaRpcServer() as server:
        yield server


async def post(url: str, method: str, params: list[Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) as answer:
            body: dict[str, Any] = await answer.json()
            return body


# --- the node's wire format ----------------------------------------------------------------------


async def test_the_nodes_answers_parse_as_solders_models_of_the_real_format(node: SolanaRpcServer) -> None:
    reference = key()
    signatures = [
        node.add_transfer(PAYER, RECEIVER, SOL // 10, reference=reference, memo="order 1"),
        node.add_transfer(PAYER, RECEIVER, SOL // 10, reference=reference, version=0),
    ]
    listed = await post(node.url, "getSignaturesForAddress", [reference, {"commitment": "finalized"}])
    parsed = GetSignaturesForAddressResp.from_json(json.dumps(listed))
    assert [str(item.signature) for item in parsed.value] == signatures[::-1]  # newest first
    assert listed["result"][1]["memo"] == "[7] order 1"
    for signature in signatures:
        for encoding in ("json", "jsonParsed"):
            config = {"encoding": encoding, "commitment": "finalized", "maxSupportedTransactionVersion": 0}
            answer = await post(node.url, "getTransaction", [signature, config])
            model = GetTransactionResp.from_json(json.dumps(answer))
            assert model.value is not None
            # solders reads every field and writes back the same JSON: nothing it does not know.
            assert json.loads(model.to_json())["result"] == answer["result"]


async def test_a_v0_transaction_needs_the_client_to_say_it_reads_v0(node: SolanaRpcServer) -> None:
    signature = node.add_transfer(PAYER, RECEIVER, 1, reference=key(), version=0)
    answer = await post(node.url, "getTransaction", [signature, {"encoding": "jsonParsed"}])
    assert answer["error"]["code"] == -32015
    legacy = node.add_transfer(PAYER, RECEIVER, 1, reference=key())
    answer = await post(node.url, "getTransaction", [legacy, {"encoding": "jsonParsed"}])
    assert "version" not in answer["result"]  # left out for clients that did not ask


async def test_signatures_page_with_limit_before_and_until(node: SolanaRpcServer) -> None:
    reference = key()
    signatures = [node.add_transfer(PAYER, RECEIVER, 1, reference=reference) for _ in range(5)]
    node.add_transfer(PAYER, RECEIVER, 1, reference=key())  # another order's: not listed
    async with SolRpc([node.url], asyncio.Semaphore(4)) as rpc:
        newest = [item["signature"] for item in await rpc.signatures_for_address(reference)]
        assert newest == signatures[::-1]
        page = await rpc.signatures_for_address(reference, limit=2)
        assert [item["signature"] for item in page] == signatures[4:2:-1]
        page = await rpc.signatures_for_address(reference, limit=2, before=page[-1]["signature"])
        assert [item["signature"] for item in page] == signatures[2:0:-1]
        page = await rpc.signatures_for_address(reference, until=signatures[2])
        assert [item["signature"] for item in page] == signatures[4:2:-1]
        # The receiver sees every transfer to it.
        assert len(await rpc.signatures_for_address(RECEIVER)) == 6
        with pytest.raises(ValueError):
            await rpc.signatures_for_address("not a key")
        with pytest.raises(ValueError):
            await rpc.transaction("not a signature")


async def test_a_transfer_not_finalized_is_invisible_at_finalized(node: SolanaRpcServer) -> None:
    reference = key()
    signature = node.add_transfer(PAYER, RECEIVER, SOL, reference=reference, finalized=False)
    async with SolRpc([node.url], asyncio.Semaphore(4)) as rpc:
        assert await rpc.signatures_for_address(reference) == []
        assert await rpc.transaction(signature) is None
        confirmed = await post(node.url, "getSignaturesForAddress", [reference, {"commitment": "confirmed"}])
        assert confirmed["result"][0]["confirmationStatus"] == "confirmed"
        node.finalize(signature)
        listed = await rpc.signatures_for_address(reference)
        assert [item["confirmationStatus"] for item in listed] == ["finalized"]
        tx = await rpc.transaction(signature)
        assert tx is not None and tx["transaction"]["signatures"] == [signature]
    answer = await post(node.url, "getTransaction", [signature, {"commitment": "processed"}])
    assert answer["error"]["code"] == -32602


async def test_the_client_asks_for_parsed_v0_transactions_at_finalized(node: SolanaRpcServer) -> None:
    signature = node.add_transfer(PAYER, RECEIVER, SOL, reference=key(), version=0)
    async with SolRpc([node.url], asyncio.Semaphore(4)) as rpc:
        tx = await rpc.transaction(signature)
    assert tx is not None and tx["version"] == 0
    assert node.calls[-1].params == [
        signature,
        {"encoding": "jsonParsed", "commitment": "finalized", "maxSupportedTransactionVersion": 0},
    ]


# --- endpoints in turn -----------------------------------------------------------------------------


def same_chain(first: SolanaRpcServer, second: SolanaRpcServer) -> None:
    """Two nodes of one cluster: they share what is on chain."""
    second.transactions = first.transactions
    second.balances = first.balances


@pytest.mark.parametrize("failure", ["429", "500", "rpc-error", "stalled"])
async def test_a_failing_endpoint_hands_the_call_to_the_next(
    node: SolanaRpcServer, node2: SolanaRpcServer, failure: str
) -> None:
    same_chain(node, node2)
    reference = key()
    signature = node.add_transfer(PAYER, RECEIVER, SOL, reference=reference)
    if failure == "429":
        node.fail(429)
    elif failure == "500":
        node.fail(500)
    elif failure == "rpc-error":
        node.fail_rpc()
    else:
        node.pause()
    async with SolRpc([node.url, node2.url], asyncio.Semaphore(4), timeout=0.5) as rpc:
        listed = await rpc.signatures_for_address(reference)
        assert [item["signature"] for item in listed] == [signature]
        assert rpc.last_url == 1 and rpc.failures == 1
        assert rpc.last_error is not None and node.url not in rpc.last_error
        # The next call starts with the endpoint that answered: the failing one is left alone.
        before = node.requests
        assert (await rpc.transaction(signature)) is not None
        assert node.requests == before and node2.methods()["getTransaction"] == 1


async def test_all_endpoints_failing_is_an_error_and_the_next_call_tries_again(
    node: SolanaRpcServer, node2: SolanaRpcServer
) -> None:
    same_chain(node, node2)
    signature = node.add_transfer(PAYER, RECEIVER, SOL, reference=key())
    node.fail(429)
    node2.fail(503)
    async with SolRpc([node.url, node2.url], asyncio.Semaphore(4)) as rpc:
        with pytest.raises(SolRpcUnavailable, match="none of the 2"):
            await rpc.transaction(signature)
        assert (node.requests, node2.requests) == (1, 1)  # each tried once
        node.fail(None)
        assert await rpc.transaction(signature) is not None


async def test_every_request_holds_the_shared_bound(node: SolanaRpcServer) -> None:
    references = [key() for _ in range(4)]
    for reference in references:
        node.add_transfer(PAYER, RECEIVER, 1, reference=reference)
    node.delay = 0.05  # answers overlap unless the bound keeps them apart
    bound = asyncio.Semaphore(1)
    async with SolRpc([node.url], bound) as rpc:
        await asyncio.gather(*(rpc.signatures_for_address(reference) for reference in references))
    assert node.max_in_flight == 1 and node.requests == 4


# --- the watcher and pasted signatures, on the ledger ---------------------------------------------

OTHER = 502
PRICE = sol_to_lamports(MONTH.price_sol or Decimal(0))  # 0.09 SOL


@dataclass
class SolEnv:
    books: Books
    node: SolanaRpcServer
    rpc: SolRpc
    told: list[SolOutcome]
    watcher: SolWatcher

    @property
    def ledger(self) -> PaymentLedger:
        return self.books.ledger

    def new_watcher(self, rpc: SolRpc | None = None, **options: Any) -> SolWatcher:
        return SolWatcher(self.ledger, rpc or self.rpc, RECEIVER, self.notify, **options)

    async def notify(self, outcome: SolOutcome) -> None:
        self.told.append(outcome)

    async def order(self, user: int = USER) -> Order:
        request = TransferRequest.build(RECEIVER, MONTH.price_sol or Decimal(0), label="Token Alert Bot")
        order = await self.ledger.create_order(user, MONTH, Rail.SOL, reference=request.reference)
        updated = await self.ledger.update_order(order.id, pay_url=request.url)
        assert updated is not None
        return updated

    def pay(self, order: Order, lamports: int, **options: Any) -> str:
        return self.node.add_transfer(PAYER, RECEIVER, lamports, reference=order.reference, memo=order.id, **options)

    async def plan_end(self, user: int = USER) -> datetime | None:
        subscriber = await self.books.store.get(user)
        assert subscriber is not None
        return subscriber.plan_expires_at

    async def notices(self) -> list[tuple[int, NoticeKind, dict[str, str]]]:
        """What the ledger queued for users to hear: (user, kind, values)."""
        async with self.books.redis.guarded() as client:
            entries = await client.xrange(NOTICES_KEY)
        return [(n.telegram_id, n.kind, dict(n.values)) for n in (decode(fields) for _, fields in entries)]

    async def payments_in_postgresql(self, signature: str) -> int:
        await self.books.writer.drained()
        return int(
            await self.books.postgres.fetchval(
                "SELECT count(*) FROM payments WHERE rail = 'sol' AND external_id = $1", signature
            )
        )


@pytest.fixture
async def sol(stores: Stores, node: SolanaRpcServer) -> AsyncIterator[SolEnv]:
    async with books(stores.redis, stores.postgres, stores.caches) as env:
        for user in (USER, OTHER):
            await env.store.register(user, username=f"u{user}", first_name="Pat", language_code="en")
        async with SolRpc([node.url], asyncio.Semaphore(4)) as rpc:
            told: list[SolOutcome] = []
            sol_env = SolEnv(env, node, rpc, told, None)  # type: ignore[arg-type]
            sol_env.watcher = sol_env.new_watcher()
            yield sol_env
            await sol_env.watcher.stop()


def kinds(outcomes: list[SolOutcome]) -> list[SolOutcomeKind]:
    return [outcome.kind for outcome in outcomes]


async def test_the_watcher_credits_a_paid_order_once_and_reads_it_once(sol: SolEnv) -> None:
    order = await sol.order()
    assert order.pay_url is not None and order.reference is not None and f"reference={order.reference}" in order.pay_url
    signature = sol.pay(order, PRICE)
    outcomes = await sol.watcher.scan()
    assert kinds(outcomes) == [SolOutcomeKind.CREDITED]
    credited = outcomes[0]
    assert credited.signature == signature and credited.received == Decimal("0.09")
    assert credited.plan_end is not None and await sol.plan_end() == credited.plan_end
    assert credited.order is not None and credited.order.status is OrderStatus.PAID
    # The user hears of it once, from the ledger's receipt; the watcher adds nothing.
    assert [(user, kind) for user, kind, _ in await sol.notices()] == [(USER, NoticeKind.RECEIPT)]
    assert sol.told == []
    # The order is paid: the next passes neither list nor read anything again.
    assert await sol.watcher.scan() == []
    assert sol.node.methods()["getTransaction"] == 1
    assert await sol.payments_in_postgresql(signature) == 1


async def test_known_signatures_are_not_read_again_while_the_order_stays_open(sol: SolEnv) -> None:
    order = await sol.order()
    sol.pay(order, PRICE // 3)
    assert kinds(await sol.watcher.scan()) == [SolOutcomeKind.PARTIAL]
    assert await sol.watcher.scan() == []  # still open, listed again, not read again
    assert sol.node.methods()["getSignaturesForAddress"] == 2 and sol.node.methods()["getTransaction"] == 1


async def test_a_signature_submitted_twice_is_credited_once(sol: SolEnv) -> None:
    order = await sol.order()
    signature = sol.pay(order, PRICE)
    first = await sol.watcher.submit_signature(USER, signature)
    assert first.kind is SolOutcomeKind.CREDITED and first.plan_end is not None
    second = await sol.watcher.submit_signature(USER, f"  {signature}\n")
    assert second.kind is SolOutcomeKind.ALREADY and second.plan_end is None
    # Nor by another watcher with no memory of it, nor by the watcher's own pass.
    fresh = sol.new_watcher()
    assert (await fresh.submit_signature(USER, signature)).kind is SolOutcomeKind.ALREADY
    assert await fresh.scan() == [] and await sol.watcher.scan() == []
    assert await sol.plan_end() == first.plan_end  # 30 days, once
    assert sol.told == []  # a pasted signature is answered, not notified
    assert [kind for _, kind, _ in await sol.notices()] == [NoticeKind.RECEIPT]  # one receipt
    assert await sol.payments_in_postgresql(signature) == 1


async def test_two_watchers_finding_one_signature_credit_it_once(sol: SolEnv, node2: SolanaRpcServer) -> None:
    same_chain(sol.node, node2)
    order = await sol.order()
    signature = sol.pay(order, PRICE)
    async with SolRpc([node2.url], asyncio.Semaphore(4)) as rpc2:
        other = sol.new_watcher(rpc2)
        # Both list the open order and ask their node before either credits.
        sol.node.pause()
        node2.pause()
        scans = [asyncio.create_task(sol.watcher.scan()), asyncio.create_task(other.scan())]
        await sol.node.wait_for_in_flight(1)
        await node2.wait_for_in_flight(1)
        sol.node.resume()
        node2.resume()
        first, second = await asyncio.gather(*scans)
    assert sorted(kinds(first + second)) == [SolOutcomeKind.ALREADY, SolOutcomeKind.CREDITED]
    assert sol.node.methods()["getTransaction"] == node2.methods()["getTransaction"] == 1  # both read it
    assert [kind for _, kind, _ in await sol.notices()] == [NoticeKind.RECEIPT]  # told once
    credited = next(outcome for outcome in first + second if outcome.kind is SolOutcomeKind.CREDITED)
    assert await sol.plan_end() == credited.plan_end
    assert await sol.payments_in_postgresql(signature) == 1


async def test_a_failed_transaction_is_not_credited_and_the_user_is_told_why(sol: SolEnv) -> None:
    order = await sol.order()
    signature = sol.pay(order, PRICE, err=insufficient_funds_error(3))
    outcomes = await sol.watcher.scan()
    assert kinds(outcomes) == [SolOutcomeKind.NOT_PAID]
    assert outcomes[0].verdict is Verdict.FAILED and outcomes[0].received == 0
    assert sol.told == outcomes  # the watcher tells why: the ledger never saw it
    assert await sol.notices() == []
    assert sol.node.methods()["getTransaction"] == 0  # the listing said it failed
    assert await sol.plan_end() is None
    stored = await sol.ledger.order(order.id)
    assert stored is not None and stored.status is OrderStatus.OPEN and stored.paid_amount == 0
    # Pasted, it is read and refused the same way; the order still takes a good payment.
    pasted = await sol.watcher.submit_signature(USER, signature)
    assert pasted.kind is SolOutcomeKind.NOT_PAID and pasted.verdict is Verdict.FAILED
    assert await sol.payments_in_postgresql(signature) == 0
    sol.pay(order, PRICE)
    assert kinds(await sol.watcher.scan()) == [SolOutcomeKind.CREDITED]


async def test_an_underpayment_is_partial_with_the_shortfall_and_a_top_up_completes_it(sol: SolEnv) -> None:
    order = await sol.order()
    sol.pay(order, sol_to_lamports(Decimal("0.05")))
    outcomes = await sol.watcher.scan()
    assert kinds(outcomes) == [SolOutcomeKind.PARTIAL]
    partial = outcomes[0]
    assert partial.verdict is Verdict.UNDERPAID
    assert partial.received == Decimal("0.05") and partial.shortfall == Decimal("0.04")
    assert partial.order is not None and partial.order.status is OrderStatus.PARTIAL
    assert await sol.plan_end() is None
    assert await sol.notices() == [(USER, NoticeKind.PARTIAL, {"paid": "0.05", "missing": "0.04", "currency": "SOL"})]
    # The top-up, pasted by the user this time, completes the order.
    top_up = sol.pay(order, sol_to_lamports(Decimal("0.04")))
    done = await sol.watcher.submit_signature(USER, top_up)
    assert done.kind is SolOutcomeKind.CREDITED and done.verdict is Verdict.PAID
    assert done.order is not None and done.order.paid_amount == Decimal("0.09") and done.shortfall == 0
    assert await sol.plan_end() == done.plan_end is not None
    assert await sol.watcher.scan() == []  # paid: nothing more to watch
    assert [kind for _, kind, _ in await sol.notices()] == [NoticeKind.PARTIAL, NoticeKind.RECEIPT]
    assert sol.told == []


async def test_two_parts_in_one_pass_are_told_in_the_order_they_were_paid(sol: SolEnv) -> None:
    order = await sol.order()
    sol.pay(order, sol_to_lamports(Decimal("0.03")))
    sol.pay(order, sol_to_lamports(Decimal("0.07")))
    outcomes = await sol.watcher.scan()
    assert kinds(outcomes) == [SolOutcomeKind.PARTIAL, SolOutcomeKind.CREDITED]
    assert outcomes[0].shortfall == Decimal("0.06")
    stored = await sol.ledger.order(order.id)
    assert stored is not None and stored.paid_amount == Decimal("0.1")


async def test_the_tolerance_settles_a_payment_a_little_short(sol: SolEnv) -> None:
    watcher = sol.new_watcher(tolerance=Decimal("0.00001"))
    order = await sol.order()
    sol.pay(order, PRICE - 5000)
    outcomes = await watcher.scan()
    assert kinds(outcomes) == [SolOutcomeKind.CREDITED] and outcomes[0].verdict is Verdict.PAID


async def test_a_pasted_signature_must_pay_an_order_of_the_user(sol: SolEnv) -> None:
    mine, theirs = await sol.order(USER), await sol.order(OTHER)
    for_them = sol.pay(theirs, PRICE)
    unrelated = sol.node.add_transfer(PAYER, RECEIVER, PRICE)
    elsewhere = sol.node.add_transfer(PAYER, key(), PRICE, reference=mine.reference)
    watcher = sol.watcher
    assert (await watcher.submit_signature(USER, for_them)).kind is SolOutcomeKind.NO_ORDER
    assert (await watcher.submit_signature(USER, unrelated)).kind is SolOutcomeKind.NO_ORDER
    wrong_wallet = await watcher.submit_signature(USER, elsewhere)
    assert wrong_wallet.kind is SolOutcomeKind.NOT_PAID and wrong_wallet.verdict is Verdict.NOT_RECEIVED
    assert (await watcher.submit_signature(USER, "hello")).kind is SolOutcomeKind.INVALID
    unknown = str(Keypair().sign_message(b"never sent"))
    assert (await watcher.submit_signature(USER, unknown)).kind is SolOutcomeKind.NOT_FOUND
    assert await sol.plan_end(USER) is None
    # The owner's paste credits it.
    assert (await watcher.submit_signature(OTHER, for_them)).kind is SolOutcomeKind.CREDITED


async def test_a_payment_not_finalized_waits(sol: SolEnv) -> None:
    order = await sol.order()
    signature = sol.pay(order, PRICE, finalized=False)
    assert await sol.watcher.scan() == []
    assert (await sol.watcher.submit_signature(USER, signature)).kind is SolOutcomeKind.NOT_FOUND
    sol.node.finalize(signature)
    assert kinds(await sol.watcher.scan()) == [SolOutcomeKind.CREDITED]


async def test_the_watcher_reads_through_the_next_endpoint_when_one_rate_limits(
    sol: SolEnv, node2: SolanaRpcServer
) -> None:
    same_chain(sol.node, node2)
    sol.node.fail(429)
    async with SolRpc([sol.node.url, node2.url], asyncio.Semaphore(4)) as rpc:
        watcher = sol.new_watcher(rpc)
        order = await sol.order()
        sol.pay(order, PRICE, version=0)
        assert kinds(await watcher.scan()) == [SolOutcomeKind.CREDITED]
        # With every endpoint down the pass ends early, and the next one picks the payment up.
        node2.fail(500)
        second = await sol.order()
        sol.pay(second, PRICE)
        assert await watcher.scan() == [] and watcher.last_error is not None
        node2.fail(None)
        assert kinds(await watcher.scan()) == [SolOutcomeKind.CREDITED]
        pasted = await watcher.submit_signature(USER, sol.pay(await sol.order(), PRICE))
        assert pasted.kind is SolOutcomeKind.CREDITED


async def test_the_watcher_runs_in_the_background_and_is_poked_awake(sol: SolEnv) -> None:
    told = asyncio.Event()

    async def notify(outcome: SolOutcome) -> None:
        sol.told.append(outcome)
        told.set()

    watcher = SolWatcher(sol.ledger, sol.rpc, RECEIVER, notify, interval=3600, tell=frozenset(SolOutcomeKind))
    await watcher.start()
    try:
        async with asyncio.timeout(10):  # the first pass, at start, finds nothing to do
            while watcher.scans < 1:
                await asyncio.sleep(0.01)
        order = await sol.order()
        sol.pay(order, PRICE)
        watcher.poke()  # an hour's interval: only the poke makes it look now
        async with asyncio.timeout(10):
            await told.wait()
        assert kinds(sol.told) == [SolOutcomeKind.CREDITED] and watcher.running
    finally:
        await watcher.stop()
    assert not watcher.running


async def test_a_late_payment_is_left_to_a_paste_and_a_second_one_to_a_paid_order_is_refused(sol: SolEnv) -> None:
    request = TransferRequest.build(RECEIVER, MONTH.price_sol or Decimal(0))
    late = await sol.ledger.create_order(USER, MONTH, Rail.SOL, reference=request.reference, ttl=timedelta(0))
    signature = sol.pay(late, PRICE)
    assert await sol.watcher.scan() == []  # no longer watched
    pasted = await sol.watcher.submit_signature(USER, signature)
    assert pasted.kind is SolOutcomeKind.CREDITED  # the ledger still sells the plan for it
    again = sol.pay(late, PRICE)
    refused = await sol.watcher.submit_signature(USER, again)
    assert refused.kind is SolOutcomeKind.REJECTED and refused.reason == "order already paid"
    assert [kind for _, kind, _ in await sol.notices()] == [NoticeKind.RECEIPT, NoticeKind.REJECTED]
    assert await sol.payments_in_postgresql(again) == 0
