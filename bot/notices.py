"""Hands the payments notices (payments/notices.py) to the sender in each user's language, and
acknowledges each once Telegram has taken it or refused it for good."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import redis.exceptions
from aiogram.types import InlineKeyboardMarkup

from bot import keyboards
from bot.texts import format_moment, pick_language, text
from domain.messages import Lane, OutgoingMessage
from managers.redis_manager import REDIS_ERRORS, RedisManager
from payments.notices import NOTICES_KEY, decode
from payments.records import NoticeKind, PaymentNotice
from services.loops import BackgroundLoop
from services.sender import MessageSender, Outcome
from services.subscribers import StoreUnavailable, SubscriberStore

logger = logging.getLogger("alertbot.payments")

GROUP = "bot"
CONSUMER = "notices"
RETRY_SECONDS = 2.0
_RENEW = frozenset({NoticeKind.REMINDER_3D, NoticeKind.REMINDER_1D, NoticeKind.PLAN_ENDED, NoticeKind.PARTIAL})


def word(notice: PaymentNotice, language: str) -> tuple[str, InlineKeyboardMarkup | None]:
    """The notice's text in `language`, with a button to the plans where renewing is the point."""
    values = dict(notice.values)
    if "plan_end" in values:
        values["plan_end"] = format_moment(datetime.fromisoformat(values["plan_end"]))
    if "verdict" in values:
        values["why"] = text(f"verdict_{values['verdict'] or 'not_received'}", language)
    if values.get("currency") == "XTR":  # Telegram Stars
        values["currency"] = "⭐"
    if "signature" in values:
        values["signature"] = values["signature"][:8] + "…"
    body = text(f"notice_{notice.kind.value}", language, **values)
    return body, keyboards.renew(language) if notice.kind in _RENEW else None


class NoticeDelivery:
    def __init__(self, redis: RedisManager, sender: MessageSender, store: SubscriberStore) -> None:
        self.redis = redis
        self.sender = sender
        self.store = store
        self._loop = BackgroundLoop("payment-notices")

    async def start(self) -> None:
        self._loop.start(self._run)

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        start_id = "0"  # first this consumer's entries left unacknowledged by the last run
        while not self._loop.stopping:
            try:
                async with self.redis.guarded() as client:
                    try:
                        await client.xgroup_create(NOTICES_KEY, GROUP, id="0", mkstream=True)
                    except redis.exceptions.ResponseError as exc:
                        if "BUSYGROUP" not in str(exc):
                            raise
                    read: Any = await client.xreadgroup(
                        GROUP, CONSUMER, {NOTICES_KEY: start_id}, count=50, block=None if start_id == "0" else 1000
                    )
                entries = read[0][1] if read else []
                if start_id == "0" and not entries:
                    start_id = ">"
                for entry_id, fields in entries:
                    await self._hand_over(entry_id, fields)
                if start_id == "0":
                    start_id = ">"
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                logger.warning("payment notices wait for Redis (%r)", exc)
                start_id = "0"
                await asyncio.sleep(RETRY_SECONDS)

    async def _hand_over(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            notice = decode(fields)
        except (KeyError, ValueError) as exc:
            logger.error("unreadable payment notice %s %s (%r): dropped", entry_id, fields, exc)
            await self._ack(entry_id)
            return
        try:
            subscriber = await self.store.get(notice.telegram_id)
        except StoreUnavailable:
            subscriber = None
        body, markup = word(notice, pick_language(subscriber.language if subscriber else None))

        async def done(outcome: Outcome) -> None:
            if outcome.status != "sent":
                logger.warning(
                    "payment notice %s to %s not delivered: %s", notice.kind, notice.telegram_id, outcome.reason
                )
            await self._ack(entry_id)

        self.sender.submit(
            OutgoingMessage(
                notice.telegram_id, body, lane=Lane.PAYMENT, reply_markup=markup, kind=f"notice_{notice.kind.value}"
            ),
            on_done=done,
        )

    async def _ack(self, entry_id: str) -> None:
        try:
            async with self.redis.guarded() as client:
                await client.xack(NOTICES_KEY, GROUP, entry_id)
                await client.xdel(NOTICES_KEY, entry_id)
        except REDIS_ERRORS as exc:
            # Sent, yet still pending: the next start sends it again. Said loudly.
            logger.warning("payment notice %s sent but not acknowledged (%r)", entry_id, exc)
