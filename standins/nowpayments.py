"""A local NOWPayments API for tests and the demo, speaking its wire format over HTTP.

`NowPaymentsServer` answers `POST /v1/invoice` (with the `x-api-key` header, else a 403 JSON
error as the real API sends) with the invoice object NOWPayments returns, and `GET /v1/status`
with `{"message": "OK"}`. The base URL (`server.url`) ends in `/v1`, like `NOWPAYMENTS_API_URL`.

The test plays the payer: `pay(invoice_id, status, ...)` posts an IPN to the invoice's
`ipn_callback_url` with the body NOWPayments sends (payment_id, invoice_id, payment_status,
pay_address, price/pay/actually_paid amounts, fee, ...) signed in `x-nowpayments-sig` with the
IPN secret (or with another secret when `forged`), and returns the HTTP status the bot answered.
One invoice gets one payment id, reused by every `pay` on it unless another is given, since a
payment goes through its statuses under one id. `send_ipn` posts any body as it is.

The signer is written here again rather than imported from the bot: the double is the outside
world, so a round trip between the two means something.

Knobs: `fail(status)` (every API request answers that status, e.g. 500), `pause`/`resume`
(requests are held unanswered), `delay` (seconds each API answer waits); observation:
`requests`, `in_flight`/`max_in_flight`, `invoices`, `ipns` (each IPN sent and the answer) and
`wait_for_requests`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final

import aiohttp
from aiohttp import web

from standins.feed_server import _Waitable
from standins.http_site import LocalSite

__all__ = ["NowPaymentsServer", "SentIpn", "StandinInvoice", "sign_ipn"]

DEFAULT_TIMEOUT: Final[float] = 10.0
# What a SOL payment looks like by default: the price in SOL at this rate.
DEFAULT_PAY_CURRENCY: Final[str] = "sol"
DEFAULT_RATE_USD: Final[Decimal] = Decimal("150")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAY_ADDRESS: Final[str] = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"


def _sorted_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_deep(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_deep(item) for item in value]
    return value


def sign_ipn(body: dict[str, Any], secret: str) -> str:
    """NOWPayments' `x-nowpayments-sig`: HMAC-SHA512 hex of the body with its keys sorted at
    every depth, serialized without whitespace."""
    text = json.dumps(_sorted_deep(body), separators=(",", ":"), ensure_ascii=False)
    return hmac.new(secret.encode(), text.encode(), hashlib.sha512).hexdigest()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: Decimal) -> float:
    return float(value)


@dataclass
class StandinInvoice:
    """An invoice the server made: the request's fields and the answer it gave."""

    id: int
    request: dict[str, Any]
    answer: dict[str, Any]
    payment_id: int | None = None  # set by the first `pay`

    @property
    def price_amount(self) -> Decimal:
        return Decimal(str(self.request["price_amount"]))

    @property
    def ipn_callback_url(self) -> str | None:
        url = self.request.get("ipn_callback_url")
        return url if isinstance(url, str) else None


@dataclass(frozen=True)
class SentIpn:
    """An IPN the server posted, and the HTTP status the receiver answered."""

    url: str
    body: dict[str, Any]
    signature: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class NowPaymentsServer(_Waitable):
    """The NOWPayments API on 127.0.0.1 (a free port unless told otherwise)."""

    def __init__(
        self,
        api_key: str,
        ipn_secret: str,
        *,
        rate_usd: Decimal = DEFAULT_RATE_USD,
        pay_currency: str = DEFAULT_PAY_CURRENCY,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.ipn_secret = ipn_secret
        self.rate_usd = rate_usd  # USD per unit of `pay_currency`
        self.pay_currency = pay_currency
        self.invoices: dict[int, StandinInvoice] = {}
        self.ipns: list[SentIpn] = []
        self.status: int | None = None  # when set, every API request answers this HTTP status
        self.delay = 0.0
        self.requests = 0  # API requests received, failures included
        self.in_flight = 0  # API requests being answered now
        self.max_in_flight = 0
        self._running = asyncio.Event()
        self._running.set()
        self._invoice_ids = itertools.count(4_522_651_432)
        self._payment_ids = itertools.count(5_077_125_051)
        self._purchase_ids = itertools.count(6_084_744_717)
        self._site = LocalSite("NOWPayments server")
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> NowPaymentsServer:
        app = web.Application(middlewares=[self._knobs])
        app.router.add_post("/v1/invoice", self._create_invoice)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/payment/", self._payment_page)
        await self._site.start(app, host, port)
        self._session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        self.resume()  # held requests must not hold the shutdown up
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._site.stop()

    async def __aenter__(self) -> NowPaymentsServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._site.port

    @property
    def origin(self) -> str:
        return self._site.origin

    @property
    def url(self) -> str:
        """The API base, as NOWPAYMENTS_API_URL takes it."""
        return self.origin + "/v1"

    # --- what the tests do -----------------------------------------------------------------

    def fail(self, status: int | None = HTTPStatus.INTERNAL_SERVER_ERROR) -> None:
        """Make every API request answer ``status`` (None: answer normally again)."""
        self.status = None if status is None else int(status)

    def pause(self) -> None:
        """Hold every API request unanswered until `resume` or `stop`."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def wait_for_requests(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self._wait(lambda: self.requests >= count, timeout)

    def invoice(self, invoice_id: int | str) -> StandinInvoice:
        return self.invoices[int(invoice_id)]

    def ipn_body(
        self,
        invoice_id: int | str,
        status: str,
        *,
        actually_paid: Decimal | float | None = None,
        payment_id: int | None = None,
    ) -> dict[str, Any]:
        """The body NOWPayments posts for the invoice's payment in `status`."""
        invoice = self.invoice(invoice_id)
        if payment_id is None:
            if invoice.payment_id is None:
                invoice.payment_id = next(self._payment_ids)
            payment_id = invoice.payment_id
        price = invoice.price_amount
        pay_amount = (price / self.rate_usd).quantize(Decimal("0.000000001"))
        if actually_paid is None:
            paid = Decimal(0) if status in ("waiting", "expired") else pay_amount
        else:
            paid = Decimal(str(actually_paid))
        now = _now_iso()
        # The field order of NOWPayments' own bodies: not sorted, so the receiver must sort.
        return {
            "payment_id": payment_id,
            "parent_payment_id": None,
            "invoice_id": invoice.id,
            "payment_status": status,
            "pay_address": PAY_ADDRESS,
            "payin_extra_id": None,
            "price_amount": _number(price),
            "price_currency": str(invoice.request.get("price_currency", "usd")).lower(),
            "pay_amount": _number(pay_amount),
            "actually_paid": _number(paid),
            "actually_paid_at_fiat": _number((paid * self.rate_usd).quantize(Decimal("0.01"))),
            "pay_currency": self.pay_currency,
            "order_id": invoice.request.get("order_id"),
            "order_description": invoice.request.get("order_description"),
            "purchase_id": str(next(self._purchase_ids)),
            "outcome_amount": _number((paid * Decimal("0.995")).quantize(Decimal("0.000000001"))),
            "outcome_currency": self.pay_currency,
            "payment_extra_ids": None,
            "fee": {
                "currency": self.pay_currency,
                "depositFee": 0,
                "withdrawalFee": 0,
                "serviceFee": _number((paid * Decimal("0.005")).quantize(Decimal("0.000000001"))),
            },
            "created_at": invoice.answer["created_at"],
            "updated_at": now,
        }

    async def pay(
        self,
        invoice_id: int | str,
        status: str,
        *,
        actually_paid: Decimal | float | None = None,
        payment_id: int | None = None,
        forged: bool = False,
    ) -> int:
        """Post the IPN of the invoice's payment in `status` to its `ipn_callback_url`; the
        HTTP status the receiver answered."""
        body = self.ipn_body(invoice_id, status, actually_paid=actually_paid, payment_id=payment_id)
        url = self.invoice(invoice_id).ipn_callback_url
        if url is None:
            raise ValueError(f"invoice {invoice_id} has no ipn_callback_url")
        return await self.send_ipn(url, body, forged=forged)

    async def send_ipn(
        self,
        url: str,
        body: dict[str, Any],
        *,
        forged: bool = False,
        signature: str | None = None,
        raw: bytes | None = None,
    ) -> int:
        """Post `body` (or the bytes `raw`) to `url` as NOWPayments does; `signature` replaces
        the computed one ("" sends none), `forged` signs with a secret that is not the store's."""
        secret = "not-the-ipn-secret" if forged else self.ipn_secret
        sig = sign_ipn(body, secret) if signature is None else signature
        headers = {"Content-Type": "application/json", "User-Agent": "NOWPayments IPN"}
        if sig:
            headers["x-nowpayments-sig"] = sig
        data = raw if raw is not None else json.dumps(body, separators=(",", ":")).encode()
        if self._session is None:
            raise RuntimeError("the NOWPayments server is not started")
        async with self._session.post(
            url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT)
        ) as response:
            await response.read()
            status = response.status
        self.ipns.append(SentIpn(url, body, sig, status, headers))
        await self._notify()
        return status

    # --- inside ----------------------------------------------------------------------------

    @web.middleware
    async def _knobs(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count API requests and apply the knobs before the endpoint answers."""
        if not request.path.startswith("/v1/"):
            return await handler(request)
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await self._notify()
        try:
            await request.read()
            await self._running.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status is not None:
                return web.Response(status=self.status, text=f"{HTTPStatus(self.status).phrase}\n")
            return await handler(request)
        finally:
            self.in_flight -= 1
            await self._notify()

    async def _create_invoice(self, request: web.Request) -> web.Response:
        if request.headers.get("x-api-key") != self.api_key:
            return _error(HTTPStatus.FORBIDDEN, "INVALID_API_KEY", "Invalid api key")
        try:
            payload = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(HTTPStatus.BAD_REQUEST, "INVALID_REQUEST_PARAMS", "Request body must be JSON")
        if not isinstance(payload, dict):
            return _error(HTTPStatus.BAD_REQUEST, "INVALID_REQUEST_PARAMS", '"value" must be of type object')
        price = payload.get("price_amount")
        if isinstance(price, bool) or not isinstance(price, int | float) or price <= 0:
            return _error(HTTPStatus.BAD_REQUEST, "INVALID_REQUEST_PARAMS", '"price_amount" must be a positive number')
        if not isinstance(payload.get("price_currency"), str):
            return _error(HTTPStatus.BAD_REQUEST, "INVALID_REQUEST_PARAMS", '"price_currency" is required')
        invoice_id = next(self._invoice_ids)
        now = _now_iso()
        answer = {
            "id": str(invoice_id),
            "token_id": str(invoice_id + 1_476_000_000),
            "order_id": payload.get("order_id"),
            "order_description": payload.get("order_description"),
            "price_amount": str(price),
            "price_currency": payload["price_currency"],
            "pay_currency": payload.get("pay_currency"),
            "ipn_callback_url": payload.get("ipn_callback_url"),
            "invoice_url": f"{self.origin}/payment/?iid={invoice_id}",
            "success_url": payload.get("success_url"),
            "cancel_url": payload.get("cancel_url"),
            "customer_email": None,
            "partially_paid_url": payload.get("partially_paid_url"),
            "payout_currency": None,
            "created_at": now,
            "updated_at": now,
            "is_fixed_rate": bool(payload.get("is_fixed_rate", False)),
            "is_fee_paid_by_user": bool(payload.get("is_fee_paid_by_user", False)),
            "source": None,
            "collect_user_data": False,
        }
        self.invoices[invoice_id] = StandinInvoice(invoice_id, payload, answer)
        return web.json_response(answer)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"message": "OK"})

    async def _payment_page(self, request: web.Request) -> web.Response:
        """The hosted payment page an invoice_url opens (a plain stand-in for the demo)."""
        iid = request.query.get("iid", "")
        invoice = self.invoices.get(int(iid)) if iid.isdecimal() else None
        if invoice is None:
            return web.Response(status=404, text="invoice not found\n")
        answer = invoice.answer
        return web.Response(
            text=f"NOWPayments stand-in: invoice {invoice.id}, {answer['price_amount']} {answer['price_currency']}\n"
        )


def _error(status: HTTPStatus, code: str, message: str) -> web.Response:
    """NOWPayments' error body."""
    body = {"status": False, "statusCode": int(status), "code": code, "message": message}
    return web.json_response(body, status=status)
