"""From an event to alerts: the token pipeline's decisions, with I/O only through its collaborators.

For a call: remember the calling channel, gather every calling channel's latest statistics,
match all subscribers at once (services.matching), claim the matches atomically
(services.dedup), and hand each won alert to `deliver` (which renders and queues the message).
Persistence is fire-and-forget so nothing here waits for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from services.channels import ChannelDirectory, ChannelInfo
from services.dedup import AlertLedger, ClaimRequest
from services.event_queue import EventQueue
from services.events import CallerLine, CallEvent, ChannelRef, ChannelStatsEvent, CreateEvent, Event, MigrateEvent, PriceEvent, TokenInfo
from services.filters import TokenFacts
from services.matching import SubscriberIndex
from services.persistence import PersistenceWriter

logger = logging.getLogger("alertbot.pipeline")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class AlertBatch:
    """One call's alerts: the same token message for each of `telegram_ids`."""

    telegram_ids: tuple[int, ...]
    token: TokenInfo
    callers: tuple[CallerLine, ...]
    seen_at: datetime
    received_at: float  # perf_counter of the frame, for latency


@dataclass
class PipelineStats:
    calls: int = 0
    creates: int = 0
    prices: int = 0
    channel_updates: int = 0
    other: int = 0
    matched: int = 0
    alerts: int = 0
    duplicates_avoided: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def latency_percentile(self, share: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    def numbers(self) -> dict[str, float]:
        out: dict[str, float] = {
            k: v for k, v in self.__dict__.items() if isinstance(v, int)
        }
        for name, share in (("latency_p50_ms", 0.5), ("latency_p99_ms", 0.99)):
            value = self.latency_percentile(share)
            if value is not None:
                out[name] = value
        return out


class NotificationService:
    def __init__(
        self, *, index: SubscriberIndex, ledger: AlertLedger, channels: ChannelDirectory,
        deliver: Callable[[AlertBatch], Awaitable[None] | None], persistence: PersistenceWriter | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.index = index
        self.ledger = ledger
        self.channels = channels
        self.deliver = deliver
        self.persistence = persistence
        self.clock = clock
        self.stats = PipelineStats()

    async def handle(self, event: Event) -> None:
        if isinstance(event, CallEvent):
            await self.on_call(event)
        elif isinstance(event, PriceEvent):
            self.stats.prices += 1
            if self.persistence is not None:
                self.persistence.price(event)
        elif isinstance(event, ChannelStatsEvent):
            self.stats.channel_updates += 1
            await self.channels.update_stats(event)
        elif isinstance(event, CreateEvent):
            # A new token no channel has called yet: remembered, alerted only once called.
            self.stats.creates += 1
            if self.persistence is not None:
                self.persistence.token(event.token, event.created_at)
        elif isinstance(event, MigrateEvent):
            self.stats.other += 1

    async def on_call(self, event: CallEvent) -> list[int]:
        """Process one call; returns the subscribers alerted by it."""
        return (await self.on_calls([event]))[0]

    async def on_calls(self, events: Sequence[CallEvent]) -> list[list[int]]:
        """Process calls in order, with one Redis round trip for all of them; returns each one's alerts.

        Each call is matched with the calling channels this process knows, then every call is
        recorded and its matches claimed in one round trip. Only a call whose token Redis knows
        more callers of is matched and claimed once more. A call that fails is logged, counted and
        answers no alerts; the others go on.
        """
        now = self.clock()
        plans: list[_CallPlan] = []
        # Calls earlier in this batch are recorded before later ones, so later ones may assume them.
        batch_callers: dict[str, dict[str, datetime]] = {}
        for event in events:
            self.stats.calls += 1
            try:
                plans.append(await self._plan(event, batch_callers, now))
            except Exception:  # noqa: BLE001 - one bad call must not cost the others their alerts
                self._failed(event)
        outcomes = await self.ledger.record_and_claim_many([plan.request for plan in plans])
        alerted: dict[int, list[int]] = {}
        for plan, (call_times, won) in zip(plans, outcomes):
            try:
                alerted[id(plan.event)] = await self._finish(plan, call_times, won, now)
            except Exception:  # noqa: BLE001 - as above; this call's claims stand, so it is not retried
                self._failed(plan.event)
        return [alerted.get(id(event), []) for event in events]

    def _failed(self, event: CallEvent) -> None:
        self.stats.errors += 1
        logger.exception("failed to process %s", event.key)

    async def _plan(self, event: CallEvent, batch_callers: dict[str, dict[str, datetime]], now: datetime) -> _CallPlan:
        """Match a call with the callers known before its round trip."""
        token = event.token
        await self.channels.note_caller(event.channel)
        earlier = batch_callers.get(token.address)
        if earlier is None:
            call_times = self.ledger.known_callers(token.address, event.channel.id, event.called_at)
        else:
            call_times = dict(earlier)
            call_times.setdefault(event.channel.id, event.called_at)
        batch_callers[token.address] = call_times
        facts = TokenFacts(token.market_cap_usd, token.liquidity_usd, token.holders, token.created_at)
        refs = {event.channel.id: event.channel}
        callers = await self.channels.callers(call_times, refs)
        matched = self.index.match(facts, event.called_at, [c.facts() for c in callers], now)
        request = ClaimRequest(token.address, event.channel.id, event.called_at, call_times,
                               self.ledger.not_known_alerted(token.address, matched))
        return _CallPlan(event, facts, refs, request, callers, matched)

    async def _finish(self, plan: _CallPlan, call_times: dict[str, datetime], won: list[int], now: datetime) -> list[int]:
        event, token = plan.event, plan.event.token
        callers, matched = plan.callers, plan.matched
        if call_times.keys() != plan.request.assumed.keys():
            callers = await self.channels.callers(call_times, plan.refs)
            matched = self.index.match(plan.facts, event.called_at, [c.facts() for c in callers], now)
            more = self.ledger.not_known_alerted(token.address, matched)
            won += await self.ledger.claim(token.address, more) if more else []
        self.stats.matched += len(matched)
        if self.persistence is not None:
            self.persistence.token(token, now)
            self.persistence.call(event)
        self.stats.duplicates_avoided += len(matched) - len(won)
        if not won:
            return []
        caller_lines = _caller_lines(callers, call_times)
        handed = self.deliver(AlertBatch(tuple(won), token, caller_lines, now, event.received_at))
        if inspect.isawaitable(handed):
            await handed
        if self.persistence is not None:
            self.persistence.alerts(won, token, [c.channel_id for c in caller_lines], now)
        self.stats.alerts += len(won)
        if event.received_at:
            self.stats.latencies_ms.append((time.perf_counter() - event.received_at) * 1000)
        return won


@dataclass(frozen=True)
class _CallPlan:
    """A call between matching and the Redis round trip that decides it."""

    event: CallEvent
    facts: TokenFacts
    refs: dict[str, ChannelRef]
    request: ClaimRequest
    callers: list[ChannelInfo]
    matched: list[int]


def _caller_lines(callers: list[ChannelInfo], call_times: dict[str, datetime]) -> tuple[CallerLine, ...]:
    """The calling channels as the alert lists them, first caller first."""
    ordered = sorted(callers, key=lambda c: call_times[c.id])
    return tuple(CallerLine(c.id, c.name, c.username, c.win_rate, c.avg_gain, call_times[c.id]) for c in ordered)


class ProcessingWorkers:
    """Workers taking events off the queue; one failing event is logged and never stops them.

    A worker takes every event waiting (up to `batch`) at once, so under load the calls among
    them share one Redis round trip; when the feed is quiet a batch is the one event that came.
    """

    def __init__(self, queue: EventQueue, service: NotificationService, workers: int = 4, batch: int = 32) -> None:
        self.queue = queue
        self.service = service
        self.count = workers
        self.batch = batch
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0

    @property
    def idle(self) -> bool:
        return self._busy == 0 and self.queue.qsize() == 0

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"pipeline-worker-{i}") for i in range(self.count)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _work(self) -> None:
        while True:
            events = await self.queue.get_many(self.batch)
            self._busy += 1
            try:
                await self._process(events)
            finally:
                self._busy -= 1

    async def _process(self, events: list[Event]) -> None:
        """Runs of calls go together; any other event is handled alone, in its place in the order."""
        calls: list[CallEvent] = []
        for event in events:
            if isinstance(event, CallEvent):
                calls.append(event)
                continue
            await self._handle_calls(calls)
            calls = []
            await self._guarded(self.service.handle(event), event)
        await self._handle_calls(calls)

    async def _handle_calls(self, calls: list[CallEvent]) -> None:
        # on_calls isolates a failing call itself; what fails here is the round trip for all.
        if calls and not await self._guarded(self.service.on_calls(calls), calls[0]):
            self.service.stats.calls -= len(calls)  # counted again below
            for call in calls:
                await self._guarded(self.service.on_call(call), call)

    async def _guarded(self, work: Coroutine[Any, Any, object], event: Event) -> bool:
        try:
            await work
        except Exception:  # noqa: BLE001 - one bad event must not stop the pipeline
            self.service.stats.errors += 1
            logger.exception("failed to process %s", getattr(event, "key", event))
            return False
        return True
