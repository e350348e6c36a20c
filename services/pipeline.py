"""From an event to alerts: the token pipeline's decisions, with I/O only through its collaborators.

A call is matched against every subscriber at once, its alert rendered for the candidates, then
recorded, claimed and queued in one Redis script (services.dedup); calls waiting together share
that round trip. A call Redis refused is tried again later, never dropped. Details:
docs/architecture.md, "Pipeline".
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import RedisError

from domain.events import (
    CallerLine,
    CallEvent,
    Channel,
    ChannelStatsEvent,
    CreateEvent,
    Event,
    MigrateEvent,
    PriceEvent,
    TokenInfo,
)
from domain.filters import TokenFacts
from domain.matching import SubscriberIndex
from domain.messages import RenderedAlert
from services.channels import ChannelDirectory
from services.dedup import AlertLedger, ClaimRequest, ClaimResult
from services.event_queue import EventQueue
from services.outbox import Outbox
from services.persistence import PersistenceWriter

logger = logging.getLogger("alertbot.pipeline")

RETRY_LIMIT = 10_000  # calls waiting for another try; beyond it the workers wait
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
# A call whose callers Redis and this process still disagree on after this many round trips
# (records expiring under it, other processes adding callers) is tried again later.
MAX_ROUNDS = 3
UPKEEP_INTERVAL = 0.25


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AlertBatch:
    """One call's alerts: the same token message for each of `telegram_ids`."""

    telegram_ids: tuple[int, ...]
    token: TokenInfo
    callers: tuple[CallerLine, ...]
    seen_at: datetime
    received_at: float  # wall-clock time the frame arrived (CallEvent.received_at)


class Renderer(Protocol):
    """Renders a call's alerts before the claim that queues them; `queue` is the outbox, which
    also takes the direct path while Redis is down."""

    queue: Outbox

    def render(self, batch: AlertBatch) -> RenderedAlert: ...


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
    deferred: int = 0  # calls put on the retry list after a Redis error
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def latency_percentile(self, share: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    def numbers(self) -> dict[str, float]:
        out: dict[str, float] = {k: v for k, v in self.__dict__.items() if isinstance(v, int)}
        for name, share in (("latency_p50_ms", 0.5), ("latency_p99_ms", 0.99)):
            value = self.latency_percentile(share)
            if value is not None:
                out[name] = value
        return out


class RetryList:
    """Calls to try again, each due after a delay that doubles with its attempts.

    Bounded: `add` waits while `limit` calls are waiting, unless told not to (the upkeep
    re-adds calls it took out itself, so waiting there could only deadlock).
    """

    def __init__(
        self,
        limit: int = RETRY_LIMIT,
        *,
        base: float = RETRY_BASE_SECONDS,
        cap: float = RETRY_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.base = base
        self.cap = cap
        self.clock = clock
        self._heap: list[tuple[float, int, CallEvent]] = []
        self._attempts: dict[CallEvent, int] = {}
        self._seq = itertools.count()
        self._room = asyncio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    async def add(self, event: CallEvent, *, wait: bool = True) -> None:
        while wait and len(self._heap) >= self.limit:
            self._room.clear()
            await self._room.wait()
        attempt = self._attempts.get(event, 0) + 1
        self._attempts[event] = attempt
        delay = min(self.base * 2 ** (attempt - 1), self.cap)
        heapq.heappush(self._heap, (self.clock() + delay, next(self._seq), event))

    def due(self, limit: int) -> list[CallEvent]:
        """Up to `limit` calls whose delay has passed, taken off the list."""
        now = self.clock()
        taken: list[CallEvent] = []
        while self._heap and self._heap[0][0] <= now and len(taken) < limit:
            taken.append(heapq.heappop(self._heap)[2])
        if taken:
            self._room.set()
        return taken

    def next_due_in(self) -> float | None:
        return max(0.0, self._heap[0][0] - self.clock()) if self._heap else None

    def settled(self, event: CallEvent) -> None:
        """The call went through (or failed for good): forget its attempts."""
        self._attempts.pop(event, None)


class CallPipeline:
    def __init__(
        self,
        *,
        index: SubscriberIndex,
        ledger: AlertLedger,
        channels: ChannelDirectory,
        renderer: Renderer | None = None,
        deliver: Callable[[AlertBatch], Awaitable[None] | None] | None = None,
        persistence: PersistenceWriter | None = None,
        clock: Callable[[], datetime] = utc_now,
        retries: RetryList | None = None,
    ) -> None:
        """`renderer` renders the alerts and the claim queues them. `deliver`, if given, hears each
        call's won alerts after that (already queued when there is a renderer; without one, as in
        tests and benchmarks, it is the only consumer)."""
        self.index = index
        self.ledger = ledger
        self.channels = channels
        self.renderer = renderer
        self.deliver = deliver
        self.persistence = persistence
        self.clock = clock
        self.retries = retries or RetryList()
        self.stats = PipelineStats()
        self._writing_back = asyncio.Lock()
        self._write_back_failures = 0
        self._write_back_at = 0.0  # monotonic time before which no write-back is tried

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

    async def on_call(self, event: CallEvent, *, again: bool = False) -> list[int]:
        """Process one call; returns the subscribers alerted by it. `again`: the call was counted
        already, by a batch whose round trip failed as a whole."""
        return (await self.on_calls([event], again=again))[0]

    async def on_calls(self, events: Sequence[CallEvent], *, again: bool = False) -> list[list[int]]:
        """Process calls in order, with one Redis round trip for all of them; returns each one's alerts.

        Each call is matched with the calling channels this process knows, then every call is
        recorded, its matches claimed and their alerts queued in one round trip. Only a call whose
        token Redis knows other callers of is matched and claimed once more. A call Redis refused
        answers no alerts now and goes on the retry list (waiting for room there); a call that
        fails otherwise is logged, counted and dropped. The others go on.
        """
        alerted, deferred = await self._decide(events, first_try=not again)
        for event in deferred:
            await self.retries.add(event)
        return [alerted.get(id(event), []) for event in events]

    async def _decide(
        self,
        events: Sequence[CallEvent],
        *,
        first_try: bool = True,
    ) -> tuple[dict[int, list[int]], list[CallEvent]]:
        """Each call's alerts (by id of the event), and the calls to try again later."""
        now = self.clock()
        plans: list[_CallPlan] = []
        deferred: list[CallEvent] = []
        # Calls earlier in this batch are recorded before later ones, so later ones may assume them.
        batch_callers: dict[str, dict[str, datetime]] = {}
        for event in events:
            if first_try:
                self.stats.calls += 1
            try:
                plans.append(await self._plan(event, batch_callers, now))
            except RedisError as exc:
                self._defer(event, exc, deferred)
            except Exception:  # noqa: BLE001 - one bad call must not cost the others their alerts
                self._failed(event)
        alerted: dict[int, list[int]] = {}
        for _ in range(MAX_ROUNDS):
            if not plans:
                break
            try:
                results = await self.ledger.record_and_claim_many([plan.request for plan in plans])
            except RedisError as exc:  # nothing was decided: every call is tried again
                for plan in plans:
                    self._defer(plan.event, exc, deferred)
                return alerted, deferred
            queued = sum(len(r.won) for r in results if r.claimed and not r.local and r.error is None)
            if queued and self.renderer is not None:
                self.renderer.queue.notify_published(queued)
            # Each script saw the callers recorded so far; the last one per token saw them all.
            latest = {
                plan.event.token.address: result.callers for plan, result in zip(plans, results) if result.error is None
            }
            again: list[_CallPlan] = []
            for plan, result in zip(plans, results):
                if isinstance(result.error, RedisError):
                    self._defer(plan.event, result.error, deferred)
                elif result.error is not None:  # its arguments cannot be sent: a retry would fail the same way
                    self._failed(plan.event, result.error)
                elif not result.claimed:
                    again.append(plan)
                else:
                    try:
                        alerted[id(plan.event)] = await self._finish(plan, result, now)
                    except Exception:  # noqa: BLE001 - as above; this call's alerts are queued, so it is not retried
                        self._failed(plan.event)
            plans = []
            for plan in again:
                callers = latest[plan.event.token.address]
                try:
                    replanned = await self._replan(plan, callers, now)
                    if replanned.request.candidates:
                        plans.append(replanned)
                    else:  # the call is recorded and there is nobody new to claim
                        alerted[id(plan.event)] = await self._finish(replanned, ClaimResult(callers, []), now)
                except RedisError as exc:
                    self._defer(plan.event, exc, deferred)
                except Exception:  # noqa: BLE001
                    self._failed(plan.event)
        for plan in plans:
            self._defer(plan.event, RuntimeError("callers kept changing"), deferred)
        return alerted, deferred

    def unhandled(self, event: Event) -> None:
        """Handling `event` raised (call it from the except block): counted and logged."""
        self.stats.errors += 1
        logger.exception("failed to process %s", getattr(event, "key", event))

    def _failed(self, event: CallEvent, error: BaseException | None = None) -> None:
        self.stats.errors += 1
        logger.error("failed to process %s", event.key, exc_info=error or True)

    def _defer(self, event: CallEvent, error: BaseException, deferred: list[CallEvent]) -> None:
        self.stats.deferred += 1
        logger.warning("call %s not decided (%s: %s); it will be tried again", event.key, type(error).__name__, error)
        deferred.append(event)

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
        return await self._match(event, call_times, now, exact=True)

    async def _replan(self, plan: _CallPlan, callers: dict[str, datetime], now: datetime) -> _CallPlan:
        """Match again with the callers Redis knows; the claim then needs only those."""
        call_times = dict(callers)
        call_times.setdefault(plan.event.channel.id, plan.event.called_at)
        return await self._match(plan.event, call_times, now, exact=False)

    async def _match(
        self, event: CallEvent, call_times: dict[str, datetime], now: datetime, *, exact: bool
    ) -> _CallPlan:
        token = event.token
        facts = TokenFacts(token.market_cap_usd, token.liquidity_usd, token.holders, token.created_at)
        callers = await self.channels.callers(call_times, {event.channel.id: event.channel})
        matched = self.index.match(facts, event.called_at, callers, now)
        candidates = self.ledger.not_known_alerted(token.address, matched)
        # Only a call with someone to alert lists its callers (most calls alert nobody).
        caller_lines = _caller_lines(callers, call_times) if candidates else ()
        alert = None
        if candidates and self.renderer is not None:
            alert = self.renderer.render(AlertBatch(tuple(candidates), token, caller_lines, now, event.received_at))
        request = ClaimRequest(token.address, event.channel.id, event.called_at, call_times, candidates, alert, exact)
        return _CallPlan(event, request, matched, caller_lines)

    async def _finish(self, plan: _CallPlan, result: ClaimResult, now: datetime) -> list[int]:
        event, token = plan.event, plan.event.token
        won = result.won
        if won and result.local and self.renderer is not None and plan.request.alert is not None:
            # Redis is down: to the sender directly, waiting while too many such alerts are unsent.
            # First, so nothing that fails below can leave these claims without their alerts.
            await self.renderer.queue.publish(plan.request.alert.for_chats(won))
        self.stats.matched += len(plan.matched)
        if self.persistence is not None:
            self.persistence.token(token, now)
            self.persistence.call(event)
        self.stats.duplicates_avoided += len(plan.matched) - len(won)
        if not won:
            return []
        if self.deliver is not None:
            handed = self.deliver(AlertBatch(tuple(won), token, plan.caller_lines, now, event.received_at))
            if inspect.isawaitable(handed):
                await handed
        if self.persistence is not None:
            self.persistence.alerts(won, token, [c.channel.id for c in plan.caller_lines], now)
        self.stats.alerts += len(won)
        if event.received_at:
            self.stats.latencies_ms.append((time.time() - event.received_at) * 1000)
        return won

    # ------------------------------------------------------------------ upkeep

    async def upkeep(self, stopping: asyncio.Event, batch: int = 32) -> None:
        """Until `stopping` is set: try the deferred calls again when due, and write an outage's
        records back once Redis answers again."""
        while not stopping.is_set():
            due = self.retries.due(batch)
            if due:
                await self._retry(due)
            try:
                await self.write_back()
            except Exception:  # noqa: BLE001 - the upkeep must outlive any one failure
                logger.exception("writing back the outage's records failed")
            pause = self.retries.next_due_in()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    stopping.wait(), min(UPKEEP_INTERVAL, pause if pause is not None else UPKEEP_INTERVAL)
                )

    async def _retry(self, events: list[CallEvent]) -> None:
        try:
            _, deferred = await self._decide(events, first_try=False)
        except Exception:  # noqa: BLE001 - back on the list rather than lost
            logger.exception("retrying %d call(s) failed", len(events))
            deferred = list(events)
        again = {id(event) for event in deferred}
        for event in events:
            if id(event) in again:
                await self.retries.add(event, wait=False)
            else:
                self.retries.settled(event)

    async def write_back(self) -> bool:
        """Redis answers again after an outage: the direct alerts the sender has not started go
        back to the stream, and the calls and claims made meanwhile to their records. True when
        nothing is left to write back."""
        queue = self.renderer.queue if self.renderer is not None else None
        if not self.ledger.unsynced and not (queue is not None and queue.direct_pending):
            return True
        if not self.ledger.redis.available or self._writing_back.locked() or time.monotonic() < self._write_back_at:
            return False
        async with self._writing_back:
            unsent = queue.withdraw_direct() if queue is not None else []
            added = self.ledger.reentered
            left = await self.ledger.write_back(unsent)
            if queue is not None:
                if left:
                    queue.send_direct(left)  # Redis failed again: they go out all the same
                queue.notify_published(self.ledger.reentered - added)
            done = not left and not self.ledger.unsynced
            # Redis refusing the records again and again is tried less and less often.
            self._write_back_failures = 0 if done else self._write_back_failures + 1
            if not done:
                self._write_back_at = time.monotonic() + min(
                    RETRY_BASE_SECONDS * 2 ** (self._write_back_failures - 1), RETRY_MAX_SECONDS
                )
            return done


@dataclass(frozen=True)
class _CallPlan:
    """A call between matching and the Redis round trip that decides it."""

    event: CallEvent
    request: ClaimRequest
    matched: list[int]
    caller_lines: tuple[CallerLine, ...]


def _caller_lines(callers: list[Channel], call_times: dict[str, datetime]) -> tuple[CallerLine, ...]:
    """The calling channels as the alert lists them, first caller first."""
    ordered = sorted(callers, key=lambda c: call_times[c.id])
    return tuple(CallerLine(c, call_times[c.id]) for c in ordered)


class ProcessingWorkers:
    """Workers taking events off the queue; one failing event is logged and never stops them.

    A worker takes every event waiting (up to `batch`) at once, so under load the calls among
    them share one Redis round trip; when the feed is quiet a batch is the one event that came.
    Beside them the service's upkeep retries deferred calls and writes an outage's records back.
    """

    def __init__(self, queue: EventQueue, service: CallPipeline, workers: int = 4, batch: int = 32) -> None:
        self.queue = queue
        self.service = service
        self.count = workers
        self.batch = batch
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._upkeep: asyncio.Task[None] | None = None
        # The upkeep stops between Redis commands: cancelling it inside redis-py's connection
        # pool can leave the pool's lock held (CPython 3.11) and hang every later call.
        self._stopping = asyncio.Event()

    @property
    def idle(self) -> bool:
        return self._busy == 0 and self.queue.qsize() == 0 and len(self.service.retries) == 0

    async def start(self) -> None:
        self._stopping.clear()
        self._tasks = [asyncio.create_task(self._work(), name=f"pipeline-worker-{i}") for i in range(self.count)]
        self._upkeep = asyncio.create_task(self.service.upkeep(self._stopping), name="pipeline-upkeep")

    async def stop(self) -> None:
        self._stopping.set()
        if self._upkeep is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._upkeep), 10.0)
            except TimeoutError:
                self._upkeep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._upkeep
            self._upkeep = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        # Last chance for an outage's records (the sender still holds the direct alerts).
        with contextlib.suppress(Exception):
            await self.service.write_back()

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
            for call in calls:  # one by one, so only the call at fault is lost
                await self._guarded(self.service.on_call(call, again=True), call)

    async def _guarded(self, work: Coroutine[Any, Any, object], event: Event) -> bool:
        try:
            await work
        except Exception:  # noqa: BLE001 - one bad event must not stop the pipeline
            self.service.unhandled(event)
            return False
        return True
