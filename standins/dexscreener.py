"""A local DexScreener API for tests, the demo and the benches: the tokens endpoint in its real shape.

``GET /tokens/v1/{chainId}/{tokenAddresses}`` answers a JSON array of pair objects (chainId,
dexId, url, pairAddress, baseToken, quoteToken, priceNative and priceUsd as decimal strings,
txns, volume, priceChange, liquidity, fdv, marketCap, pairCreatedAt in milliseconds, info), the
pairs of every listed address that trades; an unknown address simply has none. The real API
documents at most 30 addresses a request and 300 requests a minute; the stand-in answers a
longer list with a 400 and a request over the rate with a 429 (Retry-After: 60).

Tests set prices with `set_price` (one pair) or `add_pair` (several pairs of one token) and read
what was asked in `requests` (the addresses of each request, in order).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from standins.http_site import LocalSite

MAX_ADDRESSES = 30
RATE_PER_MINUTE = 300
DEFAULT_TIMEOUT = 10.0
SOL_ADDRESS = "So11111111111111111111111111111111111111112"


@dataclass
class Pair:
    """One trading pair of a token, as the stand-in lists it."""

    token: str
    price_usd: float
    market_cap: float | None
    liquidity_usd: float = 10_000.0
    dex_id: str = "pumpswap"
    pair_address: str = ""
    symbol: str = "TKN"
    fdv: float | None = None
    created_ms: int = 1_763_640_000_000
    extra: dict[str, Any] = field(default_factory=dict)

    def wire(self, chain: str, sol_usd: float) -> dict[str, Any]:
        pair_address = self.pair_address or (self.token[:32] + "Pair")
        body: dict[str, Any] = {
            "chainId": chain,
            "dexId": self.dex_id,
            "url": f"https://dexscreener.com/{chain}/{pair_address.lower()}",
            "pairAddress": pair_address,
            "baseToken": {"address": self.token, "name": self.symbol.title(), "symbol": self.symbol},
            "quoteToken": {"address": SOL_ADDRESS, "name": "Wrapped SOL", "symbol": "SOL"},
            "priceNative": f"{self.price_usd / sol_usd:.12g}",
            "priceUsd": f"{self.price_usd:.12g}",
            "txns": {k: {"buys": 10, "sells": 7} for k in ("m5", "h1", "h6", "h24")},
            "volume": {"h24": 12_000.5, "h6": 4_000.25, "h1": 900.0, "m5": 40.0},
            "priceChange": {"m5": 0.5, "h1": -1.2, "h6": 3.4, "h24": 10.0},
            "liquidity": {
                "usd": self.liquidity_usd,
                "base": 1_000_000.0,
                "quote": self.liquidity_usd / 2 / sol_usd,
            },
            "fdv": self.fdv if self.fdv is not None else self.market_cap,
            "marketCap": self.market_cap,
            "pairCreatedAt": self.created_ms,
            "info": {"imageUrl": f"https://dd.dexscreener.com/ds-data/tokens/{chain}/{self.token}.png", "socials": []},
        }
        body.update(self.extra)
        return body


class DexScreenerServer:
    def __init__(
        self,
        *,
        rate_per_minute: int | None = RATE_PER_MINUTE,
        chain: str = "solana",
        sol_usd: float = 150.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_minute = rate_per_minute
        self.chain = chain
        self.sol_usd = sol_usd
        self.clock = clock
        self.pairs: dict[str, list[Pair]] = {}
        self.requests: list[list[str]] = []  # the addresses each answered request asked for
        self.rejected_429 = 0
        self.rejected_400 = 0
        self._window: deque[float] = deque()
        self._changed = asyncio.Event()
        self._site = LocalSite("DexScreener server")

    # ------------------------------------------------------------------ what tests set

    def set_price(self, token: str, price_usd: float, market_cap: float | None = None, **fields: Any) -> None:
        """`token` trades in one pair at this price (replacing any pairs it had)."""
        self.pairs[token] = [Pair(token, price_usd, market_cap, **fields)]

    def add_pair(self, pair: Pair) -> None:
        self.pairs.setdefault(pair.token, []).append(pair)

    def unlist(self, token: str) -> None:
        self.pairs.pop(token, None)

    # ------------------------------------------------------------------ serving

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> DexScreenerServer:
        app = web.Application()
        app.router.add_get("/tokens/v1/{chain}/{addresses}", self._tokens)
        await self._site.start(app, host, port)
        return self

    async def stop(self) -> None:
        await self._site.stop()

    async def __aenter__(self) -> DexScreenerServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return self._site.origin

    async def wait_for_requests(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until `count` requests have been answered with prices."""

        async def enough() -> None:
            while len(self.requests) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), timeout)

    async def _tokens(self, request: web.Request) -> web.Response:
        now = self.clock()
        if self.rate_per_minute is not None:
            while self._window and self._window[0] <= now - 60.0:
                self._window.popleft()
            if len(self._window) >= self.rate_per_minute:
                self.rejected_429 += 1
                return web.json_response({"error": "Too Many Requests"}, status=429, headers={"Retry-After": "60"})
            self._window.append(now)
        addresses = [a for a in request.match_info["addresses"].split(",") if a]
        if len(addresses) > MAX_ADDRESSES:
            self.rejected_400 += 1
            return web.json_response({"error": f"at most {MAX_ADDRESSES} addresses"}, status=400)
        chain = request.match_info["chain"]
        answer = (
            [pair.wire(chain, self.sol_usd) for address in addresses for pair in self.pairs.get(address, [])]
            if chain == self.chain
            else []
        )
        self.requests.append(addresses)
        self._changed.set()
        return web.json_response(answer)
