"""Counts every update the dispatcher receives, by kind, for /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram.types import TelegramObject, Update

from services.metrics import Metrics


class UpdateCounter:
    """An outer update middleware, registered first, so throttled updates are counted too."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        kind = event.event_type if isinstance(event, Update) else type(event).__name__
        self.metrics.updates.labels(kind=kind).inc()
        return await handler(event, data)
