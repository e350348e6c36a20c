"""The pure parts of SOL payments: the Solana Pay link and QR code, and the check of a
`getTransaction` record against an order (payments/solana_pay.py, payments/sol_verify.py).

Transaction records are built by the Solana RPC stand-in (standins/solana_rpc.py) the way a node
answers them, in `jsonParsed` and `json` encoding, legacy and v0; no server is started here.
"""

from __future__ import annotations

import struct
import zlib
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import segno
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from payments.sol_verify import Verdict, account_keys, check_transfer, memos
from payments.solana_pay import TransferRequest, format_amount, new_reference, qr_png, transfer_request_url
from standins.solana_rpc import SolanaRpcServer, insufficient_funds_error

RECEIVER = str(Keypair().pubkey())
PAYER = str(Keypair().pubkey())
SOL = 1_000_000_000


def key() -> str:
    return str(Keypair().pubkey())


# --- the link ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0.05"), "0.05"),
        (Decimal("0.050000"), "0.05"),
        (Decimal("1.000"), "1"),
        (Decimal("1E+1"), "10"),
        (Decimal("2.5E-3"), "0.0025"),
        (Decimal("0.000000001"), "0.000000001"),
        (Decimal("0"), "0"),
        (Decimal("12345678.123456789"), "12345678.123456789"),
    ],
)
def test_amounts_are_plain_decimals(amount: Decimal, text: str) -> None:
    assert format_amount(amount) == text


@pytest.mark.parametrize("amount", [Decimal("0.0000000001"), Decimal("-1"), Decimal("NaN"), Decimal("Infinity")])
def test_amounts_a_wallet_would_reject_are_refused(amount: Decimal) -> None:
    with pytest.raises(ValueError):
        format_amount(amount)


def test_references_are_fresh_valid_keys() -> None:
    references = {new_reference() for _ in range(50)}
    assert len(references) == 50
    for reference in references:
        assert len(bytes(Pubkey.from_string(reference))) == 32


def test_transfer_request_url_follows_the_spec() -> None:
    reference = new_reference()
    url = transfer_request_url(
        RECEIVER,
        Decimal("0.250"),
        reference,
        label="Token Alert Bot",
        message="Тариф: 30 дней & more",
        memo="order 7f3a",
    )
    parts = urlsplit(url)
    assert parts.scheme == "solana"
    assert parts.path == RECEIVER
    assert " " not in url and "+" not in url  # spaces are %20: no wallet reads them as "+"
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "amount": ["0.25"],
        "reference": [reference],
        "label": ["Token Alert Bot"],
        "message": ["Тариф: 30 дней & more"],
        "memo": ["order 7f3a"],
    }
    # The order the reference implementation writes them in.
    assert [pair.split("=")[0] for pair in parts.query.split("&")] == [
        "amount",
        "reference",
        "label",
        "message",
        "memo",
    ]


def test_transfer_request_url_leaves_out_empty_fields_and_checks_keys() -> None:
    reference = new_reference()
    assert transfer_request_url(RECEIVER, Decimal(1), reference) == f"solana:{RECEIVER}?amount=1&reference={reference}"
    with pytest.raises(ValueError, match="recipient"):
        transfer_request_url("not-a-key", Decimal(1), reference)
    with pytest.raises(ValueError, match="reference"):
        transfer_request_url(RECEIVER, Decimal(1), "0OIl")


def _png_modules(png: bytes) -> list[list[bool]]:
    """The pixels of a 1-bit greyscale PNG as rows of dark (True) / light, read independently of segno."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, data = 8, [], b""
    header: tuple[int, ...] = ()
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        body = png[position + 8 : position + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", png[position + 8 + length : position + 12 + length])[0]
        chunks.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            data += body
        position += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    width, height, depth, colour, _, _, interlace = header
    assert (depth, colour, interlace) == (1, 0, 0)
    raw = zlib.decompress(data)
    stride = (width + 7) // 8
    rows: list[list[bool]] = []
    previous = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for i in range(stride):
            left = row[i - 1] if i else 0
            up, corner = previous[i], previous[i - 1] if i else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                nearest = min((abs(p - left), 0, left), (abs(p - up), 1, up), (abs(p - corner), 2, corner))[2]
                row[i] = (row[i] + nearest) & 0xFF
        previous = row
        rows.append([not (row[x // 8] >> (7 - x % 8)) & 1 for x in range(width)])  # 0 is black in greyscale
    return rows


def test_qr_code_is_a_png_of_the_link() -> None:
    request = TransferRequest.build(RECEIVER, Decimal("0.1"), label="Token Alert Bot", memo="order 1")
    assert request.url.startswith(f"solana:{RECEIVER}?amount=0.1&reference={request.reference}")
    scale, border = 3, 4
    pixels = _png_modules(request.qr_png(scale=scale))
    code = segno.make(request.url, error="m", micro=False)
    matrix = [[bool(module) for module in row] for row in code.matrix]
    size = len(matrix)
    assert len(pixels) == (size + 2 * border) * scale
    # Every module, sampled at the centre of its square, is what segno's matrix for the URL says.
    sampled = [
        [pixels[(border + y) * scale + scale // 2][(border + x) * scale + scale // 2] for x in range(size)]
        for y in range(size)
    ]
    assert sampled == matrix
    # The quiet zone is light.
    assert not any(pixels[0]) and not any(row[0] for row in pixels)
    assert code.designator.endswith("-M")
    assert qr_png(request.url) == request.qr_png()


# --- the check -----------------------------------------------------------------------------------


def record(
    lamports: int,
    *,
    reference: str | None,
    destination: str = RECEIVER,
    encoding: str = "jsonParsed",
    **options: Any,
) -> dict[str, Any]:
    node = SolanaRpcServer()
    signature = node.add_transfer(PAYER, destination, lamports, reference=reference, memo="order 1", **options)
    return node.transactions[signature].to_json(encoding, 0)


@pytest.mark.parametrize(("version", "encoding"), [("legacy", "jsonParsed"), (0, "jsonParsed"), (0, "json")])
def test_a_full_payment_passes(version: Any, encoding: str) -> None:
    reference = key()
    tx = record(SOL // 10, reference=reference, version=version, encoding=encoding)
    check = check_transfer(tx, receiver=RECEIVER, reference=reference, min_lamports=SOL // 10)
    assert check.verdict is Verdict.PAID and check.counts
    assert check.received_lamports == SOL // 10 and check.received == Decimal("0.1")
    assert check.shortfall_lamports == 0 and check.shortfall == 0
    assert check.signature == tx["transaction"]["signatures"][0]
    assert check.slot == tx["slot"] and check.block_time == tx["blockTime"]
    if version == 0:
        # The receiver and the reference came from a lookup table: after the static keys.
        assert account_keys(tx)[-2:] == [RECEIVER, reference]
        listed = tx["transaction"]["message"]["accountKeys"]
        if encoding == "json":
            assert RECEIVER not in listed and tx["meta"]["loadedAddresses"] == {
                "writable": [RECEIVER],
                "readonly": [reference],
            }
        else:
            assert [k["source"] for k in listed[-2:]] == ["lookupTable", "lookupTable"]
            assert "loadedAddresses" not in tx["meta"]


def test_an_overpayment_counts_in_full() -> None:
    reference = key()
    check = check_transfer(record(SOL, reference=reference), receiver=RECEIVER, reference=reference, min_lamports=1)
    assert check.verdict is Verdict.PAID and check.received == Decimal(1)


def test_a_failed_transaction_pays_nothing() -> None:
    reference = key()
    tx = record(SOL // 10, reference=reference, err=insufficient_funds_error(3))
    check = check_transfer(tx, receiver=RECEIVER, reference=reference, min_lamports=SOL // 10)
    assert check.verdict is Verdict.FAILED and not check.counts
    assert check.received_lamports == 0 and check.error == {"InstructionError": [3, {"Custom": 1}]}


def test_a_payer_without_the_funds_fails_on_chain() -> None:
    node = SolanaRpcServer()
    node.set_balance(PAYER, SOL // 100)
    reference = key()
    signature = node.add_transfer(PAYER, RECEIVER, SOL, reference=reference)
    tx = node.transactions[signature].to_json("jsonParsed", 0)
    assert tx["meta"]["err"] == insufficient_funds_error(2)  # no memo: the transfer is the third instruction
    check = check_transfer(tx, receiver=RECEIVER, reference=reference, min_lamports=SOL)
    assert check.verdict is Verdict.FAILED


def test_a_transaction_without_the_reference_is_not_for_this_order() -> None:
    tx = record(SOL, reference=key())
    check = check_transfer(tx, receiver=RECEIVER, reference=key(), min_lamports=SOL)
    assert check.verdict is Verdict.NO_REFERENCE and not check.counts


def test_a_transfer_to_someone_else_pays_nothing() -> None:
    reference = key()
    check = check_transfer(
        record(SOL, reference=reference, destination=key()), receiver=RECEIVER, reference=reference, min_lamports=SOL
    )
    assert check.verdict is Verdict.NOT_RECEIVED and check.received_lamports == 0


def test_an_underpayment_counts_with_its_shortfall() -> None:
    reference = key()
    tx = record(SOL // 20, reference=reference)
    check = check_transfer(tx, receiver=RECEIVER, reference=reference, min_lamports=SOL // 10)
    assert check.verdict is Verdict.UNDERPAID and check.counts
    assert check.received == Decimal("0.05") and check.shortfall == Decimal("0.05")


def test_the_tolerance_forgives_a_small_underpayment() -> None:
    reference = key()
    tx = record(SOL // 10 - 5000, reference=reference)
    strict = check_transfer(tx, receiver=RECEIVER, reference=reference, min_lamports=SOL // 10)
    assert strict.verdict is Verdict.UNDERPAID and strict.shortfall_lamports == 5000
    lenient = check_transfer(
        tx, receiver=RECEIVER, reference=reference, min_lamports=SOL // 10, tolerance=Decimal("0.000005")
    )
    assert lenient.verdict is Verdict.PAID and lenient.received_lamports == SOL // 10 - 5000


def test_no_transaction_and_unreadable_ones() -> None:
    reference = key()
    assert check_transfer(None, receiver=RECEIVER, reference=reference, min_lamports=1).verdict is Verdict.NOT_FOUND
    tx = record(SOL, reference=reference)
    tx["meta"] = None
    check = check_transfer(tx, receiver=RECEIVER, reference=reference, min_lamports=1)
    assert check.verdict is Verdict.MALFORMED and "meta" in check.detail
    tx = record(SOL, reference=reference)
    tx["meta"]["postBalances"].pop()
    assert check_transfer(tx, receiver=RECEIVER, reference=reference, min_lamports=1).verdict is Verdict.MALFORMED
    tx = record(SOL, reference=reference)
    tx["transaction"]["message"]["accountKeys"][0] = 7
    assert check_transfer(tx, receiver=RECEIVER, reference=reference, min_lamports=1).verdict is Verdict.MALFORMED
    assert check_transfer([], receiver=RECEIVER, reference=reference, min_lamports=1).verdict is Verdict.MALFORMED  # type: ignore[arg-type]


def test_memos_are_read_from_parsed_instructions() -> None:
    assert memos(record(1, reference=key())) == ["order 1"]
    assert memos(record(1, reference=key(), encoding="json")) == []  # json encoding leaves instructions raw
