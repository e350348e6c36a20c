"""SOL payments against local Solana JSON-RPC nodes (standins/solana_rpc.py): the node's wire
format, the client's rotation over several endpoints (payments/sol_rpc.py), and the watcher and
pasted signatures crediting the ledger (payments/sol_watcher.py) on real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from solders.keypair import Keypair
from solders.rpc.responses import GetSignaturesForAddressResp, GetTransactionResp

from payments.sol_rpc import SolRpc, SolRpcUnavailable
from standins.solana_rpc import SolanaRpcServer

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
