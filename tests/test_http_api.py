"""/health as the public sees it: one check per interval however many probes, nothing internal shown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.http_api import ServingFlag, build_http_app

# What the components report, details included: the state of a bad day.
DETAILED: dict[str, Any] = {
    "redis": {
        "status": "degraded",
        "mode": "redis",
        "url": "redis://:***@cache.internal.example:6379/0",
        "latency_ms": None,
        "circuit": "open",
        "pending_writes": 3,
        "last_error": "ConnectionError: Error 111 connecting to cache.internal.example:6379",
    },
    "postgres": {
        "status": "down",
        "latency_ms": None,
        "pool_size": 0,
        "pool_free": 0,
        "error": "OSError: [Errno 111] Connect call failed ('10.1.2.3', 5432)",
    },
    "stream": {
        "status": "degraded",
        "feeds": [
            {
                "status": "down",
                "name": "feed",
                "url": "wss://feed.internal.example/ws",
                "connected": False,
                "last_error": "handshake refused: HTTP 503",
                "reconnects": 4,
            },
            {"status": "ok", "name": "pumpportal", "url": "wss://pumpportal.fun/api/data", "connected": True},
        ],
    },
    "queue": {"size": 2, "capacity": 10_000},
    "sol_price": {
        "status": "degraded",
        "price": None,
        "last_error": "timeout from rpc.internal.example",
        "last_url_host": "rpc.internal.example",
        "failures": 5,
    },
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Provider:
    """A health provider that counts its checks and can be held inside one."""

    def __init__(self) -> None:
        self.checks = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> dict[str, Any]:
        self.checks += 1
        await self.gate.wait()
        return json.loads(json.dumps(DETAILED))


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Provider, Clock]]:
    provider, clock, serving = Provider(), Clock(), ServingFlag()
    serving.serving = True
    runner = web.AppRunner(build_http_app(provider, serving, CollectorRegistry(), health_ttl=1.5, clock=clock))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/health", provider, clock
    await runner.cleanup()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def test_many_probes_cost_one_check_per_interval(served: tuple[str, Provider, Clock]) -> None:
    url, provider, clock = served
    async with aiohttp.ClientSession() as http:
        provider.gate.clear()  # the first check is slow: everyone arriving meanwhile waits for it
        probes = [asyncio.create_task(get(http, url)) for _ in range(40)]
        while provider.checks == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        provider.gate.set()
        answers = await asyncio.gather(*probes)
        assert provider.checks == 1
        assert {status for status, _ in answers} == {200} and len({body for _, body in answers}) == 1
        clock.now += 1.4
        await get(http, url)
        assert provider.checks == 1  # still fresh
        clock.now += 0.2
        await get(http, url)
        assert provider.checks == 2  # stale after 1.5 s: checked again


async def test_the_body_shows_statuses_and_fixed_reasons_never_hosts_urls_or_errors(
    served: tuple[str, Provider, Clock],
) -> None:
    url, _, _ = served
    async with aiohttp.ClientSession() as http:
        status, text = await get(http, url)
    assert status == 200
    for leak in (
        "internal.example",
        "pumpportal.fun",
        "10.1.2.3",
        "://",
        "6379",
        "5432",
        "Errno",
        "Error",
        "timeout",
        "refused",
        "HTTP 503",
    ):
        assert leak not in text
    body = json.loads(text)
    assert body["status"] == "degraded"
    assert body["redis"] == {
        "status": "degraded",
        "mode": "redis",
        "latency_ms": None,
        "circuit": "open",
        "pending_writes": 3,
        "reason": "unreachable, answering from memory",
    }
    assert body["postgres"] == {
        "status": "down",
        "latency_ms": None,
        "pool_size": 0,
        "pool_free": 0,
        "reason": "unreachable",
    }
    assert body["stream"]["status"] == "degraded" and body["stream"]["reason"] == "a feed is not ok"
    feed, pumpportal = body["stream"]["feeds"]
    assert feed == {"status": "down", "name": "feed", "connected": False, "reconnects": 4, "reason": "feed unreachable"}
    assert pumpportal == {"status": "ok", "name": "pumpportal", "connected": True}
    assert body["queue"] == {"size": 2, "capacity": 10_000}
    assert body["sol_price"] == {"status": "degraded", "price": None, "failures": 5, "reason": "no fresh price"}
