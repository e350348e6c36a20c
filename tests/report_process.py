"""One process's run of a report, for the test of two processes running it at once.

    python -m tests.report_process KIND SLOT  (SLOT in ISO format; the clock stands at SLOT)

Reads DATABASE_URL, REDIS_URL and TELEGRAM_API_URL; prints "ready" once connected, waits for a
line on stdin before running, so both processes start the run together, then prints the run's
summary as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime

from bot.reports import ReportJobs
from bot.runtime import create_bot
from domain.reports import ReportKind
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from services.cache import CacheRegistry
from services.reports import ReportStore
from services.sender import MessageSender
from services.subscribers import SubscriberStore
from standins.telegram import DEFAULT_TOKEN


async def main(kind: ReportKind, slot: datetime) -> None:
    redis = RedisManager.from_url(os.environ["REDIS_URL"])
    await redis.start()
    postgres = PostgresManager(os.environ["DATABASE_URL"], min_size=1, max_size=4)
    await postgres.start()
    caches = CacheRegistry(redis)
    await caches.start()
    bot = create_bot(DEFAULT_TOKEN, os.environ["TELEGRAM_API_URL"])
    sender = MessageSender(bot)
    await sender.start()
    store = SubscriberStore(redis, postgres, caches, frozenset())
    # Small claim batches, so the two processes take turns within one run.
    jobs = ReportJobs(ReportStore(postgres), store, sender, clock=lambda: slot, claim_batch=3)
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        summary = await jobs.run(kind, slot)
        print(json.dumps({"claimed": summary.claimed, "sent": summary.sent, "candidates": summary.candidates}))
    finally:
        await jobs.close()
        await sender.stop(drain=True, timeout=10)
        await bot.session.close()
        await caches.stop()
        await postgres.close()
        await redis.close()


if __name__ == "__main__":
    asyncio.run(main(ReportKind(sys.argv[1]), datetime.fromisoformat(sys.argv[2])))
