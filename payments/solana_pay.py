"""Solana Pay transfer requests: the `solana:` link and QR code a wallet pays a SOL order with.

One fresh reference key per order ties the paying transaction to the order. The memo goes on
chain in clear: the order id, nothing about the user. No I/O; the QR image is made in memory.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final
from urllib.parse import quote

import segno
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from domain.plans import Order
from payments.checkout import SolPaymentRequest

__all__ = [
    "SOL_DECIMALS",
    "TransferRequest",
    "format_amount",
    "new_reference",
    "qr_png",
    "transfer_request_url",
]

#: SOL has 9 decimal places (lamports); a wallet rejects an amount with more.
SOL_DECIMALS: Final[int] = 9
_MAX_SCALE: Final[Decimal] = Decimal(1).scaleb(-SOL_DECIMALS)


def new_reference() -> str:
    """A fresh reference key (base58): the public key of a throw-away keypair, so it is a valid
    32-byte key no one else will ever put in a transaction by chance."""
    return str(Keypair().pubkey())


def format_amount(amount: Decimal) -> str:
    """`amount` SOL as the spec wants it: a plain decimal, no exponent, no trailing zeros,
    a leading 0 below 1, at most 9 decimal places."""
    try:
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"the amount must be a non-negative number, not {amount}")
        if amount != amount.quantize(_MAX_SCALE):
            raise ValueError(f"{amount} SOL has more than {SOL_DECIMALS} decimal places")
    except InvalidOperation:
        raise ValueError(f"{amount} is not a usable amount") from None
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"


def _check_key(value: str, field: str) -> str:
    try:
        Pubkey.from_string(value)
    except ValueError:
        raise ValueError(f"{field} {value!r} is not a base58 32-byte key") from None
    return value


def _encode(value: str) -> str:
    # Everything but unreserved characters is percent-encoded (spaces as %20, not "+"), as the
    # spec's "URL-encoded UTF-8" means and every wallet's parser decodes.
    return quote(value, safe="")


def transfer_request_url(
    recipient: str,
    amount: Decimal,
    reference: str,
    *,
    label: str | None = None,
    message: str | None = None,
    memo: str | None = None,
) -> str:
    """A Solana Pay transfer request for `amount` SOL to `recipient`, tagged with `reference`."""
    _check_key(recipient, "recipient")
    _check_key(reference, "reference")
    params = [("amount", format_amount(amount)), ("reference", reference)]
    for name, value in (("label", label), ("message", message), ("memo", memo)):
        if value:
            params.append((name, value))
    query = "&".join(f"{name}={_encode(value)}" for name, value in params)
    return f"solana:{recipient}?{query}"


def qr_png(url: str, *, scale: int = 8) -> bytes:
    """The QR code of `url` as PNG bytes (error correction M, the spec's quiet zone of 4)."""
    code = segno.make(url, error="m", micro=False)
    buffer = io.BytesIO()
    code.save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()


@dataclass(frozen=True)
class TransferRequest:
    """What the bot shows for a SOL order: the link and its QR code."""

    recipient: str
    amount: Decimal
    reference: str
    memo: str | None
    url: str

    @classmethod
    def build(
        cls,
        recipient: str,
        amount: Decimal,
        *,
        reference: str | None = None,
        label: str | None = None,
        message: str | None = None,
        memo: str | None = None,
    ) -> TransferRequest:
        reference = reference or new_reference()
        url = transfer_request_url(recipient, amount, reference, label=label, message=message, memo=memo)
        return cls(recipient=recipient, amount=amount, reference=reference, memo=memo, url=url)

    def qr_png(self, *, scale: int = 8) -> bytes:
        return qr_png(self.url, scale=scale)


def sol_requester(receiver: str, label: str = "Token Alert Bot") -> Callable[[Order], Awaitable[SolPaymentRequest]]:
    """What the checkout calls for a SOL order: a transfer request to `receiver` with a fresh
    reference, the order id as its memo."""

    async def request(order: Order) -> SolPaymentRequest:
        transfer = TransferRequest.build(
            receiver, order.amount, label=label, message=f"{order.plan_code}, {order.days} days", memo=order.id
        )
        return SolPaymentRequest(transfer.url, qr_png(transfer.url), transfer.reference)

    return request
