"""The service's own HTTP endpoints: /health, /metrics and, when given a handler, the
NOWPayments IPN callback.

The app only reads state through the callables it is given, so it knows nothing of how the
stores or the stream work, and tests can serve it with any state they like.

/health is public: it is cached for `HEALTH_TTL_SECONDS` (however many probes ask, the stores
are checked once per interval, and concurrent probes share one check), and it shows only what
`public_health` lets through: statuses, numbers, and a short fixed reason for each part that is
not ok. Host names, URLs and error texts stay in the logs, where the components write them.

`POST /ipn/nowpayments` hands the raw body and its `x-nowpayments-sig` header to the IPN handler
it is given and answers the HTTP status the handler returns (401 for a forgery, 5xx to have
NOWPayments try again later); without a handler the route does not exist.

With a metrics token, /metrics answers 401 unless the request carries `Authorization: Bearer
<token>` (compared in constant time); /health stays public for load balancers and probes.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HealthProvider = Callable[[], Awaitable[dict[str, Any]]]
# (raw body, signature header or None) -> the HTTP status to answer.
IpnHandler = Callable[[bytes, str | None], Awaitable[int]]

HEALTH_KEY = web.AppKey("health_provider", object)
SERVING_KEY = web.AppKey("serving", object)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
METRICS_TOKEN_KEY = web.AppKey("metrics_token", object)
NOWPAYMENTS_IPN_KEY = web.AppKey("nowpayments_ipn", object)

NOWPAYMENTS_IPN_PATH = "/ipn/nowpayments"
# An IPN is a small JSON object; a body larger than this is not one.
MAX_IPN_BYTES = 64 * 1024

HEALTH_TTL_SECONDS = 1.5
# The only text values /health repeats, and only when they are a short plain word.
_TEXT_KEYS = frozenset({"status", "mode", "circuit", "name"})
_WORD = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Why a part is not ok, in fixed words (the details are in the logs).
_REASONS: dict[tuple[str, str], str] = {
    ("redis", "down"): "not connected",
    ("postgres", "down"): "unreachable",
    ("stream", "down"): "feed unreachable",
    ("stream", "degraded"): "WebSocket down, polling",
    ("stream", "off"): "no feed configured",
    ("sol_price", "degraded"): "no fresh price",
}


class ServingFlag:
    """Whether the service is fully up; /health answers 503 while it is starting or stopping."""

    def __init__(self) -> None:
        self.serving = False


def overall_status(parts: dict[str, Any]) -> str:
    """'ok' when every part says ok (or is switched off), else 'degraded'."""
    for part in parts.values():
        if isinstance(part, dict) and part.get("status") not in (None, "ok", "off"):
            return "degraded"
    return "ok"


def fixed_reason(name: str, state: Mapping[str, Any]) -> str | None:
    """A short fixed reason for a part whose status is not ok; None when it is ok."""
    status = state.get("status")
    if status in (None, "ok"):
        return None
    if "feeds" in state:
        return "a feed is not ok"
    if name == "redis" and status == "degraded":
        if state.get("circuit") not in (None, "closed"):
            return "unreachable, answering from memory"
        if state.get("pending_writes"):
            return "replaying writes made while it was down"
        return "recent errors"
    return _REASONS.get((name, str(status)), "unavailable" if status == "down" else "degraded")


def public_state(name: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """What /health may show of one part: numbers, booleans, plain status words, nested feeds."""
    view: dict[str, Any] = {}
    for key, value in state.items():
        if value is None or isinstance(value, bool | int | float):
            view[key] = value
        elif key in _TEXT_KEYS and isinstance(value, str) and _WORD.fullmatch(value):
            view[key] = value
        elif key == "feeds" and isinstance(value, list):
            view[key] = [public_state(name, feed) for feed in value if isinstance(feed, Mapping)]
    reason = fixed_reason(name, state)
    if reason is not None:
        view["reason"] = reason
    return view


def public_health(parts: Mapping[str, Any]) -> dict[str, Any]:
    return {name: public_state(name, state) for name, state in parts.items() if isinstance(state, Mapping)}


class HealthCache:
    """The provider's answer, reused for `ttl` seconds; concurrent callers share one check."""

    def __init__(
        self, provider: HealthProvider, ttl: float = HEALTH_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.provider = provider
        self.ttl = ttl
        self.clock = clock
        self._value: dict[str, Any] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> dict[str, Any] | None:
        if self._value is not None and self.clock() - self._at < self.ttl:
            return self._value
        return None

    async def __call__(self) -> dict[str, Any]:
        value = self._fresh()
        if value is not None:
            return value
        async with self._lock:
            value = self._fresh()
            if value is None:
                value = public_health(await self.provider())
                self._value, self._at = value, self.clock()
            return value


async def health(request: web.Request) -> web.Response:
    serving: ServingFlag = request.app[SERVING_KEY]  # type: ignore[assignment]
    provider: HealthProvider = request.app[HEALTH_KEY]  # type: ignore[assignment]
    parts = await provider()
    body = {"status": overall_status(parts), **parts}
    if not serving.serving:
        body["status"] = "starting_or_stopping"
        return web.json_response(body, status=503)
    return web.json_response(body)


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries exactly `token` as its bearer token."""
    scheme, _, given = (header or "").partition(" ")
    # compare_digest takes as long for a near miss as for a wild guess.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def metrics(request: web.Request) -> web.Response:
    token = request.app[METRICS_TOKEN_KEY]
    if isinstance(token, str) and not bearer_matches(request.headers.get("Authorization"), token):
        return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    output = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=output, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def nowpayments_ipn(request: web.Request) -> web.Response:
    handler: IpnHandler = request.app[NOWPAYMENTS_IPN_KEY]  # type: ignore[assignment]
    if request.content_length is not None and request.content_length > MAX_IPN_BYTES:
        return web.Response(status=413, text="too large\n")
    body = await request.content.read(MAX_IPN_BYTES + 1)
    if len(body) > MAX_IPN_BYTES:
        return web.Response(status=413, text="too large\n")
    status = await handler(body, request.headers.get("x-nowpayments-sig"))
    return web.Response(status=status, text=f"{HTTPStatus(status).phrase}\n")


def build_http_app(
    health_provider: HealthProvider,
    serving: ServingFlag,
    registry: CollectorRegistry,
    *,
    health_ttl: float = HEALTH_TTL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    nowpayments_ipn_handler: IpnHandler | None = None,
    metrics_token: str | None = None,
) -> web.Application:
    app = web.Application()
    app[METRICS_TOKEN_KEY] = metrics_token or None
    app[HEALTH_KEY] = HealthCache(health_provider, health_ttl, clock)
    app[SERVING_KEY] = serving
    app[REGISTRY_KEY] = registry
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    if nowpayments_ipn_handler is not None:
        app[NOWPAYMENTS_IPN_KEY] = nowpayments_ipn_handler
        app.router.add_post(NOWPAYMENTS_IPN_PATH, nowpayments_ipn)
    return app
