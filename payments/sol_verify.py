"""Whether a Solana transaction pays a SOL order: a pure check of a `getTransaction` record,
by the receiver's balance before and after (docs/architecture.md, "SOL payments")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from domain.plans import lamports_to_sol, sol_to_lamports

__all__ = [
    "TransferCheck",
    "Verdict",
    "account_keys",
    "check_transfer",
    "memos",
    "tx_signature",
]

MEMO_PROGRAMS = frozenset(
    {
        "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr",  # SPL Memo v2 (what wallets use)
        "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo",  # SPL Memo v1
    }
)


class Verdict(StrEnum):
    PAID = "paid"  # the receiver got at least the amount (less the tolerance)
    UNDERPAID = "underpaid"  # the receiver got something, less than the amount: it counts towards it
    FAILED = "failed"  # the transaction failed on chain (meta.err): nothing moved
    NO_REFERENCE = "no_reference"  # not a payment for this order
    NOT_RECEIVED = "not_received"  # the receiver is not in the transaction, or gained nothing
    NOT_FOUND = "not_found"  # no such transaction (yet) at the commitment asked
    MALFORMED = "malformed"  # not a transaction record this check can read


@dataclass(frozen=True)
class TransferCheck:
    """What one transaction did for one order."""

    verdict: Verdict
    signature: str | None
    received_lamports: int  # the receiver's balance change; 0 unless the transaction succeeded
    expected_lamports: int
    tolerance_lamports: int = 0
    slot: int | None = None
    block_time: int | None = None
    error: Any = None  # meta.err of a failed transaction, as the node gave it
    detail: str = ""  # for MALFORMED: what is wrong (safe to log)

    @property
    def counts(self) -> bool:
        """Money arrived: the payment is credited towards the order (in full or in part)."""
        return self.verdict in (Verdict.PAID, Verdict.UNDERPAID)

    @property
    def shortfall_lamports(self) -> int:
        return max(0, self.expected_lamports - self.received_lamports)

    @property
    def received(self) -> Decimal:
        """SOL received."""
        return lamports_to_sol(max(0, self.received_lamports))

    @property
    def shortfall(self) -> Decimal:
        """SOL still missing."""
        return lamports_to_sol(self.shortfall_lamports)


class _Malformed(ValueError):
    pass


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Malformed(f"{what} is not an object")
    return value


def _int_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise _Malformed(f"{what} is not a list")
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        raise _Malformed(f"{what} holds something other than integers")
    return list(value)


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise _Malformed(f"{what} is not a list")
    if not all(isinstance(item, str) for item in value):
        raise _Malformed(f"{what} holds something other than strings")
    return list(value)


def _message(tx: Mapping[str, Any]) -> Mapping[str, Any]:
    transaction = _mapping(tx.get("transaction"), "transaction")
    return _mapping(transaction.get("message"), "transaction.message")


def account_keys(tx: Mapping[str, Any]) -> list[str]:
    """Every account key of the transaction, in balance order (loaded ones included)."""
    raw = _message(tx).get("accountKeys")
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise _Malformed("transaction.message.accountKeys is not a list")
    keys: list[str] = []
    for item in raw:
        if isinstance(item, str):
            keys.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("pubkey"), str):
            keys.append(item["pubkey"])
        else:
            raise _Malformed("an account key is neither a string nor an object with a pubkey")
    meta = tx.get("meta")
    loaded = meta.get("loadedAddresses") if isinstance(meta, Mapping) else None
    balances = meta.get("preBalances") if isinstance(meta, Mapping) else None
    if isinstance(loaded, Mapping) and isinstance(balances, Sequence) and len(keys) < len(balances):
        # `json` encoding of a v0 transaction: the keys from lookup tables follow the static ones.
        keys += _str_list(loaded.get("writable"), "meta.loadedAddresses.writable")
        keys += _str_list(loaded.get("readonly"), "meta.loadedAddresses.readonly")
    return keys


def tx_signature(tx: Mapping[str, Any]) -> str | None:
    """The transaction's id: its first signature."""
    try:
        transaction = _mapping(tx.get("transaction"), "transaction")
    except _Malformed:
        return None
    signatures = transaction.get("signatures")
    if isinstance(signatures, Sequence) and signatures and isinstance(signatures[0], str):
        return signatures[0]
    return None


def memos(tx: Mapping[str, Any]) -> list[str]:
    """The texts of the transaction's top-level memo instructions (jsonParsed: `"parsed": "text"`)."""
    try:
        instructions = _message(tx).get("instructions")
    except _Malformed:
        return []
    found: list[str] = []
    if isinstance(instructions, Sequence):
        for instruction in instructions:
            if (
                isinstance(instruction, Mapping)
                and instruction.get("programId") in MEMO_PROGRAMS
                and isinstance(instruction.get("parsed"), str)
            ):
                found.append(instruction["parsed"])
    return found


def check_transfer(
    tx: Mapping[str, Any] | None,
    *,
    receiver: str,
    reference: str,
    min_lamports: int,
    tolerance: Decimal = Decimal(0),
) -> TransferCheck:
    """How `tx` (a `getTransaction` result, or None when the node has none) pays `min_lamports`
    to `receiver` for the order tagged `reference`; an underpayment within `tolerance` SOL is
    paid in full."""
    tolerance_lamports = max(0, sol_to_lamports(tolerance))
    record: Mapping[str, Any] = tx if isinstance(tx, Mapping) else {}
    slot, block_time = record.get("slot"), record.get("blockTime")

    def verdict(kind: Verdict, received: int = 0, **extra: Any) -> TransferCheck:
        return TransferCheck(
            verdict=kind,
            signature=tx_signature(record),
            received_lamports=received,
            expected_lamports=min_lamports,
            tolerance_lamports=tolerance_lamports,
            slot=slot if isinstance(slot, int) else None,
            block_time=block_time if isinstance(block_time, int) else None,
            **extra,
        )

    if tx is None:
        return verdict(Verdict.NOT_FOUND)
    try:
        if not isinstance(tx, Mapping):
            raise _Malformed("the transaction record is not an object")
        meta = _mapping(tx.get("meta"), "meta")
        if meta.get("err") is not None:
            return verdict(Verdict.FAILED, error=meta["err"])
        keys = account_keys(tx)
        pre = _int_list(meta.get("preBalances"), "meta.preBalances")
        post = _int_list(meta.get("postBalances"), "meta.postBalances")
        if not len(keys) == len(pre) == len(post):
            raise _Malformed(f"{len(keys)} account keys but {len(pre)}/{len(post)} balances")
    except _Malformed as exc:
        return verdict(Verdict.MALFORMED, detail=str(exc))
    if reference not in keys:
        return verdict(Verdict.NO_REFERENCE)
    received = sum(post[index] - pre[index] for index, key in enumerate(keys) if key == receiver)
    if received <= 0:
        return verdict(Verdict.NOT_RECEIVED, received)
    if received + tolerance_lamports < min_lamports:
        return verdict(Verdict.UNDERPAID, received)
    return verdict(Verdict.PAID, received)
