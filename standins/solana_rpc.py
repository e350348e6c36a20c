"""A local Solana JSON-RPC node for tests, speaking the real wire format over HTTP.

`SolanaRpcServer` is an aiohttp server answering JSON-RPC 2.0 POSTs the way a mainnet-beta node
does (`{"jsonrpc": "2.0", "result": ..., "id": N}` or `{"jsonrpc": "2.0", "error": {"code": N,
"message": "..."}, "id": N}`, batches included), so the bot's own HTTP client talks to it with no
mocking at all. Methods are a dict of name -> handler (`server.handlers`): `getAccountInfo`,
`getSlot` and `getHealth` come built in; later work adds e.g. `getSignaturesForAddress` and
`getTransaction` by putting a handler in the dict. A handler gets the request's `params` and
returns the `result`, or raises `RpcError` for a JSON-RPC error answer.

Accounts are set by the test: `set_account(address, data, owner=...)`, or `set_price(...)` for
a Pyth `PriceUpdateV2` account built by `price_update_bytes` (an encoder written from the
on-chain layout, independent of the bot's decoder, so a round trip means something).

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
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final

from aiohttp import web

from standins.feed_server import _Waitable

__all__ = [
    "PRICE_UPDATE_LEN",
    "PYTH_RECEIVER_PROGRAM",
    "SOL_USD_FEED_ID",
    "SOL_USD_PRICE_ACCOUNT",
    "Account",
    "RpcCall",
    "RpcError",
    "SolanaRpcServer",
    "b58encode",
    "price_update_bytes",
]

DEFAULT_TIMEOUT: Final[float] = 10.0

# Written out again rather than imported from the bot: the double is the outside world.
SOL_USD_FEED_ID: Final[str] = "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d"
SOL_USD_PRICE_ACCOUNT: Final[str] = "7UVimffxr9ow1uXYxsr4LHAcV58mLzhmwaeKvJ1pjLiE"
PYTH_RECEIVER_PROGRAM: Final[str] = "rec5EKMGg6MxZYaMdyBfgwp4d5rB9T1VQH5pJv5LtFJ"
SYSTEM_PROGRAM: Final[str] = "11111111111111111111111111111111"
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
        }
        self.delay = 0.0  # seconds every answer waits (lets concurrent requests overlap)
        self.status: int | None = None  # when set, every POST answers this HTTP status
        self.rpc_error: RpcError | None = None  # when set, every call answers this error
        self.requests = 0  # HTTP POSTs received, failures included
        self.calls: list[RpcCall] = []
        self.in_flight = 0  # requests being answered now
        self.max_in_flight = 0
        self._running = asyncio.Event()
        self._running.set()
        self._runner: web.AppRunner | None = None
        self._host = ""
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SolanaRpcServer:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._host, self.port = host, self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self.resume()  # held requests must not hold the shutdown up
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.port = 0

    async def __aenter__(self) -> SolanaRpcServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the Solana RPC server is not started")
        return f"http://{self._host}:{self.port}{self.path}"

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
