"""Turns the pipeline's alert batches into Telegram messages on the sender's queue."""

from __future__ import annotations

from bot.alert_text import render_alert
from services.matching import SubscriberIndex
from services.notification import AlertBatch
from services.sender import AlertSender

# Lower is sooner (see AlertSender): replies to users' own commands use 0..4, alerts these.
PRIORITY_PAID_ALERT = 10
PRIORITY_ADMIN_ALERT = 12


class AlertOutbox:
    """Renders each alert once per language and queues it for every subscriber of the batch."""

    def __init__(self, sender: AlertSender, index: SubscriberIndex) -> None:
        self.sender = sender
        self.index = index

    def __call__(self, batch: AlertBatch) -> None:
        rendered: dict[str, str] = {}
        for telegram_id in batch.telegram_ids:
            subscriber = self.index.get(telegram_id)
            language = subscriber.language if subscriber else "en"
            html = rendered.get(language)
            if html is None:
                html = rendered[language] = render_alert(
                    batch.token, batch.callers, seen_at=batch.seen_at, language=language
                )
            paid = subscriber is not None and subscriber.plan_expires_at is not None
            self.sender.submit(
                telegram_id, html, priority=PRIORITY_PAID_ALERT if paid else PRIORITY_ADMIN_ALERT,
                meta={"kind": "alert", "token": batch.token.address, "received_at": batch.received_at},
            )
