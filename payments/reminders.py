"""Reminders before a plan ends (3 days and 1 day) and a notice when it has ended, each once.

Plan ends are kept in the `plans:ends` sorted set by the ledger. Each reminder is claimed in
Redis (`reminders:{user}:{plan end}`) before it is handed to the sender, so a restart or a
second process never sends it again; a plan extended meanwhile has a new end and its own set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from domain.plans import LATE_NOTICE, REMINDERS, due_reminder
from managers.redis_manager import RedisManager
from payments.pg_writer import PLAN_ENDS_KEY, PLAN_SET_AT_KEY
from payments.records import NoticeKind, Notify, PaymentNotice
from services.subscribers import from_epoch_text

logger = logging.getLogger("alertbot.payments")

KINDS = {"3d": NoticeKind.REMINDER_3D, "1d": NoticeKind.REMINDER_1D, "ended": NoticeKind.PLAN_ENDED}
# Claims outlive the window in which their reminder could be due.
CLAIM_SECONDS = int((max(before for _, before in REMINDERS) + LATE_NOTICE + timedelta(days=1)).total_seconds())


def claim_key(telegram_id: int, plan_end: float) -> str:
    return f"reminders:{telegram_id}:{int(plan_end)}"


class PlanReminders:
    def __init__(
        self, redis: RedisManager, notify: Notify, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.redis = redis
        self.notify = notify
        self.clock = clock

    async def run_once(self) -> int:
        """Send every reminder due now; returns how many."""
        now = self.clock()
        earliest = (now - LATE_NOTICE).timestamp()
        latest = (now + max(before for _, before in REMINDERS)).timestamp()
        async with self.redis.guarded() as client:
            await client.zremrangebyscore(PLAN_ENDS_KEY, "-inf", f"({earliest}")
            ends: Any = await client.zrangebyscore(PLAN_ENDS_KEY, earliest, latest, withscores=True)
        sent = 0
        for member, score in ends:
            telegram_id = int(member)
            key = claim_key(telegram_id, score)
            async with self.redis.guarded() as client:
                claimed = frozenset(str(kind) for kind in await client.smembers(key))
                set_at = cast(str | None, await client.hget(PLAN_SET_AT_KEY, str(telegram_id)))
                moved = from_epoch_text(set_at)
                kind = due_reminder(datetime.fromtimestamp(score, UTC), now, claimed, moved)
                if kind is None or not await client.sadd(key, kind):
                    continue
                await client.expire(key, CLAIM_SECONDS)
            plan_end = datetime.fromtimestamp(score, UTC)
            await self.notify(PaymentNotice(telegram_id, KINDS[kind], {"plan_end": plan_end.isoformat()}))
            logger.info("reminder %s sent to user %s (plan until %s)", kind, telegram_id, plan_end.isoformat())
            sent += 1
        return sent
