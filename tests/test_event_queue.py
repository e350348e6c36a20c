"""The bounded queue: calls never dropped (the reader waits), prices merged, all of it counted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from domain.events import CallEvent, Channel, PriceEvent, TokenInfo
from services.event_queue import EventQueue

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def price(address: str, value: float, seconds: int) -> PriceEvent:
    return PriceEvent(address=address, price_usd=value, market_cap_usd=value * 1e9, ts=T0 + timedelta(seconds=seconds))


def call(n: int) -> CallEvent:
    return CallEvent(token=TokenInfo(address=f"{n:044d}"), channel=Channel("-1"), called_at=T0)


async def test_prices_of_one_token_merge_into_the_newest_while_queued() -> None:
    queue = EventQueue(capacity=10)
    await queue.put(price("A", 1.0, 0))
    await queue.put(call(1))
    await queue.put(price("A", 3.0, 2))
    await queue.put(price("A", 2.0, 1))  # older than the queued one: does not replace it
    await queue.put(price("B", 5.0, 0))
    assert queue.qsize() == 3 and queue.stats.merged == 2
    first = await queue.get()
    assert isinstance(first, PriceEvent) and first.price_usd == 3.0  # keeps its place, newest value
    assert isinstance(await queue.get(), CallEvent)
    await queue.put(price("A", 4.0, 3))  # A was taken: a new slot
    assert [e.price_usd for e in (await queue.get(), await queue.get())] == [5.0, 4.0]  # type: ignore[union-attr]


async def test_a_full_queue_makes_the_reader_wait_and_drops_no_call() -> None:
    queue = EventQueue(capacity=3)
    for n in range(3):
        await queue.put(call(n))
    blocked = asyncio.create_task(queue.put(call(3)))
    await asyncio.sleep(0)
    assert not blocked.done() and queue.stats.waits == 1 and queue.qsize() == 3
    taken = [await queue.get() for _ in range(2)]
    await asyncio.wait_for(blocked, timeout=5)
    rest = [await queue.get() for _ in range(2)]
    assert [e.token.address for e in taken + rest] == [f"{n:044d}" for n in range(4)]  # type: ignore[union-attr]
    assert queue.stats.put == 4 and queue.stats.max_depth == 3
    assert queue.health() == {"size": 0, "capacity": 3}


async def test_get_many_takes_what_is_waiting_up_to_the_limit_in_order() -> None:
    queue = EventQueue(capacity=10)
    for n in range(5):
        await queue.put(call(n))
    first = await queue.get_many(3)
    rest = await queue.get_many(10)
    assert [e.token.address for e in first + rest] == [f"{n:044d}" for n in range(5)]  # type: ignore[union-attr]
    assert len(first) == 3 and len(rest) == 2
