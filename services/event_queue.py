"""The bounded queue between the feed readers and the processing workers.

Calls and creates are never dropped: when the queue is full the reader waits (back-pressure
on the socket). Price updates of one token are merged while queued: only the newest matters,
and a burst of trades must not crowd out the calls subscribers pay for. What needs every price,
peaks included (the follow-ups tracker), listens at `put`, before any merge.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from domain.events import Event, PriceEvent

DEFAULT_CAPACITY = 10_000


@dataclass
class QueueStats:
    put: int = 0
    merged: int = 0
    waits: int = 0  # times a reader had to wait for room
    max_depth: int = 0

    def numbers(self) -> dict[str, float]:
        """Every counter by name, for /metrics."""
        return {name: float(value) for name, value in asdict(self).items()}


class _PriceSlot:
    """A queued price update that later updates of the same token overwrite in place."""

    __slots__ = ("event",)

    def __init__(self, event: PriceEvent) -> None:
        self.event = event


class EventQueue:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._items: deque[Event | _PriceSlot] = deque()
        self._price_slots: dict[str, _PriceSlot] = {}
        self._not_empty = asyncio.Condition()
        self._not_full = asyncio.Condition()
        self.stats = QueueStats()
        # Each hears every price as it arrives; none may await or raise.
        self.price_listeners: list[Callable[[PriceEvent], None]] = []

    def qsize(self) -> int:
        return len(self._items)

    def health(self) -> dict[str, int]:
        return {"size": len(self._items), "capacity": self.capacity}

    def _merged_into_queued(self, event: PriceEvent) -> bool:
        """Fold a price update into the one already queued for its token, if there is one."""
        slot = self._price_slots.get(event.address)
        if slot is None:
            return False
        if event.ts >= slot.event.ts:
            slot.event = event
        self.stats.merged += 1
        return True

    async def put(self, event: Event) -> None:
        if isinstance(event, PriceEvent):
            for listener in self.price_listeners:
                listener(event)
            if self._merged_into_queued(event):
                return
        if len(self._items) >= self.capacity:
            self.stats.waits += 1
            async with self._not_full:
                await self._not_full.wait_for(lambda: len(self._items) < self.capacity)
        if isinstance(event, PriceEvent):
            # A slot for this token may have been queued while we waited for room.
            if self._merged_into_queued(event):
                return
            slot = _PriceSlot(event)
            self._price_slots[event.address] = slot
            self._items.append(slot)
        else:
            self._items.append(event)
        self.stats.put += 1
        self.stats.max_depth = max(self.stats.max_depth, len(self._items))
        async with self._not_empty:
            self._not_empty.notify()

    async def get(self) -> Event:
        return (await self.get_many(1))[0]

    async def get_many(self, limit: int) -> list[Event]:
        """Wait for at least one event, then take up to `limit` of those queued, oldest first."""
        if not self._items:
            async with self._not_empty:
                await self._not_empty.wait_for(lambda: bool(self._items))
        events: list[Event] = []
        while self._items and len(events) < limit:
            item = self._items.popleft()
            if isinstance(item, _PriceSlot):
                self._price_slots.pop(item.event.address, None)
                events.append(item.event)
            else:
                events.append(item)
        async with self._not_full:
            self._not_full.notify(len(events))
        return events
