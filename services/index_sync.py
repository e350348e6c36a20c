"""Keeps the in-memory match index equal to the subscribers' stored state, in every process."""

from __future__ import annotations

import asyncio
import logging

from domain.matching import SubscriberIndex
from services.subscribers import SubscriberStore

logger = logging.getLogger("alertbot.index")


class IndexSync:
    def __init__(self, store: SubscriberStore, index: SubscriberIndex) -> None:
        self.store = store
        self.index = index
        self._tasks: set[asyncio.Task[None]] = set()
        store.on_change(self._changed)

    async def load(self) -> int:
        """Fill the index with everyone who receives alerts now (one PostgreSQL query)."""
        subscribers = await self.store.receiving()
        self.index.replace_all(subscribers)
        logger.info("match index loaded with %d subscribers", len(subscribers))
        return len(subscribers)

    def _changed(self, telegram_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self._reload(telegram_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload(self, telegram_id: int) -> None:
        try:
            subscriber = await self.store.get(telegram_id)
        except Exception:  # noqa: BLE001 - the next change or restart reloads it
            logger.exception("could not reload subscriber %s into the match index", telegram_id)
            return
        if subscriber is None:
            self.index.remove(telegram_id)
        else:
            # Kept even when not receiving now: the index checks plan expiry and pause itself.
            self.index.upsert(subscriber)

    async def settle(self) -> None:
        """Wait for reloads in flight (tests and the demo use it before asserting)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
