"""The SOL/USD price from Pyth: the account decoder, the usability rules, and `SolPriceSource`
against a local Solana JSON-RPC node (standins/solana_rpc.py).

Freshness is judged by an injected clock, so nothing here waits on the wall clock for its
verdict; the only real waits are bounded guards (and one short HTTP timeout for a stalled node).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from domain.events import CreateEvent
from domain.feed_adapters import pumpportal_parser
from services.sol_price import (
    DEFAULT_MAX_AGE,
    PYTH_RECEIVER_PROGRAM,
    SOL_USD_FEED_ID,
    SOL_USD_PRICE_ACCOUNT,
    OracleDataError,
    OraclePrice,
    SolPriceSource,
    parse_price_update,
    safe_rpc_url,
    why_unusable,
)
from standins import solana_rpc
from standins.solana_rpc import SolanaRpcServer, price_update_bytes

T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
OTHER_FEED = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"  # BTC/USD


class Clock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """A guard for background work: fails after `timeout`, passes as soon as it is true."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def rpc() -> AsyncIterator[SolanaRpcServer]:
    async with SolanaRpcServer() as server:
        yield server


@pytest.fixture
async def rpc2() -> AsyncIterator[SolanaRpcServer]:
    async with SolanaRpcServer() as server:
        yield server


@pytest.fixture
async def sources() -> AsyncIterator[Callable[..., SolPriceSource]]:
    """Makes SolPriceSources (clock and a roomy semaphore by default) and stops them all."""
    made: list[SolPriceSource] = []

    def make(urls: list[str], clock: Clock, **options: Any) -> SolPriceSource:
        options.setdefault("api_limit", asyncio.Semaphore(8))
        source = SolPriceSource(urls, options.pop("api_limit"), clock=clock, **options)
        made.append(source)
        return source

    yield make
    for source in made:
        await source.stop()


# --- parse_price_update ---------------------------------------------------------------------


def test_a_full_update_round_trips_at_the_documented_offsets():
    data = price_update_bytes(151.25, exponent=-8, conf=0.0725, publish_time=T0, ema_price=150.5, posted_slot=123_456)
    assert len(data) == 134  # as allocated on chain: one unused byte after a Full update
    assert struct.unpack_from("<q", data, 73)[0] == 15_125_000_000
    assert struct.unpack_from("<i", data, 89)[0] == -8
    assert struct.unpack_from("<q", data, 93)[0] == int(T0.timestamp())

    price = parse_price_update(data)
    assert price == OraclePrice(
        feed_id=SOL_USD_FEED_ID,
        price=151.25,
        confidence=0.0725,
        exponent=-8,
        publish_time=T0,
        verification="full",
        num_signatures=None,
        ema_price=150.5,
        posted_slot=123_456,
    )
    assert price.publish_time.tzinfo is UTC


def test_a_partial_update_shifts_everything_by_the_signature_count():
    data = price_update_bytes(
        98.7654321, exponent=-8, conf=0.05, publish_time=T0, verification="partial", num_signatures=7
    )
    assert len(data) == 134 and data[40] == 0 and data[41] == 7
    assert struct.unpack_from("<q", data, 74)[0] == 9_876_543_210
    price = parse_price_update(data)
    assert price.verification == "partial" and price.num_signatures == 7
    assert price.price == 98.7654321 and price.confidence == 0.05
    assert price.publish_time == T0 and price.feed_id == SOL_USD_FEED_ID


def test_unpadded_data_and_other_exponents_parse():
    data = price_update_bytes(0.000123, exponent=-10, conf=0.000001, publish_time=T0, length=None)
    assert len(data) == 133
    price = parse_price_update(data)
    assert price.price == 0.000123 and price.exponent == -10
    assert parse_price_update(bytearray(data)) == price


def _with(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    buffer = bytearray(data)
    struct.pack_into(fmt, buffer, offset, value)
    return bytes(buffer)


GOOD = price_update_bytes(150.0, publish_time=T0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (GOOD[:40], "too short"),
        (GOOD[:100], "too short"),
        (price_update_bytes(150.0, publish_time=T0, verification="partial")[:133], "too short"),
        (b"\0" * 8 + GOOD[8:], "discriminator"),
        (GOOD[:40] + b"\x02" + GOOD[41:], "verification level"),
        (_with(GOOD, 89, "<i", 2_000_000_000), "exponent"),
        (_with(GOOD, 93, "<q", 2**63 - 1), "publish_time"),
    ],
    ids=["empty", "header-only", "truncated", "partial-truncated", "discriminator", "tag", "exponent", "time"],
)
def test_malformed_data_raises_a_clear_oracle_data_error(data: bytes, message: str):
    with pytest.raises(OracleDataError, match=message):
        parse_price_update(data)
    assert issubclass(OracleDataError, ValueError)


def test_non_bytes_is_an_oracle_data_error():
    with pytest.raises(OracleDataError, match="bytes"):
        parse_price_update("not bytes")  # type: ignore[arg-type]


# --- why_unusable ---------------------------------------------------------------------------


def good_price(**changes: Any) -> OraclePrice:
    return replace(parse_price_update(price_update_bytes(150.0, conf=0.075, publish_time=T0)), **changes)


def test_a_fresh_full_sol_price_from_the_receiver_is_usable():
    assert why_unusable(good_price(), owner=PYTH_RECEIVER_PROGRAM, now=T0 + timedelta(seconds=10)) is None
    # Exactly max_age old is still usable; a little in the future (clock skew) too.
    assert why_unusable(good_price(), owner=PYTH_RECEIVER_PROGRAM, now=T0 + DEFAULT_MAX_AGE) is None
    assert why_unusable(good_price(), owner=PYTH_RECEIVER_PROGRAM, now=T0 - timedelta(seconds=30)) is None
    # Confidence of exactly 2% is the limit, not over it.
    assert why_unusable(good_price(confidence=3.0), owner=PYTH_RECEIVER_PROGRAM, now=T0) is None


@pytest.mark.parametrize(
    ("price", "owner", "now", "reason"),
    [
        (good_price(), PYTH_RECEIVER_PROGRAM, T0 + DEFAULT_MAX_AGE + timedelta(seconds=1), "stale"),
        (good_price(), PYTH_RECEIVER_PROGRAM, T0 - DEFAULT_MAX_AGE - timedelta(seconds=1), "future"),
        (good_price(feed_id=OTHER_FEED), PYTH_RECEIVER_PROGRAM, T0, "wrong feed"),
        (good_price(), solana_rpc.SYSTEM_PROGRAM, T0, "owner"),
        (good_price(verification="partial", num_signatures=5), PYTH_RECEIVER_PROGRAM, T0, "partial"),
        (good_price(confidence=3.01), PYTH_RECEIVER_PROGRAM, T0, "confidence"),
        (good_price(price=0.0), PYTH_RECEIVER_PROGRAM, T0, "non-positive"),
        (good_price(price=-150.0), PYTH_RECEIVER_PROGRAM, T0, "non-positive"),
    ],
    ids=["stale", "future", "wrong-feed", "wrong-owner", "partial", "wide-confidence", "zero", "negative"],
)
def test_unusable_prices_are_rejected_with_a_reason(price: OraclePrice, owner: str, now: datetime, reason: str):
    rejection = why_unusable(price, owner=owner, now=now)
    assert rejection is not None and reason in rejection


def test_max_age_and_feed_are_parameters():
    late = T0 + timedelta(seconds=61)
    assert why_unusable(good_price(), owner=PYTH_RECEIVER_PROGRAM, now=late, max_age=timedelta(minutes=1))
    btc = good_price(feed_id=OTHER_FEED)
    assert why_unusable(btc, owner=PYTH_RECEIVER_PROGRAM, now=T0, feed_id="0x" + OTHER_FEED.upper()) is None


def test_safe_rpc_url_keeps_only_scheme_and_host():
    assert safe_rpc_url("https://api.mainnet-beta.solana.com") == "https://api.mainnet-beta.solana.com"
    assert safe_rpc_url("https://mainnet.helius-rpc.com/?api-key=SECRET") == "https://mainnet.helius-rpc.com/…"
    assert safe_rpc_url("https://x.solana-mainnet.quiknode.pro/SECRET/") == "https://x.solana-mainnet.quiknode.pro/…"
    assert safe_rpc_url("http://user:SECRET@127.0.0.1:8899") == "http://127.0.0.1:8899"
    assert safe_rpc_url("http://[::1") == "<invalid url>"


# --- SolPriceSource against the RPC double ---------------------------------------------------


async def test_refresh_reads_the_price_with_a_real_get_account_info(rpc, clock, sources):
    rpc.set_price(150.25, publish_time=clock.now - timedelta(seconds=3))
    source = sources([rpc.url], clock)
    assert source.current() is None  # nothing read yet

    assert await source.refresh() == 150.25
    assert source.current() == 150.25
    [call] = rpc.calls
    assert call.method == "getAccountInfo"
    assert call.params == [SOL_USD_PRICE_ACCOUNT, {"encoding": "base64", "commitment": "confirmed"}]
    assert isinstance(call.id, int)
    assert source.refreshes == 1 and source.failures == 0 and source.last_url == 0
    health = source.health()
    assert health["status"] == "ok" and health["price"] == 150.25 and health["age_s"] == 3.0


@pytest.mark.parametrize(
    "break_first",
    [
        pytest.param(lambda server: server.fail(500), id="http-500"),
        pytest.param(lambda server: server.fail(429), id="http-429"),
        pytest.param(lambda server: server.fail_rpc(-32005, "Node is behind by 42 slots"), id="json-rpc-error"),
        pytest.param(lambda server: server.remove_account(SOL_USD_PRICE_ACCOUNT), id="null-value"),
        pytest.param(lambda server: server.set_price(150.0, publish_time=T0 - timedelta(hours=1)), id="stale-price"),
        pytest.param(
            lambda server: server.set_price(150.0, publish_time=T0, owner=solana_rpc.SYSTEM_PROGRAM), id="wrong-owner"
        ),
        pytest.param(
            lambda server: server.set_account(SOL_USD_PRICE_ACCOUNT, b"junk", owner=PYTH_RECEIVER_PROGRAM),
            id="malformed",
        ),
    ],
)
async def test_a_failing_url_rotates_to_the_next_one(rpc, rpc2, clock, sources, break_first):
    for server, price in ((rpc, 140.0), (rpc2, 150.0)):
        server.set_price(price, publish_time=T0)
    break_first(rpc)
    source = sources([rpc.url, rpc2.url], clock)

    assert await source.refresh() == 150.0
    assert (rpc.requests, rpc2.requests) == (1, 1)
    assert source.failures == 1 and source.last_url == 1 and source.last_error

    # The URL that worked is where the next refresh starts: the broken one is not asked again.
    assert await source.refresh() == 150.0
    assert (rpc.requests, rpc2.requests) == (1, 2)


async def test_a_stalled_url_times_out_and_rotates(rpc, rpc2, clock, sources):
    rpc.set_price(140.0, publish_time=T0)
    rpc2.set_price(150.0, publish_time=T0)
    rpc.pause()
    source = sources([rpc.url, rpc2.url], clock, timeout=0.5)

    assert await source.refresh() == 150.0
    assert rpc.requests == 1 and rpc2.requests == 1
    assert source.last_error is not None and "timed out" in source.last_error


async def test_each_refresh_starts_after_the_url_that_failed_last(clock, sources):
    async with SolanaRpcServer() as a, SolanaRpcServer() as b, SolanaRpcServer() as c:
        for server in (a, b, c):
            server.set_price(150.0, publish_time=T0)
        source = sources([a.url, b.url, c.url], clock)
        a.fail(500)
        await source.refresh()  # a fails, b answers
        b.fail(500)
        await source.refresh()  # b fails, c answers; a is not retried
        assert (a.requests, b.requests, c.requests) == (1, 2, 1)
        assert source.last_url == 2
        c.fail(500)
        a.fail(None)
        assert await source.refresh() == 150.0  # c fails, a answers again
        assert (a.requests, b.requests, c.requests) == (2, 2, 2) and source.last_url == 0


async def test_while_every_url_fails_the_last_good_price_serves_until_max_age(rpc, rpc2, clock, sources):
    rpc.set_price(150.0, publish_time=T0)
    source = sources([rpc.url, rpc2.url], clock, max_age=timedelta(minutes=5))
    assert await source.refresh() == 150.0

    rpc.fail(500)
    rpc2.fail(429)
    clock.advance(timedelta(minutes=4))
    assert await source.refresh() is None  # nothing new...
    assert source.current() == 150.0  # ...but the last good price is young enough
    assert source.failures == 2 and source.refreshes == 2
    assert source.health()["status"] == "ok"

    clock.advance(timedelta(minutes=1))
    assert source.current() == 150.0  # exactly max_age old
    clock.advance(timedelta(seconds=1))
    assert await source.refresh() is None
    assert source.current() is None
    assert source.last_price is not None and source.last_price.price == 150.0
    health = source.health()
    assert health["status"] == "degraded" and health["failures"] == 4 and health["price"] == 150.0


async def test_an_older_price_from_a_lagging_node_does_not_replace_a_newer_one(rpc, rpc2, clock, sources):
    rpc.set_price(150.0, publish_time=T0)
    rpc2.set_price(149.0, publish_time=T0 - timedelta(seconds=20))
    source = sources([rpc.url, rpc2.url], clock)
    assert await source.refresh() == 150.0
    rpc.fail(500)
    assert await source.refresh() == 150.0
    assert rpc2.requests == 1 and source.last_price is not None and source.last_price.publish_time == T0


async def test_the_semaphore_bounds_concurrent_requests(rpc, clock, sources):
    rpc.set_price(150.0, publish_time=T0)
    api_limit = asyncio.Semaphore(1)
    source = sources([rpc.url], clock, api_limit=api_limit)
    rpc.pause()
    refreshes = [asyncio.create_task(source.refresh()) for _ in range(2)]
    await rpc.wait_for_in_flight(1)
    assert api_limit.locked()
    # A correct source never sends the second request while the first holds the slot; this
    # bounded wait only gives a broken one the chance to show itself.
    with pytest.raises(TimeoutError):
        await rpc.wait_for_in_flight(2, timeout=0.2)
    rpc.resume()
    assert await asyncio.gather(*refreshes) == [150.0, 150.0]
    assert rpc.requests == 2 and rpc.max_in_flight == 1


async def test_with_room_in_the_semaphore_requests_do_overlap(rpc, clock, sources):
    """The control for the test above: the double does see concurrency when it is allowed."""
    rpc.set_price(150.0, publish_time=T0)
    source = sources([rpc.url], clock, api_limit=asyncio.Semaphore(2))
    rpc.pause()
    refreshes = [asyncio.create_task(source.refresh()) for _ in range(2)]
    await rpc.wait_for_in_flight(2)
    rpc.resume()
    assert await asyncio.gather(*refreshes) == [150.0, 150.0]
    assert rpc.max_in_flight == 2


async def test_start_refreshes_in_the_background_and_stop_closes_everything(rpc, clock, sources):
    rpc.set_price(150.0, publish_time=T0)
    source = sources([rpc.url], clock, refresh_seconds=0.05)
    await source.start()
    await source.start()  # idempotent
    assert source.running
    await wait_until(lambda: source.refreshes >= 2)
    assert source.current() == 150.0
    rpc.set_price(151.0, publish_time=T0 + timedelta(seconds=1))
    await wait_until(lambda: source.current() == 151.0)

    await source.stop()
    assert not source.running and source.health()["running"] is False
    requests = rpc.requests
    await asyncio.sleep(0.15)  # a few intervals: nothing more is asked
    assert rpc.requests == requests


async def test_failures_are_logged_without_credentials(rpc, clock, sources, caplog):
    rpc.set_price(150.0, publish_time=T0)
    port = rpc.port
    urls = [
        f"http://user:PASSWORD1@127.0.0.1:{port}/?api-key=QUERYKEY1",  # answers 500
        f"http://127.0.0.1:{port}/PATHTOKEN1/",  # no such route: 404
    ]
    rpc.fail(500)
    source = sources(urls, clock)
    with caplog.at_level(logging.DEBUG, logger="alertbot.sol_price"):
        assert await source.refresh() is None
    assert "HTTP 500" in caplog.text and "HTTP 404" in caplog.text
    shown = caplog.text + json.dumps(source.health())
    for secret in ("PASSWORD1", "QUERYKEY1", "PATHTOKEN1", "api-key"):
        assert secret not in shown


async def test_an_unreachable_url_is_a_failure_that_names_no_url(clock, sources):
    with_socket = SolanaRpcServer()
    await with_socket.start()
    dead_port = with_socket.port
    await with_socket.stop()  # the port is now closed
    source = sources([f"http://127.0.0.1:{dead_port}/?api-key=SECRETKEY"], clock)
    assert await source.refresh() is None
    assert source.last_error is not None and "connection failed" in source.last_error
    assert "SECRETKEY" not in source.last_error


# --- the PumpPortal parser priced by the source ----------------------------------------------


def pumpportal_create() -> str:
    """A pump.fun creation as subscribeNewToken delivers it (values made up)."""
    return json.dumps(
        {
            "signature": "5" * 88,
            "mint": "8yZ1rj5nHbUFuCbnoowE6rHLZYiuTe1tbxEskgzUpump",
            "traderPublicKey": "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
            "txType": "create",
            "initialBuy": 97_545_454.545454,
            "solAmount": 3,
            "bondingCurveKey": "BjZ2GdfQ7cK4x5QVCwEf1MrDKvwXoh3fCT8aMUtDWvyG",
            "vTokensInBondingCurve": 975_454_545.454546,
            "vSolInBondingCurve": 32.999999999999986,
            "marketCapSol": 33.830382106244144,
            "name": "Moon Dog",
            "symbol": "MDOG",
            "uri": "https://ipfs.io/ipfs/QmMoonDogMetadata",
            "pool": "pump",
        }
    )


async def test_pumpportal_market_caps_are_priced_with_the_oracle(rpc, clock, sources):
    rpc.set_price(187.42, publish_time=T0)
    source = sources([rpc.url], clock)
    parse = pumpportal_parser(source.current)

    before = parse(pumpportal_create(), 0.0)
    assert isinstance(before, CreateEvent) and before.token.market_cap_usd is None  # no price yet

    await source.refresh()
    event = parse(pumpportal_create(), 0.0)
    assert isinstance(event, CreateEvent)
    assert event.token.market_cap_usd is not None
    assert math.isclose(event.token.market_cap_usd, 33.830382106244144 * 187.42)

    clock.advance(DEFAULT_MAX_AGE + timedelta(seconds=1))
    stale = parse(pumpportal_create(), 0.0)
    assert isinstance(stale, CreateEvent) and stale.token.market_cap_usd is None


# --- the double itself -----------------------------------------------------------------------


async def _post(url: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return response.status, await response.json(content_type=None)


async def test_the_double_answers_like_a_solana_node(rpc):
    data = price_update_bytes(150.0, publish_time=T0)
    rpc.set_account(SOL_USD_PRICE_ACCOUNT, data, owner=PYTH_RECEIVER_PROGRAM)

    status, answer = await _post(
        rpc.url,
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "getAccountInfo",
            "params": [SOL_USD_PRICE_ACCOUNT, {"encoding": "base64"}],
        },
    )
    assert status == 200 and answer["id"] == 7 and answer["jsonrpc"] == "2.0"
    value = answer["result"]["value"]
    assert answer["result"]["context"] == {"apiVersion": "2.2.0", "slot": rpc.slot}
    assert value["owner"] == PYTH_RECEIVER_PROGRAM and value["space"] == 134
    assert value["rentEpoch"] == 18446744073709551615 and value["executable"] is False
    assert value["lamports"] == (134 + 128) * 6960
    assert base64.b64decode(value["data"][0]) == data and value["data"][1] == "base64"

    _, missing = await _post(
        rpc.url,
        {
            "jsonrpc": "2.0",
            "id": 8,
            "method": "getAccountInfo",
            "params": ["So11111111111111111111111111111111111111112"],
        },
    )
    assert missing["result"]["value"] is None

    _, unknown = await _post(rpc.url, {"jsonrpc": "2.0", "id": 9, "method": "getBogus", "params": []})
    assert unknown == {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 9}

    _, batch = await _post(
        rpc.url, [{"jsonrpc": "2.0", "id": 1, "method": "getSlot"}, {"jsonrpc": "2.0", "id": 2, "method": "getHealth"}]
    )
    assert [item["result"] for item in batch] == [rpc.slot, "ok"]
    assert rpc.methods()["getAccountInfo"] == 2 and rpc.requests == 4


async def test_the_double_takes_new_methods_as_handlers(rpc):
    def get_signatures(params: Any) -> list[dict[str, Any]]:
        if params[0] != "Receiver1111111111111111111111111111111111":
            raise solana_rpc.RpcError(-32602, "Invalid param: Invalid")
        return [{"signature": "5" * 88, "slot": rpc.slot, "err": None, "blockTime": int(T0.timestamp())}]

    rpc.handlers["getSignaturesForAddress"] = get_signatures
    _, answer = await _post(
        rpc.url,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "getSignaturesForAddress",
            "params": ["Receiver1111111111111111111111111111111111"],
        },
    )
    assert answer["result"][0]["signature"] == "5" * 88
    _, error = await _post(
        rpc.url, {"jsonrpc": "2.0", "id": 2, "method": "getSignaturesForAddress", "params": ["nope"]}
    )
    assert error["error"]["code"] == -32602


async def test_the_double_fails_on_demand(rpc):
    rpc.fail(429)
    status, answer = await _post(rpc.url, {"jsonrpc": "2.0", "id": 1, "method": "getSlot"})
    assert status == 429 and answer["error"]["code"] == 429
    rpc.fail(None)
    rpc.fail_rpc(-32005, "Node is behind by 42 slots")
    status, answer = await _post(rpc.url, {"jsonrpc": "2.0", "id": 2, "method": "getSlot"})
    assert status == 200 and answer["error"] == {"code": -32005, "message": "Node is behind by 42 slots"}
