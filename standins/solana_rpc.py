"""A local Solana JSON-RPC node for tests, speaking the real wire format over HTTP.

`SolanaRpcServer` is an aiohttp server answering JSON-RPC 2.0 POSTs the way a mainnet-beta node
does (`{"jsonrpc": "2.0", "result": ..., "id": N}` or `{"jsonrpc": "2.0", "error": {"code": N,
"message": "..."}, "id": N}`, batches included), so the bot's own HTTP client talks to it with no
mocking at all. Methods are a dict of name -> handler (`server.handlers`): `getAccountInfo`,
`getSlot`, `getHealth`, `getSignaturesForAddress` and `getTransaction` come built in; a test
adds or replaces one by putting a handler in the dict. A handler gets the request's `params` and
returns the `result`, or raises `RpcError` for a JSON-RPC error answer.

Accounts are set by the test: `set_account(address, data, owner=...)`, or `set_price(...)` for
a Pyth `PriceUpdateV2` account built by `price_update_bytes` (an encoder written from the
on-chain layout, independent of the bot's decoder, so a round trip means something).

Payments are set by the test too: `add_transfer(source, destination, lamports, reference=...,
memo=..., err=..., finalized=...)` records a SOL transfer the way a wallet paying a Solana Pay
request builds it (compute budget, memo, then a system transfer carrying the reference as a
read-only key), with the balances it moved, and returns its signature. `getSignaturesForAddress`
finds it by any of its keys, newest first (`limit`, `before`, `until`), and `getTransaction`
answers it in `json` or `jsonParsed` encoding, legacy or v0 (`version=0` loads the destination
and the reference from an address lookup table). A transfer added with `finalized=False` is only
confirmed: invisible at `finalized` commitment until `finalize(signature)`.

The knobs tests need: `fail(status)` (every POST answers that HTTP status, e.g. 500 or 429),
`fail_rpc(code, message)` (every call answers a JSON-RPC error, as a node that is behind does),
`pause`/`resume` (requests are read, then held unanswered: a stalled node, for timeouts),
`delay` (seconds every answer waits), and the observation side: `requests` (HTTP POSTs),
`calls` (each JSON-RPC call), `in_flight`/`max_in_flight` (concurrent requests) and
`wait_for_*` helpers that wait on events rather than on the clock.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import secrets
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Literal

from aiohttp import web

from standins.feed_server import _Waitable
from standins.http_site import LocalSite

__all__ = [
    "PRICE_UPDATE_LEN",
    "PYTH_RECEIVER_PROGRAM",
    "SOL_USD_FEED_ID",
    "SOL_USD_PRICE_ACCOUNT",
    "Account",
    "RpcCall",
    "RpcError",
    "SolanaRpcServer",
    "Transfer",
    "b58encode",
    "insufficient_funds_error",
    "price_update_bytes",
]

DEFAULT_TIMEOUT: Final[float] = 10.0

# Written out again rather than imported from the bot: the double is the outside world.
SOL_USD_FEED_ID: Final[str] = "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d"
SOL_USD_PRICE_ACCOUNT: Final[str] = "7UVimffxr9ow1uXYxsr4LHAcV58mLzhmwaeKvJ1pjLiE"
PYTH_RECEIVER_PROGRAM: Final[str] = "rec5EKMGg6MxZYaMdyBfgwp4d5rB9T1VQH5pJv5LtFJ"
SYSTEM_PROGRAM: Final[str] = "11111111111111111111111111111111"
MEMO_PROGRAM: Final[str] = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
COMPUTE_BUDGET_PROGRAM: Final[str] = "ComputeBudget111111111111111111111111111111"
#: What a node answers for a signer's fee: 5000 lamports per signature, plus the priority fee.
BASE_FEE: Final[int] = 5000
#: A payer's balance before its first transfer, unless the test set one with `set_balance`.
DEFAULT_PAYER_BALANCE: Final[int] = 100 * 10**9
#: `PriceUpdateV2::LEN`: what the receiver allocates (room for the wider `Partial` variant).
PRICE_UPDATE_LEN: Final[int] = 134
_PRICE_UPDATE_DISCRIMINATOR: Final[bytes] = bytes([34, 241, 35, 99, 157, 126, 244, 205])
_U64_MAX: Final[int] = 2**64 - 1
# Lamports per byte-year times two years, and the 128-byte account overhead: rent exemption.
_RENT_PER_BYTE: Final[int] = 6960
_ACCOUNT_OVERHEAD: Final[int] = 128

_B58_ALPHABET: Final[str] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# JSON-RPC 2.0 error codes, with the messages Solana nodes send.
PARSE_ERROR: Final[int] = -32700
INVALID_REQUEST: Final[int] = -32600
METHOD_NOT_FOUND: Final[int] = -32601
INVALID_PARAMS: Final[int] = -32602
NODE_UNHEALTHY: Final[int] = -32005
UNSUPPORTED_TRANSACTION_VERSION: Final[int] = -32015
#: getSignaturesForAddress answers at most this many signatures per call.
MAX_SIGNATURES: Final[int] = 1000

Handler = Callable[[Any], Any | Awaitable[Any]]


class RpcError(Exception):
    """Raised by a handler: the call answers `{"error": {"code", "message"[, "data"]}}`."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass
class Account:
    data: bytes
    owner: str = SYSTEM_PROGRAM
    lamports: int | None = None  # None: the rent-exempt minimum for the data's size
    executable: bool = False
    rent_epoch: int = _U64_MAX  # what rent-exempt accounts report since rent collection ended

    @property
    def balance(self) -> int:
        if self.lamports is not None:
            return self.lamports
        return (len(self.data) + _ACCOUNT_OVERHEAD) * _RENT_PER_BYTE


@dataclass(frozen=True)
class RpcCall:
    """One JSON-RPC call the server received (a batch records one per element)."""

    method: str | None
    params: Any
    id: Any


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58, as Solana uses for keys and `base58` account data."""
    number = int.from_bytes(data, "big")
    encoded = ""
    while number:
        number, digit = divmod(number, 58)
        encoded = _B58_ALPHABET[digit] + encoded
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + encoded


def _fixed(value: float, exponent: int) -> int:
    """`value` as Pyth's integer mantissa for `exponent` (150.25, -8 -> 15_025_000_000)."""
    return int(Decimal(repr(value)).scaleb(-exponent).to_integral_value())


def _epoch(moment: datetime | int | float) -> int:
    return int(moment.timestamp()) if isinstance(moment, datetime) else int(moment)


def price_update_bytes(
    price: float,
    exponent: int = -8,
    conf: float | None = None,
    publish_time: datetime | int | None = None,
    feed_id: str = SOL_USD_FEED_ID,
    verification: str = "full",
    *,
    num_signatures: int = 5,
    prev_publish_time: datetime | int | None = None,
    ema_price: float | None = None,
    ema_conf: float | None = None,
    posted_slot: int = 330_000_000,
    write_authority: bytes = bytes(32),
    discriminator: bytes = _PRICE_UPDATE_DISCRIMINATOR,
    length: int | None = PRICE_UPDATE_LEN,
) -> bytes:
    """A Pyth Solana Receiver `PriceUpdateV2` account's data (Anchor/borsh, little-endian).

    Layout: discriminator[8], write_authority[32], verification_level (borsh enum: 0 =
    Partial + num_signatures u8, 1 = Full), PriceFeedMessage {feed_id[32], price i64, conf u64,
    exponent i32, publish_time i64, prev_publish_time i64, ema_price i64, ema_conf u64},
    posted_slot u64. `price`, `conf` and the EMA figures are in USD; `conf` defaults to 0.05%
    of the price (SOL's usual width), `publish_time` to now. The data is zero-padded to
    `length` (134, as on chain; None: no padding).
    """
    if verification == "full":
        level = bytes([1])
    elif verification == "partial":
        level = bytes([0, num_signatures])
    else:
        raise ValueError(f"verification must be 'full' or 'partial', not {verification!r}")
    feed = bytes.fromhex(feed_id.removeprefix("0x"))
    if len(feed) != 32 or len(write_authority) != 32 or len(discriminator) != 8:
        raise ValueError("feed_id and write_authority are 32 bytes, the discriminator 8")
    published = _epoch(publish_time if publish_time is not None else datetime.now(UTC))
    previous = _epoch(prev_publish_time) if prev_publish_time is not None else published - 1
    conf = price * 0.0005 if conf is None else conf
    message = struct.pack(
        "<32sqQiqqqQQ",
        feed,
        _fixed(price, exponent),
        _fixed(conf, exponent),
        exponent,
        published,
        previous,
        _fixed(price if ema_price is None else ema_price, exponent),
        _fixed(conf if ema_conf is None else ema_conf, exponent),
        posted_slot,
    )
    data = discriminator + write_authority + level + message
    if length is not None and len(data) < length:
        data += bytes(length - len(data))
    return data


# --- transactions ----------------------------------------------------------------------------

Commitment = Literal["confirmed", "finalized"]


@dataclass(frozen=True)
class _Instruction:
    program: str
    accounts: tuple[str, ...]
    data: bytes
    parsed: Any = None  # what jsonParsed shows; None: no parser for this program (raw form)
    program_name: str = ""


@dataclass
class Transfer:
    """One transaction the node knows: a SOL transfer as a wallet builds it for a Solana Pay
    request. `status` is how far the cluster got with it ("confirmed" or "finalized")."""

    signature: str
    slot: int
    block_time: int
    source: str
    destination: str
    lamports: int
    reference: str | None
    memo: str | None
    err: Any
    fee: int
    version: Literal["legacy", 0]
    status: Commitment
    blockhash: str
    # Keys as the message lists them: (pubkey, signer, writable); then, for v0, those loaded
    # from the lookup table `lookup_table` (writable ones first).
    static_keys: list[tuple[str, bool, bool]]
    loaded_writable: list[str]
    loaded_readonly: list[str]
    lookup_table: str | None
    instructions: list[_Instruction]
    pre_balances: list[int]
    post_balances: list[int]
    log_messages: list[str]
    compute_units: int

    def keys(self) -> list[str]:
        """Every account key in balance order."""
        return [key for key, _, _ in self.static_keys] + self.loaded_writable + self.loaded_readonly

    def visible_at(self, commitment: Commitment) -> bool:
        return self.status == "finalized" or commitment == "confirmed"

    def signature_info(self) -> dict[str, Any]:
        """The getSignaturesForAddress entry."""
        return {
            "signature": self.signature,
            "slot": self.slot,
            "err": self.err,
            # Nodes show each memo as "[byte length] text", several joined by "; ".
            "memo": None if self.memo is None else f"[{len(self.memo.encode())}] {self.memo}",
            "blockTime": self.block_time,
            "confirmationStatus": self.status,
        }

    def to_json(self, encoding: str, max_version: int | None) -> dict[str, Any]:
        """The getTransaction result in `json` or `jsonParsed` encoding."""
        parsed = encoding == "jsonParsed"
        keys = self.keys()
        writable = {key for key, _, w in self.static_keys if w} | set(self.loaded_writable)
        message: dict[str, Any]
        if parsed:
            static = [
                {"pubkey": key, "signer": signer, "source": "transaction", "writable": w}
                for key, signer, w in self.static_keys
            ]
            loaded = [
                {"pubkey": key, "signer": False, "source": "lookupTable", "writable": key in writable}
                for key in self.loaded_writable + self.loaded_readonly
            ]
            message = {
                "accountKeys": static + loaded,
                "instructions": [self._parsed_instruction(ix) for ix in self.instructions],
                "recentBlockhash": self.blockhash,
            }
        else:
            signers = sum(1 for _, signer, _ in self.static_keys if signer)
            message = {
                "accountKeys": [key for key, _, _ in self.static_keys],
                "header": {
                    "numReadonlySignedAccounts": sum(1 for _, s, w in self.static_keys if s and not w),
                    "numReadonlyUnsignedAccounts": sum(1 for _, s, w in self.static_keys if not s and not w),
                    "numRequiredSignatures": signers,
                },
                "instructions": [
                    {
                        "accounts": [keys.index(account) for account in ix.accounts],
                        "data": b58encode(ix.data),
                        "programIdIndex": keys.index(ix.program),
                        "stackHeight": None,
                    }
                    for ix in self.instructions
                ],
                "recentBlockhash": self.blockhash,
            }
        if self.version == 0:
            message["addressTableLookups"] = [
                {
                    "accountKey": self.lookup_table,
                    "readonlyIndexes": list(
                        range(len(self.loaded_writable), len(self.loaded_writable) + len(self.loaded_readonly))
                    ),
                    "writableIndexes": list(range(len(self.loaded_writable))),
                }
            ]
        meta: dict[str, Any] = {
            "computeUnitsConsumed": self.compute_units,
            "err": self.err,
            "fee": self.fee,
            "innerInstructions": [],
            "logMessages": list(self.log_messages),
            "postBalances": list(self.post_balances),
            "postTokenBalances": [],
            "preBalances": list(self.pre_balances),
            "preTokenBalances": [],
            "rewards": [],
            "status": {"Ok": None} if self.err is None else {"Err": self.err},
        }
        if not parsed:
            # jsonParsed lists loaded keys among accountKeys instead (source "lookupTable").
            meta["loadedAddresses"] = {"readonly": list(self.loaded_readonly), "writable": list(self.loaded_writable)}
        result: dict[str, Any] = {
            "blockTime": self.block_time,
            "meta": meta,
            "slot": self.slot,
            "transaction": {"message": message, "signatures": [self.signature]},
        }
        if max_version is not None:  # nodes leave "version" out for clients that did not ask
            result["version"] = self.version
        return result

    @staticmethod
    def _parsed_instruction(ix: _Instruction) -> dict[str, Any]:
        if ix.parsed is None:
            return {
                "accounts": list(ix.accounts),
                "data": b58encode(ix.data),
                "programId": ix.program,
                "stackHeight": None,
            }
        return {"parsed": ix.parsed, "program": ix.program_name, "programId": ix.program, "stackHeight": None}


def _random_key() -> str:
    return b58encode(secrets.token_bytes(32))


def insufficient_funds_error(instruction_index: int) -> dict[str, Any]:
    """meta.err of a system transfer the payer cannot afford (SystemError::ResultWithNegativeLamports)."""
    return {"InstructionError": [instruction_index, {"Custom": 1}]}


class SolanaRpcServer(_Waitable):
    """A Solana JSON-RPC node on 127.0.0.1 (a free port unless told otherwise)."""

    def __init__(self, *, slot: int = 330_000_000, api_version: str = "2.2.0", path: str = "/") -> None:
        super().__init__()
        self.slot = slot
        self.api_version = api_version
        self.path = path
        self.accounts: dict[str, Account] = {}
        self.handlers: dict[str, Handler] = {
            "getAccountInfo": self._get_account_info,
            "getSlot": lambda params: self.slot,
            "getHealth": lambda params: "ok",
            "getSignaturesForAddress": self._get_signatures_for_address,
            "getTransaction": self._get_transaction,
        }
        self.transactions: dict[str, Transfer] = {}  # by signature, oldest first
        self.balances: dict[str, int] = {}  # lamports, as transfers left them
        self.delay = 0.0  # seconds every answer waits (lets concurrent requests overlap)
        self.status: int | None = None  # when set, every POST answers this HTTP status
        self.rpc_error: RpcError | None = None  # when set, every call answers this error
        self.requests = 0  # HTTP POSTs received, failures included
        self.calls: list[RpcCall] = []
        self.in_flight = 0  # requests being answered now
        self.max_in_flight = 0
        self._running = asyncio.Event()
        self._running.set()
        self._site = LocalSite("Solana RPC server")

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SolanaRpcServer:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        await self._site.start(app, host, port)
        return self

    async def stop(self) -> None:
        self.resume()  # held requests must not hold the shutdown up
        await self._site.stop()

    @property
    def port(self) -> int:
        return self._site.port

    async def __aenter__(self) -> SolanaRpcServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return self._site.origin + self.path

    # --- what the tests do -----------------------------------------------------------------

    def set_account(
        self,
        address: str,
        data: bytes,
        *,
        owner: str = SYSTEM_PROGRAM,
        lamports: int | None = None,
        executable: bool = False,
    ) -> Account:
        account = Account(data=bytes(data), owner=owner, lamports=lamports, executable=executable)
        self.accounts[address] = account
        return account

    def set_price(
        self,
        price: float,
        *,
        address: str = SOL_USD_PRICE_ACCOUNT,
        owner: str = PYTH_RECEIVER_PROGRAM,
        **fields: Any,
    ) -> Account:
        """Put a Pyth price update at `address` (the SOL/USD sponsored account by default)."""
        return self.set_account(address, price_update_bytes(price, **fields), owner=owner)

    def remove_account(self, address: str) -> None:
        self.accounts.pop(address, None)

    def set_balance(self, address: str, lamports: int) -> None:
        """What `address` holds before its next transfer."""
        self.balances[address] = lamports

    def add_transfer(
        self,
        source: str,
        destination: str,
        lamports: int,
        *,
        reference: str | None = None,
        memo: str | None = None,
        err: Any = None,
        finalized: bool = True,
        version: Literal["legacy", 0] = "legacy",
        block_time: int | None = None,
    ) -> str:
        """Record a transfer of `lamports` from `source` to `destination` in a new slot; its signature.

        Built as wallets build a Solana Pay payment: compute unit limit and price, the memo (if
        any), then the system transfer with `reference` as an extra read-only key. `err` makes it
        fail on chain (a node's `meta.err`, e.g. `insufficient_funds_error(3)`); so does a payer
        that cannot afford it. A failed transfer moves nothing but the fee. `version=0` makes a
        v0 transaction whose destination and reference come from an address lookup table.
        """
        if lamports < 0:
            raise ValueError("lamports must not be negative")
        if source == destination:
            raise ValueError("a transfer to oneself is not modelled")
        self.slot += 1
        unit_limit, unit_price = 600, 100_000  # micro-lamports per unit: a typical wallet's priority fee
        fee = BASE_FEE + -(-unit_limit * unit_price // 1_000_000)
        instructions = [
            _Instruction(COMPUTE_BUDGET_PROGRAM, (), bytes([2]) + struct.pack("<I", unit_limit)),
            _Instruction(COMPUTE_BUDGET_PROGRAM, (), bytes([3]) + struct.pack("<Q", unit_price)),
        ]
        logs: list[str] = []
        for _ in range(2):
            logs += [f"Program {COMPUTE_BUDGET_PROGRAM} invoke [1]", f"Program {COMPUTE_BUDGET_PROGRAM} success"]
        units = 300
        if memo is not None:
            instructions.append(_Instruction(MEMO_PROGRAM, (), memo.encode(), parsed=memo, program_name="spl-memo"))
            logs += [
                f"Program {MEMO_PROGRAM} invoke [1]",
                f'Program log: Memo (len {len(memo.encode())}): "{memo}"',
                f"Program {MEMO_PROGRAM} consumed 2977 of 599700 compute units",
                f"Program {MEMO_PROGRAM} success",
            ]
            units += 2977
        transfer_accounts = (source, destination) + ((reference,) if reference is not None else ())
        instructions.append(
            _Instruction(
                SYSTEM_PROGRAM,
                transfer_accounts,
                struct.pack("<IQ", 2, lamports),
                parsed={
                    "info": {"destination": destination, "lamports": lamports, "source": source},
                    "type": "transfer",
                },
                program_name="system",
            )
        )
        transfer_index = len(instructions) - 1
        units += 150
        payer_before = self.balances.get(source, DEFAULT_PAYER_BALANCE)
        logs.append(f"Program {SYSTEM_PROGRAM} invoke [1]")
        if err is None and payer_before < lamports + fee:
            err = insufficient_funds_error(transfer_index)
            logs.append(f"Transfer: insufficient lamports {payer_before - fee}, need {lamports}")
        if err is None:
            logs.append(f"Program {SYSTEM_PROGRAM} success")
        else:
            logs.append(f"Program {SYSTEM_PROGRAM} failed: custom program error: 0x1")
        programs = sorted({ix.program for ix in instructions})
        lookup_table: str | None = None
        loaded_writable: list[str] = []
        loaded_readonly: list[str] = []
        static_keys: list[tuple[str, bool, bool]] = [(source, True, True)]
        if version == 0:
            lookup_table = _random_key()
            loaded_writable = [destination]
            loaded_readonly = [reference] if reference is not None else []
            static_keys += [(program, False, False) for program in programs]
        else:
            static_keys.append((destination, False, True))
            readonly = sorted(programs + ([reference] if reference is not None else []))
            static_keys += [(key, False, False) for key in readonly]
        keys = [key for key, _, _ in static_keys] + loaded_writable + loaded_readonly
        pre = [self.balances.get(key, payer_before if key == source else self._resting_balance(key)) for key in keys]
        post = list(pre)
        post[keys.index(source)] -= fee
        if err is None:
            post[keys.index(source)] -= lamports
            post[keys.index(destination)] += lamports
        for key, balance in zip(keys, post):
            self.balances[key] = balance
        signature = b58encode(secrets.token_bytes(64))
        self.transactions[signature] = Transfer(
            signature=signature,
            slot=self.slot,
            block_time=int(time.time()) if block_time is None else block_time,
            source=source,
            destination=destination,
            lamports=lamports,
            reference=reference,
            memo=memo,
            err=err,
            fee=fee,
            version=version,
            status="finalized" if finalized else "confirmed",
            blockhash=_random_key(),
            static_keys=static_keys,
            loaded_writable=loaded_writable,
            loaded_readonly=loaded_readonly,
            lookup_table=lookup_table,
            instructions=instructions,
            pre_balances=pre,
            post_balances=post,
            log_messages=logs,
            compute_units=units,
        )
        return signature

    def finalize(self, signature: str) -> None:
        """The cluster finalized a confirmed transfer: now visible at `finalized` too."""
        self.transactions[signature].status = "finalized"

    @staticmethod
    def _resting_balance(key: str) -> int:
        # Program accounts hold their rent-exempt minimum; a fresh reference or wallet holds nothing.
        if key in (SYSTEM_PROGRAM, COMPUTE_BUDGET_PROGRAM):
            return 1
        if key == MEMO_PROGRAM:
            return 521_498_880
        return 0

    def fail(self, status: int | None = HTTPStatus.INTERNAL_SERVER_ERROR) -> None:
        """Make every POST answer ``status`` (None: answer normally again)."""
        self.status = None if status is None else int(status)

    def fail_rpc(self, code: int | None = NODE_UNHEALTHY, message: str = "Node is unhealthy") -> None:
        """Make every call answer a JSON-RPC error (HTTP 200), as an unhealthy node does."""
        self.rpc_error = None if code is None else RpcError(code, message)

    def pause(self) -> None:
        """Hold every request unanswered (already held ones too) until `resume` or `stop`."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def methods(self) -> Counter[str | None]:
        """How many calls each method got."""
        return Counter(call.method for call in self.calls)

    async def wait_for_requests(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self._wait(lambda: self.requests >= count, timeout)

    async def wait_for_in_flight(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until at least ``count`` requests are being answered at once."""
        await self._wait(lambda: self.in_flight >= count, timeout)

    # --- inside ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await self._notify()
        try:
            body = await request.read()
            await self._running.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status is not None:
                return self._http_failure(self.status)
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError):
                return web.json_response(_error_answer(None, RpcError(PARSE_ERROR, "Parse error")))
            if isinstance(payload, list):
                if not payload:
                    return web.json_response(_error_answer(None, RpcError(INVALID_REQUEST, "Invalid request")))
                return web.json_response([await self._call(item) for item in payload])
            return web.json_response(await self._call(payload))
        finally:
            self.in_flight -= 1
            await self._notify()

    def _http_failure(self, status: int) -> web.Response:
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            # What mainnet-beta's rate limiter answers: a JSON-RPC shaped body on HTTP 429.
            body = _error_answer(1, RpcError(429, "Too many requests for a specific RPC call"))
            return web.json_response(body, status=status)
        return web.Response(status=status, text=f"{HTTPStatus(status).phrase}\n")

    async def _call(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return _error_answer(None, RpcError(INVALID_REQUEST, "Invalid request"))
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params")
        self.calls.append(RpcCall(method if isinstance(method, str) else None, params, request_id))
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _error_answer(request_id, RpcError(INVALID_REQUEST, "Invalid request"))
        if self.rpc_error is not None:
            return _error_answer(request_id, self.rpc_error)
        handler = self.handlers.get(method)
        if handler is None:
            return _error_answer(request_id, RpcError(METHOD_NOT_FOUND, "Method not found"))
        try:
            result = handler(params)
            if inspect.isawaitable(result):
                result = await result
        except RpcError as exc:
            return _error_answer(request_id, exc)
        return {"jsonrpc": "2.0", "result": result, "id": request_id}

    def context(self) -> dict[str, Any]:
        """The `context` object of RpcResponse-wrapped results."""
        return {"apiVersion": self.api_version, "slot": self.slot}

    def _get_account_info(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            raise RpcError(INVALID_PARAMS, "Invalid params: expected [pubkey, config?]")
        address = params[0]
        if not 32 <= len(address) <= 44 or any(char not in _B58_ALPHABET for char in address):
            raise RpcError(INVALID_PARAMS, "Invalid param: Invalid")
        config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        encoding = config.get("encoding")
        account = self.accounts.get(address)
        if account is None:
            return {"context": self.context(), "value": None}
        return {
            "context": self.context(),
            "value": {
                "data": _encode_data(account.data, encoding),
                "executable": account.executable,
                "lamports": account.balance,
                "owner": account.owner,
                "rentEpoch": account.rent_epoch,
                "space": len(account.data),
            },
        }

    def _get_signatures_for_address(self, params: Any) -> list[dict[str, Any]]:
        address, config = _address_and_config(params)
        commitment = _commitment(config)
        limit = config.get("limit", MAX_SIGNATURES)
        if limit is None:
            limit = MAX_SIGNATURES
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_SIGNATURES:
            raise RpcError(INVALID_PARAMS, f"Invalid limit; max {MAX_SIGNATURES}")
        before, until = config.get("before"), config.get("until")
        # Newest first: by slot, and within a slot the later one first.
        matching = [
            tx for tx in reversed(self.transactions.values()) if tx.visible_at(commitment) and address in tx.keys()
        ]
        if before is not None:
            signatures = [tx.signature for tx in matching]
            matching = matching[signatures.index(before) + 1 :] if before in signatures else []
        answer: list[dict[str, Any]] = []
        for tx in matching:
            if tx.signature == until or len(answer) >= limit:
                break
            answer.append(tx.signature_info())
        return answer

    def _get_transaction(self, params: Any) -> dict[str, Any] | None:
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            raise RpcError(INVALID_PARAMS, "Invalid params: expected [signature, config?]")
        signature = params[0]
        if not 64 <= len(signature) <= 88 or any(char not in _B58_ALPHABET for char in signature):
            raise RpcError(INVALID_PARAMS, "Invalid param: Invalid")
        raw_config = params[1] if len(params) > 1 else None
        # The old form passes the encoding alone as the second parameter.
        config: dict[str, Any] = {"encoding": raw_config} if isinstance(raw_config, str) else raw_config or {}
        if not isinstance(config, dict):
            raise RpcError(INVALID_PARAMS, "Invalid params: the config must be an object")
        commitment = _commitment(config)
        encoding = config.get("encoding") or "json"
        if encoding not in ("json", "jsonParsed"):
            raise RpcError(INVALID_PARAMS, f"Invalid params: this node answers json or jsonParsed, not {encoding!r}")
        max_version = config.get("maxSupportedTransactionVersion")
        tx = self.transactions.get(signature)
        if tx is None or not tx.visible_at(commitment):
            return None
        if tx.version == 0 and (max_version is None or max_version < 0):
            raise RpcError(
                UNSUPPORTED_TRANSACTION_VERSION,
                "Transaction version (0) is not supported by the requesting client. Please try the request "
                'again with the following configuration parameter: "maxSupportedTransactionVersion": 0',
            )
        return tx.to_json(encoding, max_version)


def _address_and_config(params: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(params, list) or not params or not isinstance(params[0], str):
        raise RpcError(INVALID_PARAMS, "Invalid params: expected [address, config?]")
    address = params[0]
    if not 32 <= len(address) <= 44 or any(char not in _B58_ALPHABET for char in address):
        raise RpcError(INVALID_PARAMS, "Invalid param: Invalid")
    config = params[1] if len(params) > 1 and params[1] is not None else {}
    if not isinstance(config, dict):
        raise RpcError(INVALID_PARAMS, "Invalid params: the config must be an object")
    return address, config


def _commitment(config: dict[str, Any]) -> Commitment:
    commitment = config.get("commitment") or "finalized"
    if commitment == "finalized":
        return "finalized"
    if commitment == "confirmed":
        return "confirmed"
    if commitment == "processed":
        raise RpcError(INVALID_PARAMS, "Method does not support commitment below `confirmed`")
    raise RpcError(INVALID_PARAMS, f"Invalid params: unknown commitment {commitment!r}")


def _encode_data(data: bytes, encoding: Any) -> Any:
    if encoding in ("base64", "jsonParsed"):  # nodes fall back to base64 for accounts they cannot parse
        return [base64.b64encode(data).decode("ascii"), "base64"]
    if encoding == "base58":
        return [b58encode(data), "base58"]
    if encoding is None:  # the legacy default, "binary": a bare base58 string
        return b58encode(data)
    raise RpcError(INVALID_PARAMS, f"Invalid params: unsupported encoding {encoding!r}")


def _error_answer(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error.to_json(), "id": request_id}
