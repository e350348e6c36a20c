"""Prices for followed tokens beyond the feed's own `price` frames: DexScreener's tokens endpoint,
polled in batches of 30 within its rate limit, and PumpPortal trade subscriptions kept equal to
the followed tokens. Both hand PriceEvents on like the feed's (the pipeline's queue)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

from domain.events import PriceEvent
from domain.feed_adapters import DEXSCREENER_CHAIN, FrameError, parse_dexscreener_tokens
from managers.stream import StreamManager
from services.loops import BackgroundLoop

logger = logging.getLogger("alertbot.prices")

DEXSCREENER_URL = "https://api.dexscreener.com"
DEXSCREENER_BATCH = 30  # addresses one request may ask for
DEXSCREENER_RATE = 300  # requests a minute the tokens endpoint allows
POLL_SECONDS = 5.0  # pause between passes over the stale tokens
ASK_AGAIN_SECONDS = 60.0  # a token asked for is not asked again sooner (it may not be listed)
RATE_LIMITED_SECONDS = 60.0  # pause after a 429 without Retry-After
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 2_000_000  # 30 tokens' pairs are a few hundred kB at most
TRADE_METHOD = "subscribeTokenTrade"


@dataclass
class PollStats:
    requests: int = 0
    tokens_asked: int = 0
    prices: int = 0  # PriceEvents handed on
    errors: int = 0  # requests that failed (network, HTTP error, an answer we cannot read)
    rate_limited: int = 0  # 429 answers

    def numbers(self) -> dict[str, float]:
        return {name: float(value) for name, value in asdict(self).items()}


class DexScreenerPoller:
    """Asks DexScreener for the prices of the tokens `stale()` names, 30 a request, never faster
    than `rate` requests a minute (aiolimiter), and hands each price to `sink`."""

    def __init__(
        self,
        base_url: str,
        stale: Callable[[], Sequence[str]],
        sink: Callable[[PriceEvent], Awaitable[None]],
        *,
        rate: int = DEXSCREENER_RATE,
        interval: float = POLL_SECONDS,
        ask_again_after: float = ASK_AGAIN_SECONDS,
        api_limit: asyncio.Semaphore | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stale = stale
        self.sink = sink
        self.limiter = AsyncLimiter(rate, 60)
        self.interval = interval
        self.ask_again_after = ask_again_after
        self.api_limit = api_limit
        self.timeout = timeout
        self.stats = PollStats()
        self.waiting = False  # a request is waiting for the rate limit
        self._asked: dict[str, float] = {}  # address -> monotonic time last asked
        self._paused_until = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._loop = BackgroundLoop("dexscreener-poller")

    async def start(self) -> None:
        self._loop.start(self._run)

    async def stop(self) -> None:
        await self._loop.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def health(self) -> dict[str, Any]:
        return {"status": "ok", **self.stats.numbers()}

    async def _run(self) -> None:
        while not self._loop.stopping:
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must outlive any one bad pass
                logger.exception("DexScreener poll failed")
            await self._loop.sleep(self.interval)

    def due(self) -> list[str]:
        """The stale tokens not asked for within `ask_again_after`."""
        now = time.monotonic()
        cutoff = now - self.ask_again_after
        for address in [a for a, at in self._asked.items() if at < cutoff]:
            del self._asked[address]
        return [address for address in self.stale() if address not in self._asked]

    async def poll_once(self) -> int:
        """One pass over the tokens due; returns the prices handed on."""
        tokens = self.due()
        handed = 0
        for start in range(0, len(tokens), DEXSCREENER_BATCH):
            if self._loop.stopping:
                break
            chunk = tokens[start : start + DEXSCREENER_BATCH]
            now = time.monotonic()
            for address in chunk:
                self._asked[address] = now
            for event in await self.fetch(chunk):
                await self.sink(event)
                handed += 1
        self.stats.prices += handed
        return handed

    async def fetch(self, addresses: Sequence[str]) -> list[PriceEvent]:
        """One request for up to 30 addresses; [] when it fails (logged and counted)."""
        if not addresses:
            return []
        if len(addresses) > DEXSCREENER_BATCH:
            raise ValueError(f"at most {DEXSCREENER_BATCH} addresses a request")
        pause = self._paused_until - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        self.waiting = True
        try:
            await self.limiter.acquire()
        finally:
            self.waiting = False
        url = f"{self.base_url}/tokens/v1/{DEXSCREENER_CHAIN}/{','.join(addresses)}"
        self.stats.requests += 1
        self.stats.tokens_asked += len(addresses)
        try:
            async with self.api_limit or contextlib.nullcontext():
                payload = await self._get(url)
        except _RateLimited as exc:
            self.stats.rate_limited += 1
            self._paused_until = time.monotonic() + exc.retry_after
            logger.warning("DexScreener answered 429; pausing %.0fs", exc.retry_after)
            return []
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.stats.errors += 1
            logger.warning("DexScreener request failed (%s: %s)", type(exc).__name__, exc)
            return []
        try:
            return parse_dexscreener_tokens(payload, addresses, datetime.now(UTC), time.time())
        except FrameError as exc:
            self.stats.errors += 1
            logger.warning("DexScreener answer unreadable (%s)", exc.reason)
            return []

    async def _get(self, url: str) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        async with self._session.get(url, headers={"Accept": "application/json"}) as response:
            if response.status == 429:
                raise _RateLimited(_retry_after(response.headers.get("Retry-After")))
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await response.content.read(MAX_ANSWER_BYTES + 1)
            if len(body) > MAX_ANSWER_BYTES:
                raise ValueError("answer too large")
            return json.loads(body)


class _RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else RATE_LIMITED_SECONDS
    except ValueError:
        return RATE_LIMITED_SECONDS
    return seconds if math.isfinite(seconds) and 0 < seconds <= 3600 else RATE_LIMITED_SECONDS


class TradeSubscriptions:
    """PumpPortal's per-token trade subscriptions kept equal to the followed tokens: `refresh`
    subscribes the new ones and unsubscribes those no longer followed. `stream` gives the
    PumpPortal stream once it exists (None before); trades it refused are not asked for."""

    def __init__(self, stream: Callable[[], StreamManager | None], tokens: Callable[[], Iterable[str]]) -> None:
        self.stream = stream
        self.tokens = tokens

    async def refresh(self) -> None:
        stream = self.stream()
        if stream is None or stream.trades_refused:
            return
        want = set(self.tokens())
        have = set(stream.subscriptions.keys(TRADE_METHOD))
        fresh, gone = sorted(want - have), sorted(have - want)
        if fresh:
            await stream.subscribe(TRADE_METHOD, fresh)
        if gone:
            await stream.unsubscribe(TRADE_METHOD, gone)
