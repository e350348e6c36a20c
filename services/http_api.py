"""The service's own HTTP endpoints: /health and /metrics (payment callbacks join later).

The app only reads state through the callables it is given, so it knows nothing of how the
stores or the stream work, and tests can serve it with any state they like.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HealthProvider = Callable[[], Awaitable[dict[str, Any]]]

HEALTH_KEY = web.AppKey("health_provider", object)
SERVING_KEY = web.AppKey("serving", object)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


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


async def health(request: web.Request) -> web.Response:
    serving: ServingFlag = request.app[SERVING_KEY]  # type: ignore[assignment]
    provider: HealthProvider = request.app[HEALTH_KEY]  # type: ignore[assignment]
    parts = await provider()
    body = {"status": overall_status(parts), **parts}
    if not serving.serving:
        body["status"] = "starting_or_stopping"
        return web.json_response(body, status=503)
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    output = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=output, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_http_app(health_provider: HealthProvider, serving: ServingFlag, registry: CollectorRegistry) -> web.Application:
    app = web.Application()
    app[HEALTH_KEY] = health_provider
    app[SERVING_KEY] = serving
    app[REGISTRY_KEY] = registry
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
