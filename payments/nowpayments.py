"""NOWPayments: the invoice the user pays on, and the IPN signature that tells its callbacks apart
from forgeries.

NOWPayments signs each IPN (its POST to the invoice's `ipn_callback_url`) with HMAC-SHA512 under
the store's IPN secret, over the body re-serialized with the keys sorted at every depth and no
whitespace; the hex digest comes in the `x-nowpayments-sig` header. `ipn_signature`,
`verify_ipn`, `parse_ipn` and `underpayment` are pure; `NowPaymentsClient` does the HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NamedTuple

import aiohttp

from domain.plans import Order

logger = logging.getLogger("alertbot.nowpayments")

__all__ = [
    "IPN_PATH",
    "SIGNATURE_HEADER",
    "Invoice",
    "IpnRecord",
    "NowPaymentsClient",
    "NowPaymentsError",
    "canonical_json",
    "ipn_callback_url",
    "ipn_signature",
    "parse_ipn",
    "underpayment",
    "verify_ipn",
]

#: Where this service takes NOWPayments' IPNs (docs/contract.md).
IPN_PATH: Final[str] = "/ipn/nowpayments"
SIGNATURE_HEADER: Final[str] = "x-nowpayments-sig"
_MAX_ANSWER_BYTES: Final[int] = 1 << 20
_MAX_ERROR_TEXT: Final[int] = 200


# --- the IPN signature (pure) -------------------------------------------------------------


def canonical_json(payload: Any, *, ascii_only: bool = False) -> bytes:
    """`payload` as NOWPayments signs it: keys sorted at every depth, compact separators.

    Its signer serializes like JavaScript's JSON.stringify, which leaves non-ASCII text as it
    is; `ascii_only` gives the escaped form that other reference implementations produce.
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=False)
    return text.encode("utf-8")


def ipn_signature(payload: Any, secret: str) -> str:
    """The hex HMAC-SHA512 of `payload`'s canonical JSON under the IPN secret."""
    return hmac.new(secret.encode("utf-8"), canonical_json(payload), hashlib.sha512).hexdigest()


def verify_ipn(body: bytes, signature: str | None, secret: str) -> dict[str, Any] | None:
    """The IPN's JSON object when `signature` is NOWPayments' signature of `body`, else None.

    A missing signature or secret, a body that is not JSON, or JSON that is not an object never
    verifies. The digests are compared in constant time.
    """
    if not signature or not secret:
        return None
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(payload, dict):
        return None
    given = signature.strip().lower().encode("ascii", "replace")
    key = secret.encode("utf-8")
    forms = [canonical_json(payload)]
    escaped = canonical_json(payload, ascii_only=True)
    if escaped != forms[0]:
        forms.append(escaped)
    verified = False
    for form in forms:  # both forms are always checked: the time taken says nothing about which
        expected = hmac.new(key, form, hashlib.sha512).hexdigest().encode("ascii")
        verified |= hmac.compare_digest(expected, given)
    return payload if verified else None


# --- what an IPN says (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class IpnRecord:
    """One NOWPayments IPN (a payment's status), the fields the bot acts on."""

    payment_id: str
    payment_status: str
    order_id: str | None
    invoice_id: str | None
    price_amount: Decimal | None
    price_currency: str
    pay_amount: Decimal | None
    actually_paid: Decimal | None
    pay_currency: str
    outcome_amount: Decimal | None = None
    outcome_currency: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    return None


def _amount(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        # str() first: a float's shortest repr is the number NOWPayments wrote.
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def parse_ipn(payload: Mapping[str, Any]) -> IpnRecord:
    """The record of a (verified) IPN body; ValueError when it has no payment id or status."""
    payment_id = _text(payload.get("payment_id"))
    status = payload.get("payment_status")
    if payment_id is None:
        raise ValueError("the IPN has no payment_id")
    if not isinstance(status, str) or not status:
        raise ValueError("the IPN has no payment_status")
    return IpnRecord(
        payment_id=payment_id,
        payment_status=status.strip().lower(),
        order_id=_text(payload.get("order_id")),
        invoice_id=_text(payload.get("invoice_id")),
        price_amount=_amount(payload.get("price_amount")),
        price_currency=str(payload.get("price_currency") or "").upper(),
        pay_amount=_amount(payload.get("pay_amount")),
        actually_paid=_amount(payload.get("actually_paid")),
        pay_currency=str(payload.get("pay_currency") or "").upper(),
        outcome_amount=_amount(payload.get("outcome_amount")),
        outcome_currency=str(payload.get("outcome_currency") or "").upper(),
        raw=dict(payload),
    )


def underpayment(record: IpnRecord) -> Decimal | None:
    """What is still missing, in `record.pay_currency`: pay_amount - actually_paid when positive;
    None when nothing is missing or the IPN does not say."""
    if record.pay_amount is None:
        return None
    missing = record.pay_amount - (record.actually_paid or Decimal(0))
    return missing if missing > 0 else None


def ipn_callback_url(public_base_url: str) -> str:
    """Where NOWPayments should post the IPNs of this service's invoices."""
    return public_base_url.rstrip("/") + IPN_PATH


# --- the API client -----------------------------------------------------------------------


class Invoice(NamedTuple):
    id: str
    url: str


class NowPaymentsError(Exception):
    """The NOWPayments API refused or failed a call; the message is the gateway's own."""

    def __init__(self, status: int | None, message: str, code: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        where = "NOWPayments" if status is None else f"NOWPayments HTTP {status}"
        super().__init__(f"{where}{f' {code}' if code else ''}: {message}")


class NowPaymentsClient:
    """Calls to the NOWPayments API with the store's key, each inside `api_limit` (the runtime's
    shared bound on calls to outside APIs)."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        api_limit: asyncio.Semaphore,
        *,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a NOWPayments API key is needed")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.api_url = api_url.rstrip("/")
        self._api_key = api_key
        self.api_limit = api_limit
        self.timeout = timeout
        self._session = session
        self._owns_session = session is None

    async def create_invoice(
        self,
        *,
        price_amount: Decimal,
        price_currency: str,
        order_id: str,
        ipn_callback_url: str,
        order_description: str | None = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
    ) -> Invoice:
        """`POST /invoice`: a hosted payment page for `price_amount`; its IPNs go to
        `ipn_callback_url` and carry `order_id`."""
        body: dict[str, Any] = {
            # A JSON number, as the API wants; plan prices have cents at most, exact in a float.
            "price_amount": float(price_amount),
            "price_currency": price_currency.lower(),
            "order_id": order_id,
            "ipn_callback_url": ipn_callback_url,
        }
        optional = {"order_description": order_description, "success_url": success_url, "cancel_url": cancel_url}
        body.update({key: value for key, value in optional.items() if value is not None})
        answer = await self._call("POST", "/invoice", body)
        invoice_id = _text(answer.get("id"))
        url = answer.get("invoice_url")
        if invoice_id is None or not isinstance(url, str) or not url:
            raise NowPaymentsError(None, "the invoice answer has no id or invoice_url")
        return Invoice(invoice_id, url)

    async def status(self) -> str:
        """`GET /status`: "OK" while the API is up."""
        answer = await self._call("GET", "/status", None)
        return str(answer.get("message", ""))

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        session = self._ensure_session()
        headers = {"x-api-key": self._api_key, "Accept": "application/json"}
        try:
            async with self.api_limit:
                async with session.request(
                    method,
                    self.api_url + path,
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as response:
                    status = response.status
                    raw = await response.content.read(_MAX_ANSWER_BYTES)
        except TimeoutError:
            raise NowPaymentsError(None, f"timed out after {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            # Only the class name: aiohttp's messages can quote the URL.
            raise NowPaymentsError(None, f"connection failed ({type(exc).__name__})") from None
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            answer = None
        if not 200 <= status < 300:
            raise _gateway_error(status, answer, raw)
        if not isinstance(answer, dict):
            raise NowPaymentsError(status, "the answer is not a JSON object")
        return answer

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        """Close the HTTP session, if this client opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def _gateway_error(status: int, answer: Any, raw: bytes) -> NowPaymentsError:
    """The gateway's own words for a failed call: its `message` and `code` when it sent JSON."""
    if isinstance(answer, dict) and answer.get("message"):
        code = answer.get("code")
        return NowPaymentsError(
            status, str(answer["message"])[:_MAX_ERROR_TEXT], str(code) if code is not None else None
        )
    text = raw.decode("utf-8", "replace").strip()[:_MAX_ERROR_TEXT]
    return NowPaymentsError(status, text or "no message")


def invoice_maker(client: NowPaymentsClient, callback_url: str) -> Callable[[Order], Awaitable[str]]:
    """What the checkout calls for a NOWPayments order: an invoice in USD whose IPNs carry the
    order id; returns the invoice page's URL."""

    async def make(order: Order) -> str:
        invoice = await client.create_invoice(
            price_amount=order.amount,
            price_currency="usd",
            order_id=order.id,
            order_description=f"{order.plan_code}, {order.days} days",
            ipn_callback_url=callback_url,
        )
        return invoice.url

    return make
