"""NOWPayments: the IPN signature, what an IPN says, and invoices made against the stand-in API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from payments.nowpayments import (
    IPN_PATH,
    NowPaymentsClient,
    NowPaymentsError,
    ipn_callback_url,
    ipn_signature,
    parse_ipn,
    underpayment,
    verify_ipn,
)
from services.http_api import NOWPAYMENTS_IPN_PATH, ServingFlag, build_http_app
from standins.nowpayments import NowPaymentsServer, sign_ipn

SECRET = "ipn-secret-7c1f"
API_KEY = "NP-API-KEY-0001"

# An IPN as NOWPayments orders its fields: not sorted, a nested object not sorted either.
BODY = (
    b'{"payment_id":5077125051,"payment_status":"finished","price_amount":9.99,'
    b'"fee":{"serviceFee":0.0003,"currency":"sol","depositFee":0},"order_id":"ord-1","actually_paid":0.0666}'
)
# The same object with its keys sorted at every depth, written out by hand.
SORTED = (
    b'{"actually_paid":0.0666,"fee":{"currency":"sol","depositFee":0,"serviceFee":0.0003},'
    b'"order_id":"ord-1","payment_id":5077125051,"payment_status":"finished","price_amount":9.99}'
)


def hand_signature(text: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), text, hashlib.sha512).hexdigest()


# --- the signature ------------------------------------------------------------------------


def test_signature_is_hmac_sha512_over_the_body_sorted_at_every_depth() -> None:
    expected = hand_signature(SORTED)
    assert ipn_signature(json.loads(BODY), SECRET) == expected
    assert verify_ipn(BODY, expected, SECRET) == json.loads(BODY)
    # Signing the body as it came (top level unsorted, or only the top level sorted) is wrong.
    assert verify_ipn(BODY, hand_signature(BODY), SECRET) is None
    top_only = json.dumps(json.loads(BODY), sort_keys=False, separators=(",", ":")).encode()
    assert verify_ipn(BODY, hand_signature(top_only), SECRET) is None


def test_the_stand_in_signs_as_nowpayments_does() -> None:
    assert sign_ipn(json.loads(BODY), SECRET) == hand_signature(SORTED)


@pytest.mark.parametrize(
    ("body", "signature", "secret"),
    [
        (BODY, None, SECRET),  # no header
        (BODY, "", SECRET),
        (BODY, hand_signature(SORTED, "another-secret"), SECRET),  # forged
        (BODY, hand_signature(SORTED)[:-2], SECRET),  # truncated
        (BODY, hand_signature(SORTED), ""),  # no secret configured: nothing verifies
        (BODY.replace(b"9.99", b"0.01"), hand_signature(SORTED), SECRET),  # tampered body
        (b"not json", hand_signature(b"not json"), SECRET),
        (b"\xff\xfe", hand_signature(b"\xff\xfe"), SECRET),
        (b"[1,2]", hand_signature(b"[1,2]"), SECRET),  # JSON but not an object
        (b'"text"', hand_signature(b'"text"'), SECRET),
        (b"", hand_signature(b""), SECRET),
    ],
)
def test_what_never_verifies(body: bytes, signature: str | None, secret: str) -> None:
    assert verify_ipn(body, signature, secret) is None


def test_upper_case_hex_and_whitespace_around_the_header_verify() -> None:
    assert verify_ipn(BODY, " " + hand_signature(SORTED).upper() + " ", SECRET) is not None


def test_non_ascii_text_verifies_escaped_or_not() -> None:
    body = '{"payment_id":1,"order_description":"Подписка 30 дней","payment_status":"waiting"}'.encode()
    raw = '{"order_description":"Подписка 30 дней","payment_id":1,"payment_status":"waiting"}'.encode()
    escaped = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    assert escaped != raw
    assert verify_ipn(body, hand_signature(raw), SECRET) is not None
    assert verify_ipn(body, hand_signature(escaped), SECRET) is not None


# --- what an IPN says ---------------------------------------------------------------------


def test_parse_ipn_reads_the_fields_as_exact_decimals() -> None:
    record = parse_ipn(
        {
            "payment_id": 5077125051,
            "invoice_id": 4522651432,
            "payment_status": "partially_paid",
            "order_id": "ord-1",
            "price_amount": 9.99,
            "price_currency": "usd",
            "pay_amount": 0.0666,
            "actually_paid": 0.05,
            "pay_currency": "sol",
            "outcome_amount": 0.049,
            "outcome_currency": "sol",
        }
    )
    assert record.payment_id == "5077125051"
    assert record.invoice_id == "4522651432"
    assert record.payment_status == "partially_paid"
    assert record.price_amount == Decimal("9.99")
    assert record.pay_amount == Decimal("0.0666")
    assert record.actually_paid == Decimal("0.05")
    assert (record.price_currency, record.pay_currency) == ("USD", "SOL")
    assert underpayment(record) == Decimal("0.0166")


@pytest.mark.parametrize(
    "payload",
    [{"payment_status": "finished"}, {"payment_id": 1}, {"payment_id": True, "payment_status": "finished"}],
)
def test_parse_ipn_wants_a_payment_id_and_status(payload: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        parse_ipn(payload)


def test_underpayment_is_none_when_nothing_is_missing_or_unknown() -> None:
    base = {"payment_id": 1, "payment_status": "finished", "pay_currency": "sol"}
    assert underpayment(parse_ipn({**base, "pay_amount": 0.1, "actually_paid": 0.1})) is None
    assert underpayment(parse_ipn({**base, "pay_amount": 0.1, "actually_paid": 0.2})) is None
    assert underpayment(parse_ipn(base)) is None
    assert underpayment(parse_ipn({**base, "pay_amount": "0.1", "actually_paid": None})) == Decimal("0.1")


def test_the_callback_url_is_the_contract_route() -> None:
    assert IPN_PATH == NOWPAYMENTS_IPN_PATH == "/ipn/nowpayments"
    assert ipn_callback_url("https://bot.example.com/") == "https://bot.example.com/ipn/nowpayments"
    assert ipn_callback_url("https://bot.example.com/base") == "https://bot.example.com/base/ipn/nowpayments"


# --- invoices against the stand-in --------------------------------------------------------


@pytest.fixture
async def gateway() -> AsyncIterator[NowPaymentsServer]:
    async with NowPaymentsServer(API_KEY, SECRET) as server:
        yield server


@pytest.fixture
async def client(gateway: NowPaymentsServer) -> AsyncIterator[NowPaymentsClient]:
    np_client = NowPaymentsClient(gateway.url, API_KEY, asyncio.Semaphore(4))
    yield np_client
    await np_client.close()


async def test_create_invoice_sends_the_callback_url_and_order_and_returns_id_and_url(
    gateway: NowPaymentsServer, client: NowPaymentsClient
) -> None:
    callback = ipn_callback_url("https://bot.example.com")
    invoice = await client.create_invoice(
        price_amount=Decimal("9.99"),
        price_currency="USD",
        order_id="ord-42",
        ipn_callback_url=callback,
        order_description="Pro, 30 days",
    )
    made = gateway.invoice(invoice.id)
    assert made.request == {
        "price_amount": 9.99,
        "price_currency": "usd",
        "order_id": "ord-42",
        "ipn_callback_url": "https://bot.example.com/ipn/nowpayments",
        "order_description": "Pro, 30 days",
    }
    invoice_id, url = invoice
    assert invoice_id == made.answer["id"]
    assert url == made.answer["invoice_url"]
    assert await client.status() == "OK"


async def test_a_wrong_api_key_raises_the_gateways_message(gateway: NowPaymentsServer) -> None:
    wrong = NowPaymentsClient(gateway.url, "not-the-key", asyncio.Semaphore(1))
    try:
        with pytest.raises(NowPaymentsError) as caught:
            await wrong.create_invoice(
                price_amount=Decimal(5), price_currency="usd", order_id="o", ipn_callback_url="https://x/ipn"
            )
    finally:
        await wrong.close()
    assert caught.value.status == 403
    assert caught.value.code == "INVALID_API_KEY"
    assert caught.value.message == "Invalid api key"
    assert "not-the-key" not in str(caught.value)
    assert gateway.invoices == {}


async def test_a_failing_gateway_raises_a_clear_error(gateway: NowPaymentsServer, client: NowPaymentsClient) -> None:
    gateway.fail(500)
    with pytest.raises(NowPaymentsError, match="HTTP 500"):
        await client.create_invoice(
            price_amount=Decimal(5), price_currency="usd", order_id="o", ipn_callback_url="https://x/ipn"
        )
    gateway.fail(None)
    assert (
        await client.create_invoice(
            price_amount=Decimal(5), price_currency="usd", order_id="o", ipn_callback_url="https://x/ipn"
        )
    ).id


async def test_an_unreachable_gateway_raises_without_quoting_the_url() -> None:
    async with NowPaymentsServer(API_KEY, SECRET) as server:
        url = server.url
    np_client = NowPaymentsClient(url, API_KEY, asyncio.Semaphore(1))
    try:
        with pytest.raises(NowPaymentsError, match="connection failed") as caught:
            await np_client.status()
    finally:
        await np_client.close()
    assert "127.0.0.1" not in str(caught.value)


async def test_calls_stay_within_the_shared_bound(gateway: NowPaymentsServer) -> None:
    np_client = NowPaymentsClient(gateway.url, API_KEY, asyncio.Semaphore(1))
    gateway.pause()
    calls = [
        asyncio.create_task(
            np_client.create_invoice(
                price_amount=Decimal(5), price_currency="usd", order_id=f"o{i}", ipn_callback_url="https://x/ipn"
            )
        )
        for i in range(3)
    ]
    try:
        await gateway.wait_for_requests(1)
        gateway.resume()
        invoices = await asyncio.gather(*calls)
    finally:
        await np_client.close()
    assert len({invoice.id for invoice in invoices}) == 3
    assert gateway.requests == 3
    assert gateway.max_in_flight == 1


# --- the HTTP route -----------------------------------------------------------------------


async def test_the_ipn_route_hands_body_and_signature_over_and_answers_the_handlers_status() -> None:
    seen: list[tuple[bytes, str | None]] = []

    async def handler(body: bytes, signature: str | None) -> int:
        seen.append((body, signature))
        return 401 if signature != "good" else 200

    app = build_http_app(_no_health, ServingFlag(), CollectorRegistry(), nowpayments_ipn_handler=handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(base + IPN_PATH, data=BODY, headers={"x-nowpayments-sig": "good"}) as answer:
                assert answer.status == 200
            async with session.post(base + IPN_PATH, data=BODY) as answer:
                assert answer.status == 401
            async with session.post(base + IPN_PATH, data=b"x" * (65 * 1024)) as answer:
                assert answer.status == 413
    finally:
        await runner.cleanup()
    assert seen == [(BODY, "good"), (BODY, None)]


async def test_without_a_handler_there_is_no_ipn_route() -> None:
    app = build_http_app(_no_health, ServingFlag(), CollectorRegistry())
    assert all(resource.canonical != IPN_PATH for resource in app.router.resources())


async def _no_health() -> dict[str, object]:
    return {}
