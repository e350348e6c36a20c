"""Turns the pipeline's alert batches into queued Telegram sends, rendered once per language."""

from __future__ import annotations

import time

from bot.alert_text import render_alert, render_digest_line
from services.delivery_queue import Delivery, DeliveryQueue
from services.matching import SubscriberIndex
from services.notification import AlertBatch
from services.sender import Lane


class AlertOutbox:
    """Renders each alert once per language and publishes one durable send per subscriber."""

    def __init__(self, queue: DeliveryQueue, index: SubscriberIndex) -> None:
        self.queue = queue
        self.index = index

    async def __call__(self, batch: AlertBatch) -> None:
        rendered: dict[str, tuple[str, str]] = {}
        # The frame's arrival on the wall clock, so the latency survives a restart in between.
        received = time.time() - (time.perf_counter() - batch.received_at) if batch.received_at else None
        photo = batch.token.image_url if (batch.token.image_url or "").startswith("https://") else None
        deliveries: list[Delivery] = []
        for telegram_id in batch.telegram_ids:
            subscriber = self.index.get(telegram_id)
            language = subscriber.language if subscriber else "en"
            texts = rendered.get(language)
            if texts is None:
                texts = rendered[language] = (
                    render_alert(batch.token, batch.callers, seen_at=batch.seen_at, language=language),
                    render_digest_line(batch.token, batch.callers, seen_at=batch.seen_at, language=language),
                )
            paid = subscriber is not None and subscriber.plan_expires_at is not None
            deliveries.append(Delivery(
                token=batch.token.address, chat_id=telegram_id, html=texts[0],
                priority=Lane.PAID_ALERT if paid else Lane.FREE_ALERT, digest_line=texts[1], photo_url=photo,
                received_at=received,
            ))
        await self.queue.publish(deliveries)
