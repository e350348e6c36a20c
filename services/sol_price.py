"""The SOL/USD price, read on-chain from Pyth through the operator's own Solana JSON-RPC.

PumpPortal frames carry market caps in SOL; subscribers filter in USD, so the bot needs the SOL
price of the moment. It reads it from Pyth's sponsored SOL/USD price update account (a
`PriceUpdateV2` account of the Pyth Solana Receiver program) with one `getAccountInfo` call,
through `SOLANA_RPC_URL`: the JSON-RPC the operator already configures for SOL payment checks.
So there is no new setting, no third-party price API, no API key to buy or leak, and one fewer
party to trust: the price is what the chain says, checked here (program owner, feed id, full
Wormhole verification, freshness, confidence) before it is used.

`parse_price_update` and `why_unusable` are pure; `SolPriceSource` does the I/O and keeps the
last good price, which `current()` answers only while it is fresh enough to price with.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp

logger = logging.getLogger("alertbot.sol_price")

__all__ = [
    "DEFAULT_MAX_AGE",
    "MAX_CONFIDENCE_RATIO",
    "PRICE_UPDATE_V2_DISCRIMINATOR",
    "PYTH_RECEIVER_PROGRAM",
    "SOL_USD_FEED_ID",
    "SOL_USD_PRICE_ACCOUNT",
    "OracleDataError",
    "OraclePrice",
    "SolPriceSource",
    "parse_price_update",
    "safe_rpc_url",
    "why_unusable",
]

#: Pyth's SOL/USD price feed id (the same on every chain Pyth serves).
SOL_USD_FEED_ID: Final[str] = "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d"
#: The sponsored SOL/USD price update account (shard 0), kept fresh by Pyth on mainnet-beta.
SOL_USD_PRICE_ACCOUNT: Final[str] = "7UVimffxr9ow1uXYxsr4LHAcV58mLzhmwaeKvJ1pjLiE"
#: The Pyth Solana Receiver program: only accounts it owns can hold verified Pyth prices.
PYTH_RECEIVER_PROGRAM: Final[str] = "rec5EKMGg6MxZYaMdyBfgwp4d5rB9T1VQH5pJv5LtFJ"
#: Anchor's account discriminator: sha256("account:PriceUpdateV2")[:8].
PRICE_UPDATE_V2_DISCRIMINATOR: Final[bytes] = bytes([34, 241, 35, 99, 157, 126, 244, 205])

DEFAULT_MAX_AGE: Final[timedelta] = timedelta(minutes=5)
#: A price whose confidence interval is wider than this share of it is too uncertain to use.
MAX_CONFIDENCE_RATIO: Final[float] = 0.02

_HEADER_LEN: Final[int] = 8 + 32  # discriminator, write_authority
_VERIFICATION_PARTIAL: Final[int] = 0
_VERIFICATION_FULL: Final[int] = 1
# PriceFeedMessage then posted_slot: feed_id, price, conf, exponent, publish_time,
# prev_publish_time, ema_price, ema_conf, posted_slot.
_MESSAGE: Final[struct.Struct] = struct.Struct("<32sqQiqqqQQ")
# Real exponents are single digits (SOL/USD is -8); bounding them keeps a corrupt account from
# making the decimal scaling below overflow or take forever.
_MAX_ABS_EXPONENT: Final[int] = 64
# A getAccountInfo answer for this account is a few hundred bytes; never buffer a runaway body.
_MAX_BODY_BYTES: Final[int] = 1 << 20
_MAX_ERROR_TEXT: Final[int] = 200

Verification = Literal["full", "partial"]


class OracleDataError(ValueError):
    """Account data that is not a well-formed `PriceUpdateV2`; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class OraclePrice:
    """One decoded Pyth price update. Prices are in USD (already scaled by the exponent)."""

    feed_id: str  # lowercase hex, no 0x
    price: float
    confidence: float
    exponent: int
    publish_time: datetime  # aware, UTC
    verification: Verification
    num_signatures: int | None  # Wormhole guardian signatures checked; None when `full`
    ema_price: float
    posted_slot: int


def _scaled(value: int, exponent: int) -> float:
    # Decimal scaling is exact, so 15_000_000_000e-8 is exactly 150.0, not 150.00000000000003.
    return float(Decimal(value).scaleb(exponent))


def _utc(epoch: int, field: str) -> datetime:
    try:
        return datetime.fromtimestamp(epoch, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise OracleDataError(f"{field} {epoch} is not a representable time") from None


def parse_price_update(data: bytes) -> OraclePrice:
    """Decode a Pyth Solana Receiver `PriceUpdateV2` account (Anchor/borsh, little-endian).

    Trailing bytes are allowed: the program allocates room for the widest variant (134 bytes),
    so a `full` update carries one unused byte at the end.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise OracleDataError(f"account data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER_LEN + 1:
        raise OracleDataError(f"account data too short: {len(data)} bytes")
    if data[:8] != PRICE_UPDATE_V2_DISCRIMINATOR:
        raise OracleDataError("not a PriceUpdateV2 account (discriminator mismatch)")
    tag = data[_HEADER_LEN]
    offset = _HEADER_LEN + 1
    num_signatures: int | None = None
    verification: Verification
    if tag == _VERIFICATION_FULL:
        verification = "full"
    elif tag == _VERIFICATION_PARTIAL:
        verification = "partial"
        if len(data) < offset + 1:
            raise OracleDataError(f"account data too short: {len(data)} bytes")
        num_signatures = data[offset]
        offset += 1
    else:
        raise OracleDataError(f"unknown verification level tag {tag}")
    needed = offset + _MESSAGE.size
    if len(data) < needed:
        raise OracleDataError(f"account data too short: {len(data)} bytes, {verification} needs {needed}")
    (
        feed_id,
        price,
        conf,
        exponent,
        publish_time,
        _prev_publish_time,
        ema_price,
        _ema_conf,
        posted_slot,
    ) = _MESSAGE.unpack_from(data, offset)
    if abs(exponent) > _MAX_ABS_EXPONENT:
        raise OracleDataError(f"implausible exponent {exponent}")
    return OraclePrice(
        feed_id=feed_id.hex(),
        price=_scaled(price, exponent),
        confidence=_scaled(conf, exponent),
        exponent=exponent,
        publish_time=_utc(publish_time, "publish_time"),
        verification=verification,
        num_signatures=num_signatures,
        ema_price=_scaled(ema_price, exponent),
        posted_slot=posted_slot,
    )


def why_unusable(
    price: OraclePrice,
    *,
    owner: str,
    now: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
    feed_id: str = SOL_USD_FEED_ID,
    max_confidence_ratio: float = MAX_CONFIDENCE_RATIO,
) -> str | None:
    """None when `price` may be used to price tokens; else a short reason, safe to log.

    `owner` is the account's owner as the RPC reported it: anyone can create an account with
    the right bytes, only the receiver program can write verified prices into one it owns.
    """
    if owner != PYTH_RECEIVER_PROGRAM:
        return f"account owner {owner} is not the Pyth receiver program"
    if price.feed_id != feed_id.lower().removeprefix("0x"):
        return f"wrong feed {price.feed_id}"
    if price.verification != "full":
        # Partial means only some Wormhole guardian signatures were checked. Pyth posts its
        # sponsored feeds fully verified, so anything weaker is not the update we expect.
        return f"verification {price.verification} ({price.num_signatures} signatures), not full"
    if not price.price > 0:
        return f"non-positive price {price.price}"
    age = now - price.publish_time
    if age > max_age:
        return f"stale: published {int(age.total_seconds())}s ago"
    if -age > max_age:
        return f"published {int(-age.total_seconds())}s in the future"
    if price.confidence > price.price * max_confidence_ratio:
        return f"confidence ±{price.confidence:g} over {max_confidence_ratio:.0%} of {price.price:g}"
    return None


def safe_rpc_url(url: str) -> str:
    """scheme://host[:port] only, for logs and /health.

    RPC providers put the key anywhere: userinfo, the query (`?api-key=`, Helius) or the path
    (`/v2/KEY`, Alchemy; `/TOKEN/`, QuickNode), so everything but the host goes.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<invalid url>"
    hidden = "/…" if parts.path.strip("/") or parts.query else ""
    return urlunsplit((parts.scheme, host, "", "", "")) + hidden


class _AttemptFailed(Exception):
    """One URL did not give a usable price; the message is safe to log."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SolPriceSource:
    """The SOL/USD price from Pyth, refreshed in the background, for `pumpportal_parser`.

    `current` is the callable the parser wants: the last good price while it is fresh, else
    None (so USD figures become unknown rather than wrong).
    """

    def __init__(
        self,
        rpc_urls: Sequence[str],
        api_limit: asyncio.Semaphore,
        *,
        refresh_seconds: float = 30.0,
        max_age: timedelta = DEFAULT_MAX_AGE,
        account: str = SOL_USD_PRICE_ACCOUNT,
        feed_id: str = SOL_USD_FEED_ID,
        timeout: float = 5.0,
        clock: Callable[[], datetime] = _utc_now,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not rpc_urls:
            raise ValueError("at least one Solana RPC URL is needed")
        if refresh_seconds <= 0 or timeout <= 0:
            raise ValueError("refresh_seconds and timeout must be positive")
        self.rpc_urls: tuple[str, ...] = tuple(rpc_urls)
        self.api_limit = api_limit
        self.refresh_seconds = refresh_seconds
        self.max_age = max_age
        self.account = account
        self.feed_id = feed_id
        self.timeout = timeout
        self._clock = clock
        self._session = session
        self._owns_session = session is None
        self._task: asyncio.Task[None] | None = None
        self._last: OraclePrice | None = None
        self._next_url = 0  # where the next refresh starts: the last URL that worked, or the one after a failure
        self._request_id = 0
        self._logged_errors: dict[int, str] = {}  # per URL, so a URL that stays down logs once
        self._outage = False  # the last refresh got nothing from any URL
        self.refreshes = 0  # refresh() calls completed
        self.failures = 0  # URL attempts that gave no usable price
        self.last_error: str | None = None  # the latest failure, safe to log
        self.last_url: int | None = None  # index in rpc_urls of the latest request

    # --- what the bot reads ----------------------------------------------------------------

    def current(self) -> float | None:
        """The SOL price in USD, or None when there is none younger than `max_age`."""
        price = self._last
        if price is None or self._clock() - price.publish_time > self.max_age:
            return None
        return price.price

    @property
    def last_price(self) -> OraclePrice | None:
        """The last good update, however old (for /health and /admin)."""
        return self._last

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def health(self) -> dict[str, Any]:
        """For /health: ok while a fresh price is known, else degraded."""
        last = self._last
        age = None if last is None else round((self._clock() - last.publish_time).total_seconds(), 3)
        return {
            "status": "ok" if self.current() is not None else "degraded",
            "running": self.running,
            "price": None if last is None else last.price,
            "publish_time": None if last is None else last.publish_time.isoformat(),
            "age_s": age,
            "refreshes": self.refreshes,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_url": self.last_url,
            "last_url_host": None if self.last_url is None else safe_rpc_url(self.rpc_urls[self.last_url]),
            "urls": len(self.rpc_urls),
        }

    # --- reading the chain -----------------------------------------------------------------

    async def refresh(self) -> float | None:
        """Read the price once, trying each URL at most once, starting where the last try ended.

        Returns the price now held (a newer one than before, or the same one if the node that
        answered lags behind), or None when no URL gave a usable price; the last good price is
        kept either way, and `current()` decides whether it is still fresh enough.
        """
        count = len(self.rpc_urls)
        start = self._next_url
        try:
            for step in range(count):
                index = (start + step) % count
                self.last_url = index
                try:
                    price = await self._read(index)
                except _AttemptFailed as exc:
                    self._failed(index, str(exc))
                    # The next attempt, in this refresh or the next one, starts after this URL.
                    self._next_url = (index + 1) % count
                    continue
                self._next_url = index
                self._adopt(index, price)
                if self._outage:
                    self._outage = False
                    logger.info("sol price: reading again (from %s)", safe_rpc_url(self.rpc_urls[index]))
                return self._last.price if self._last is not None else None
            if not self._outage:  # once per outage: the per-URL warnings already said why
                self._outage = True
                logger.warning("sol price: none of the %d RPC URLs gave a usable price", count)
            return None
        finally:
            self.refreshes += 1

    def _adopt(self, index: int, price: OraclePrice) -> None:
        # RPC nodes lag each other; after a rotation the older price must not replace a newer one.
        if self._last is None or price.publish_time >= self._last.publish_time:
            self._last = price
        if self._logged_errors.pop(index, None) is not None:
            logger.info("sol price: %s answers again", safe_rpc_url(self.rpc_urls[index]))

    def _failed(self, index: int, error: str) -> None:
        self.failures += 1
        self.last_error = error
        url = safe_rpc_url(self.rpc_urls[index])
        if self._logged_errors.get(index) != error:
            self._logged_errors[index] = error
            logger.warning("sol price: RPC URL %d (%s): %s", index, url, error)
        else:
            logger.debug("sol price: RPC URL %d (%s): %s", index, url, error)

    async def _read(self, index: int) -> OraclePrice:
        value = await self._get_account_info(index)
        owner = value.get("owner")
        data = value.get("data")
        if not isinstance(owner, str):
            raise _AttemptFailed("account has no owner")
        if not (isinstance(data, list) and len(data) == 2 and data[1] == "base64" and isinstance(data[0], str)):
            raise _AttemptFailed("account data is not base64")
        try:
            raw = base64.b64decode(data[0], validate=True)
        except (binascii.Error, ValueError):
            raise _AttemptFailed("account data is not valid base64") from None
        try:
            price = parse_price_update(raw)
        except OracleDataError as exc:
            raise _AttemptFailed(str(exc)) from None
        reason = why_unusable(price, owner=owner, now=self._clock(), max_age=self.max_age, feed_id=self.feed_id)
        if reason is not None:
            raise _AttemptFailed(f"price rejected: {reason}")
        return price

    async def _get_account_info(self, index: int) -> dict[str, Any]:
        """The `value` of a getAccountInfo answer from URL `index`, or _AttemptFailed."""
        self._request_id += 1
        request_id = self._request_id
        body = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "getAccountInfo",
            "params": [self.account, {"encoding": "base64", "commitment": "confirmed"}],
        }
        session = self._ensure_session()
        try:
            async with self.api_limit:
                async with session.post(
                    self.rpc_urls[index],
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as response:
                    if response.status != 200:
                        raise _AttemptFailed(f"HTTP {response.status}")
                    raw = await _read_capped(response)
        except TimeoutError:
            raise _AttemptFailed(f"timed out after {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            # Only the class name: aiohttp's messages can quote the full URL, key included.
            raise _AttemptFailed(f"connection failed ({type(exc).__name__})") from None
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            raise _AttemptFailed("answer is not JSON") from None
        if not isinstance(answer, dict):
            raise _AttemptFailed("answer is not a JSON-RPC object")
        error = answer.get("error")
        if error is not None:
            raise _AttemptFailed(_rpc_error_text(error))
        if answer.get("id") != request_id:
            raise _AttemptFailed("answer id does not match the request")
        result = answer.get("result")
        if not isinstance(result, dict) or "value" not in result:
            raise _AttemptFailed("answer has no result.value")
        value = result["value"]
        if value is None:
            raise _AttemptFailed(f"account {self.account} not found")
        if not isinstance(value, dict):
            raise _AttemptFailed("result.value is not an account")
        return value

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    # --- background refresh ----------------------------------------------------------------

    async def start(self) -> None:
        """Refresh now and then every `refresh_seconds`, in the background (idempotent)."""
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name="sol-price")
        logger.info(
            "sol price: reading Pyth SOL/USD from %s every %gs",
            ", ".join(safe_rpc_url(url) for url in self.rpc_urls),
            self.refresh_seconds,
        )

    async def stop(self) -> None:
        """Stop refreshing and close the HTTP session (if this source opened it)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> SolPriceSource:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the loop: prices would silently go stale
                logger.exception("sol price: refresh failed unexpectedly")
            await asyncio.sleep(self.refresh_seconds)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise _AttemptFailed(f"answer larger than {_MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _rpc_error_text(error: Any) -> str:
    if isinstance(error, dict):
        code = error.get("code")
        message = str(error.get("message", ""))[:_MAX_ERROR_TEXT]
        return f"JSON-RPC error {code}: {message}"
    return f"JSON-RPC error: {str(error)[:_MAX_ERROR_TEXT]}"
