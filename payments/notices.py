"""Notices to users (receipts, shortfalls, reminders, rewards) kept in a Redis stream until the
bot has handed them to Telegram, so a restart between a payment and its receipt loses neither."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from managers.redis_manager import REDIS_ERRORS, RedisManager
from payments.records import NoticeKind, PaymentNotice

logger = logging.getLogger("alertbot.payments")

NOTICES_KEY = "payments:notices"


def encode(notice: PaymentNotice) -> dict[str, str]:
    return {
        "telegram_id": str(notice.telegram_id),
        "kind": notice.kind.value,
        "values": json.dumps(dict(notice.values)),
    }


def decode(fields: dict[str, str]) -> PaymentNotice:
    return PaymentNotice(int(fields["telegram_id"]), NoticeKind(fields["kind"]), json.loads(fields["values"]))


class NoticeBoard:
    def __init__(self, redis: RedisManager) -> None:
        self.redis = redis

    async def post(self, notice: PaymentNotice) -> None:
        """Queue the notice; with Redis down it is logged instead (the payment itself is safe)."""
        try:
            async with self.redis.guarded() as client:
                await client.xadd(NOTICES_KEY, cast(Any, encode(notice)))
        except REDIS_ERRORS as exc:
            logger.warning(
                "notice %s for user %s not queued (%r): %s", notice.kind, notice.telegram_id, exc, dict(notice.values)
            )
