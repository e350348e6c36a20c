"""Renders a call's alert once per language for the subscribers it may reach, before the claim.

The claim script (services.dedup) writes the outbox entry of each subscriber it wins from what
`render` returns; `queue` takes the direct path while Redis is down.
"""

from __future__ import annotations

from domain.alert_text import render_alert, render_digest_line
from domain.matching import SubscriberIndex
from domain.messages import RenderedAlert, alert_lane
from services.outbox import Outbox
from services.pipeline import AlertBatch


class AlertRenderer:
    """Each alert rendered once per language, and each subscriber's language and lane."""

    def __init__(self, queue: Outbox, index: SubscriberIndex) -> None:
        self.queue = queue
        self.index = index

    def render(self, batch: AlertBatch) -> RenderedAlert:
        languages: dict[str, int] = {}
        texts: list[tuple[str, str]] = []
        routes: dict[int, tuple[int, int]] = {}
        for telegram_id in batch.telegram_ids:
            subscriber = self.index.get(telegram_id)
            language = subscriber.language if subscriber else "en"
            at = languages.get(language)
            if at is None:
                at = languages[language] = len(texts)
                texts.append(
                    (
                        render_alert(batch.token, batch.callers, seen_at=batch.seen_at, language=language),
                        render_digest_line(batch.token, batch.callers, seen_at=batch.seen_at, language=language),
                    )
                )
            routes[telegram_id] = (at, int(alert_lane(subscriber, batch.seen_at)))
        photo = batch.token.image_url if (batch.token.image_url or "").startswith("https://") else None
        return RenderedAlert(batch.token.address, tuple(texts), routes, photo, batch.received_at or None)
