"""Delivery of bot messages at the pace Telegram allows, without losing any.

`MessageSender` is the only sender for the bot token: it keeps below Telegram's limits (30/s per
bot, 1/s per private chat, 20/min per group) on its own, in priority lanes, retries what got no
verdict, reports recipients who are gone, and merges a chat's backlog of alerts into digests.
The handlers' own requests take a `turn` in the same pacing. Details: docs/architecture.md,
"Sender".
"""

from __future__ import annotations

import asyncio
import heapq
import html as html_module
import inspect
import itertools
import logging
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal

import aiohttp
from aiogram import Bot
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods.base import Response
from aiogram.types import BufferedInputFile, InputFile, LinkPreviewOptions, Message, ReplyParameters
from aiolimiter import AsyncLimiter

from domain.messages import Lane, OutgoingMessage, log_pairs
from services.metrics import ANSWER_BUCKETS, FRAME_TO_SEND_BUCKETS, TimingHistogram

__all__ = [
    "MessageSender",
    "DeliveryError",
    "caption_fits",
    "DigestPolicy",
    "Lane",
    "OnDone",
    "OnGone",
    "OnSent",
    "Outcome",
    "OutgoingMessage",
    "Turn",
]

logger = logging.getLogger("alertbot.sender")
sent_logger = logging.getLogger("alertbot.sent")

OnGone = Callable[[int, str], Awaitable[None] | None]

LATENCY_WINDOW = 1000  # deliveries the latency percentiles are computed over
PAID_BROADCAST_RATE = 1000  # messages a second Telegram allows with allow_paid_broadcast
# Sends the pace may make up at once after waking late (see _pace_limiter), in seconds of them.
PACE_CATCH_UP = 0.010
RATE_WINDOW = 1.0  # seconds over which Telegram counts sends against global_rate
CAPTION_LIMIT = 1024  # UTF-16 code units of a photo caption, after entities are parsed
# Quick sends a private chat may take from the REPLY lane before its spacing applies; the
# bucket refills at the chat's own rate (per_chat_interval), and every send to the chat uses it.
REPLY_BURST = 3
# A send with no answer within this long is ambiguous (Telegram may have delivered it).
DEFAULT_REQUEST_TIMEOUT = 20.0
# Sends in a row without a verdict from Telegram after which it counts as unreachable: one such
# failure is a hiccup for that chat, three with no answer in between is an outage for all.
UNREACHABLE_AFTER = 3
# aiogram parses every answer as Response[<result type>]. pydantic caches that parametrised class
# only weakly, so the garbage collector kept dropping it and about one send in 17 rebuilt it:
# 5-10 ms of CPU that stalled the event loop each time. This reference keeps it cached.
_MESSAGE_RESPONSE = Response[Message]
# Chat keys for turns that only take a place in the overall pace (edits, callback answers):
# below every real chat id, one per turn, so they neither wait on nor delay a chat's spacing.
_UNCHAINED_BASE = -(10**15)


OnSent = Callable[[int, Message, OutgoingMessage], Awaitable[None] | None]


@dataclass(frozen=True)
class Outcome:
    """What became of a queued message: `sent`, `gone` (recipient blocked/left) or `failed`
    (Telegram refused it for good). A message dropped by stop() hears nothing: a durable queue
    keeps it for the next start."""

    chat_id: int
    status: Literal["sent", "gone", "failed"]
    message_id: int | None = None
    reason: str = ""
    digest: bool = False  # sent merged into a digest message


OnDone = Callable[[Outcome], Awaitable[None] | None]


# A digest's messages: each one's HTML and how many of the lines, in order, it carries.
DigestParts = Sequence[tuple[str, int]]


@dataclass(frozen=True)
class DigestPolicy:
    """When a chat's queued alerts are merged into a digest.

    `render(chat_id, lines)` makes the digest's messages from the alerts' one-line summaries:
    every line in exactly one part, each part within Telegram's limits.
    """

    render: Callable[[int, list[str]], DigestParts]
    threshold: int = 5  # alerts queued for one chat (counting the one due now)
    max_delay: float = 60.0  # seconds an alert may wait before the rest are merged with it


_META_VALUE_MAX = 100

# Errors that say nothing about the message itself: Telegram (or the way to it) is down or refuses
# the bot as a whole. The same request may well succeed later, so it is retried with backoff.
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TelegramServerError,  # 5xx, including RestartingTelegram
    TelegramNetworkError,  # aiogram's wrapper for timeouts and connection errors
    TelegramUnauthorizedError,  # 401: the token was revoked or mistyped; alerts wait for the fix
    TelegramNotFound,  # 404: a wrong API URL or token, not a wrong message
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)


class DeliveryError(Exception):
    """`send_now` could not deliver: the recipient is gone, or the send failed for good."""

    def __init__(self, chat_id: int, reason: str, *, gone: bool = False) -> None:
        super().__init__(f"chat {chat_id}: {reason}")
        self.chat_id = chat_id
        self.reason = reason
        self.gone = gone


@dataclass(eq=False)
class _Job:
    """A queued message and the sender's working state for it: the chat (it may migrate), the
    photo (dropped when refused) and the digest line (dropped when left out of a digest) start as
    the message's own."""

    priority: int
    seq: int  # submission order: FIFO within a priority
    message: OutgoingMessage
    future: asyncio.Future[Message] | None = None
    failures: int = 0  # transient failures so far
    chat_id: int = 0
    photo_url: str | None = None
    photo_bytes: bytes | None = None
    digest_line: str | None = None  # set on alerts that may be merged into a digest
    part: str = ""  # a digest's "part/parts", for the log line
    on_done: OnDone | None = None
    permit: asyncio.Future[None] | None = None  # a turn: resolved when the holder may send
    enqueued_at: float = field(default_factory=time.monotonic)
    members: list[_Job] = field(default_factory=list)  # a digest's alerts

    def __post_init__(self) -> None:
        self.chat_id = int(self.message.chat_id)
        self.photo_url = self.message.photo_url
        self.photo_bytes = self.message.photo_bytes
        self.digest_line = self.message.digest_line

    @property
    def key(self) -> tuple[int, int]:
        return (self.priority, self.seq)

    @property
    def html(self) -> str:
        return self.message.html

    @property
    def reply_markup(self) -> Any:
        return self.message.reply_markup

    def log_fields(self) -> str:
        if self.members:
            return log_pairs(("kind", "digest"), ("alerts", str(len(self.members))), ("part", self.part))
        return self.message.log_fields()


@dataclass
class _Counters:
    sent: int = 0
    alerts_sent: int = 0  # token alerts Telegram took, each alert of a digest counted
    retried: int = 0
    rate_limited: int = 0
    failed: int = 0
    gone: int = 0
    dropped: int = 0  # still queued when stop(drain=False) gave up
    turns: int = 0  # requests handlers made themselves, paced here
    digests: int = 0
    digest_parts: int = 0  # messages the digests took
    digested: int = 0  # alerts merged into digests
    outages: int = 0  # times Telegram became unreachable
    photo_fallbacks: int = 0  # photos Telegram refused, sent as text instead
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


class MessageSender:
    """Queue messages with `submit` (or `send_now` for the result); they go out at Telegram's pace."""

    def __init__(
        self,
        bot: Bot,
        *,
        global_rate: float | None = None,
        paid_broadcast: bool = False,
        per_chat_interval: float = 1.0,
        group_rate_per_minute: float = 20,
        workers: int = 8,
        max_retries: int = 5,  # for send_now; queued messages are retried until Telegram answers
        on_gone: OnGone | None = None,
        on_sent: OnSent | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,  # also how long an outage may last past its end unnoticed
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        link_preview: bool = False,
        digest: DigestPolicy | None = None,
        reply_burst: int = REPLY_BURST,
    ) -> None:
        if global_rate is None:
            global_rate = PAID_BROADCAST_RATE if paid_broadcast else 30
        if global_rate <= 0 or per_chat_interval < 0 or group_rate_per_minute <= 0:
            raise ValueError("rates must be positive")
        if workers < 1 or max_retries < 0 or reply_burst < 1:
            raise ValueError("workers and reply_burst must be at least 1 and max_retries not negative")
        self._bot = bot
        self._limiter = _pace_limiter(global_rate)
        self._private_interval = per_chat_interval
        self._group_interval = 60.0 / group_rate_per_minute
        self._workers = workers
        self._max_retries = max_retries
        self._on_gone = on_gone
        self._on_sent = on_sent
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._request_timeout = request_timeout
        self._link_preview = None if link_preview else LinkPreviewOptions(is_disabled=True)
        # Above 30 a second Telegram answers 429 unless each send opts in to paid broadcasting.
        self.paid_broadcast = paid_broadcast
        self.global_rate = global_rate
        self._digest = digest
        self._unchained = itertools.count()

        # Per chat: its own heap of (priority, seq, job), so each chat keeps priority + FIFO order.
        self._queues: dict[int, list[tuple[int, int, _Job]]] = {}
        # Candidate chats: (priority, seq, chat) of the chat's head when it was ready. Entries go
        # stale (head changed, chat busy or waiting again) and are checked when they surface.
        self._ready: list[tuple[int, int, int]] = []
        self._sleeping: list[tuple[float, int]] = []  # (time the chat may send again, chat)
        self._next_allowed: dict[int, float] = {}
        self._bursts = _ChatBursts(reply_burst, per_chat_interval)  # private chats' quick sends left
        self._busy: set[int] = set()  # chats with a send in flight
        self._queued = 0
        self._active = 0  # sends taken from the queue and not finished yet
        self._paused_until = 0.0
        self._no_answer_streak = 0  # sends in a row Telegram gave no verdict on
        self._unreachable_since: float | None = None
        self._outage_pause = 0.0  # the pause between probes while unreachable
        self._seq = itertools.count()
        self._counters = _Counters()
        # For /metrics: the time from each alert's feed frame to Telegram's answer, and how long
        # Telegram takes to answer a send request, whatever the answer.
        self.frame_to_send = TimingHistogram(FRAME_TO_SEND_BUCKETS)
        self.answer_time = TimingHistogram(ANSWER_BUCKETS)

        self._wakeup = asyncio.Event()  # a chat may have become ready
        self._progress = asyncio.Event()  # a send finished (or the pacer ended); stop(drain=True) re-checks
        self._slots: asyncio.Semaphore | None = None
        self._window: asyncio.Semaphore | None = None  # sends that may still count in Telegram's second
        self._pacer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._pacer is not None:
            raise RuntimeError("sender already started")
        if not self._accepting:
            raise RuntimeError("a stopped sender cannot be restarted")
        self._slots = asyncio.Semaphore(self._workers)
        self._window = asyncio.Semaphore(max(1, math.floor(self.global_rate)))
        self._pacer = asyncio.create_task(self._pace(), name="alert-sender")
        self._pacer.add_done_callback(self._pacer_ended)

    async def stop(self, drain: bool = True, *, timeout: float | None = None) -> None:
        """Stop taking messages; with `drain`, first deliver what is queued (up to `timeout` s).

        Whatever is still queued afterwards is dropped (counted and logged); sends already in
        flight are allowed to finish. While Telegram is unreachable a drain lasts until it answers
        again, so give a `timeout` unless that is what you want.
        """
        self._accepting = False
        if drain and self._pacer is not None:
            try:
                await asyncio.wait_for(self._drained(), timeout)
            except TimeoutError:
                logger.warning("stop: %d message(s) still pending after %.1fs", self.pending(), timeout)
        if self._pacer is not None:
            self._pacer.cancel()
            await asyncio.gather(self._pacer, return_exceptions=True)
        while self._tasks:  # sends in flight, then the outcome callbacks they started
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._drop_queued()

    async def __aenter__(self) -> MessageSender:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Leaving normally delivers what was queued; leaving on an error does not wait for it.
        await self.stop(drain=exc_type is None)

    # ------------------------------------------------------------------ public API

    def submit(self, message: OutgoingMessage, *, on_done: OnDone | None = None) -> None:
        """Queue a message (Telegram HTML); returns at once. A lower lane goes sooner;
        `on_done` hears its `Outcome`."""
        job = self._new_job(message, None)
        job.on_done = on_done
        self._push(job)

    def withdraw(self, predicate: Callable[[OutgoingMessage], bool]) -> list[OutgoingMessage]:
        """Take back the queued messages (not those being sent) the predicate accepts, a digest
        waiting for a retry when it accepts all its alerts; returns them, the very objects that
        were submitted. Their `on_done` is never called: they are the caller's again."""
        taken: list[OutgoingMessage] = []
        for chat_id, queue in list(self._queues.items()):
            keep: list[tuple[int, int, _Job]] = []
            for entry in queue:
                job = entry[2]
                messages = [member.message for member in job.members] if job.members else [job.message]
                if job.permit is None and job.future is None and all(predicate(message) for message in messages):
                    taken.extend(messages)
                else:
                    keep.append(entry)
            if len(keep) == len(queue):
                continue
            self._queued -= len(queue) - len(keep)
            if keep:
                heapq.heapify(keep)
                self._queues[chat_id] = keep
                self._schedule(chat_id)  # its head may have changed
            else:
                del self._queues[chat_id]
        if taken:
            self._progress.set()
        return taken

    @asynccontextmanager
    async def turn(self, chat_id: int | None, priority: int = Lane.REPLY) -> AsyncIterator[Turn]:
        """Wait for this request's place in the pace, then make it inside the block.

        For requests the bot makes outside the queue (a handler's reply). With `chat_id` the
        chat's spacing applies as to queued messages (in the REPLY lane, after its burst);
        `None` takes only a place in the overall pace (edits and callback answers, which are no
        new message in a chat). Report a 429 with `Turn.rate_limited`.
        """
        if self._pacer is None or self._pacer.done():
            raise RuntimeError("turn needs a started sender")
        key = _UNCHAINED_BASE - next(self._unchained) if chat_id is None else int(chat_id)
        permit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        job = self._new_job(OutgoingMessage(key, "", priority, kind="turn"), None)
        job.permit = permit
        self._push(job)
        try:
            await permit
        except asyncio.CancelledError:
            if permit.done() and not permit.cancelled():
                self._end_turn(job, Turn())  # granted as we were cancelled: give it back
            else:
                permit.cancel()  # the pacer skips it when it comes up
            raise
        handle = Turn()
        try:
            yield handle
        finally:
            self._end_turn(job, handle)

    async def send_now(self, message: OutgoingMessage) -> Message:
        """Queue a message and wait for Telegram's answer (give it Lane.REPLY to go ahead of alerts).

        Raises `DeliveryError` when the recipient is gone or the send failed for good.
        """
        if self._pacer is None:
            raise RuntimeError("send_now needs a started sender")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._push(self._new_job(message, future))
        return await future

    @property
    def running(self) -> bool:
        return self._accepting and self._pacer is not None and not self._pacer.done()

    def pending(self) -> int:
        """Messages queued or being sent."""
        return self._queued + self._active

    @property
    def reachable(self) -> bool:
        """False from UNREACHABLE_AFTER sends in a row without a verdict until the next answer."""
        return self._unreachable_since is None

    def stalled(self) -> bool:
        """Whether more messages would only wait in memory: Telegram is unreachable and the ones
        held already will tell, by going through, when it answers again."""
        return self._unreachable_since is not None and self.pending() > 0

    def stats(self) -> dict[str, Any]:
        counters = self._counters
        latencies = sorted(counters.latencies)

        def percentile(share: float) -> float | None:
            if not latencies:
                return None
            return latencies[min(len(latencies) - 1, math.ceil(share * len(latencies)) - 1)]

        return {
            "sent": counters.sent,
            "alerts_sent": counters.alerts_sent,
            "retried": counters.retried,
            "rate_limited": counters.rate_limited,
            "failed": counters.failed,
            "gone": counters.gone,
            "dropped": counters.dropped,
            "turns": counters.turns,
            "digests": counters.digests,
            "digest_parts": counters.digest_parts,
            "digested": counters.digested,
            "photo_fallbacks": counters.photo_fallbacks,
            "pending": self.pending(),
            "in_flight": self._active,
            "paused_for": max(0.0, self._paused_until - time.monotonic()),
            "telegram_reachable": self.reachable,
            "unreachable_for": 0.0 if self._unreachable_since is None else time.monotonic() - self._unreachable_since,
            "outages": counters.outages,
            "latency_p50": percentile(0.50),
            "latency_p95": percentile(0.95),
            "latency_max": latencies[-1] if latencies else None,
        }

    # ------------------------------------------------------------------ queue

    def _new_job(self, message: OutgoingMessage, future: asyncio.Future[Message] | None) -> _Job:
        if not self._accepting:
            raise RuntimeError("the sender is stopped")
        return _Job(int(message.lane), next(self._seq), message, future)

    def _push(self, job: _Job) -> None:
        queue = self._queues.setdefault(job.chat_id, [])
        new_head = not queue or job.key < queue[0][:2]
        heapq.heappush(queue, (job.priority, job.seq, job))
        self._queued += 1
        if new_head:
            self._schedule(job.chat_id)

    def _schedule(self, chat_id: int) -> None:
        """Make an idle chat with queued messages a candidate now, or when its interval ends."""
        queue = self._queues.get(chat_id)
        if not queue or chat_id in self._busy:
            return
        allowed = self._allowed_at(chat_id, queue[0][2], time.monotonic())
        if allowed > time.monotonic():
            heapq.heappush(self._sleeping, (allowed, chat_id))
        else:
            priority, seq, _ = queue[0]
            heapq.heappush(self._ready, (priority, seq, chat_id))
        self._wakeup.set()

    def _wake_sleepers(self, now: float) -> None:
        while self._sleeping and self._sleeping[0][0] <= now:
            _, chat_id = heapq.heappop(self._sleeping)
            self._schedule(chat_id)

    def _has_ready(self, now: float) -> bool:
        """Whether the top candidate is valid, discarding stale ones on the way."""
        while self._ready:
            priority, seq, chat_id = self._ready[0]
            queue = self._queues.get(chat_id)
            if (
                queue
                and chat_id not in self._busy
                and queue[0][:2] == (priority, seq)
                and self._allowed_at(chat_id, queue[0][2], now) <= now
            ):
                return True
            heapq.heappop(self._ready)
        return False

    def _pop_ready(self) -> _Job | None:
        now = time.monotonic()
        self._wake_sleepers(now)
        if not self._has_ready(now):
            return None
        _, _, chat_id = heapq.heappop(self._ready)
        queue = self._queues[chat_id]
        _, _, job = heapq.heappop(queue)
        self._queued -= 1
        if job.digest_line is not None and self._digest is not None:
            job = self._maybe_digest(job, queue, now)
        if not queue:
            del self._queues[chat_id]
        self._active += 1
        self._busy.add(chat_id)
        return job

    def _maybe_digest(self, job: _Job, queue: list[tuple[int, int, _Job]], now: float) -> _Job:
        """`job`, or the first part of a digest of it and every other alert queued for its chat
        when they pile up; the digest's other parts go back to the head of the chat's queue."""
        assert self._digest is not None
        waiting = [entry for entry in queue if entry[2].digest_line is not None]
        late = now - job.enqueued_at > self._digest.max_delay
        if not waiting or (len(waiting) + 1 < self._digest.threshold and not late):
            return job
        members = [job] + [entry[2] for entry in sorted(waiting)]
        queue[:] = [entry for entry in queue if entry[2].digest_line is None]
        self._queued -= len(waiting)
        parts = list(self._digest.render(job.chat_id, [member.digest_line or "" for member in members]))
        # The parts keep the alerts' own places, in order: the first goes now, the rest next.
        seqs = [job.seq, *sorted(member.seq for member in members[1:])]
        jobs: list[_Job] = []
        start = 0
        for index, (html, count) in enumerate(parts):
            carried = members[start : start + max(count, 0)]
            start += len(carried)
            if not carried:
                continue
            digest = OutgoingMessage(job.chat_id, html, job.priority, kind="digest")
            jobs.append(_Job(job.priority, seqs[len(jobs)], digest, members=carried, part=f"{index + 1}/{len(parts)}"))
        # A renderer that left lines out must not lose their alerts: they go on their own.
        for member in members[start:]:
            member.digest_line, member.seq = None, seqs[len(jobs)]
            jobs.append(member)
        queue.extend((later.priority, later.seq, later) for later in jobs[1:])
        heapq.heapify(queue)
        self._queued += len(jobs) - 1
        self._counters.digests += 1
        self._counters.digest_parts += sum(1 for one in jobs if one.members)
        self._counters.digested += start
        return jobs[0]

    async def _wait_ready(self) -> None:
        while True:
            now = time.monotonic()
            self._wake_sleepers(now)
            if self._has_ready(now):
                return
            self._wakeup.clear()
            delay = self._sleeping[0][0] - now if self._sleeping else None
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except TimeoutError:
                pass

    async def _wait_unpaused(self) -> None:
        while (delay := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    async def _drained(self) -> None:
        while self.pending() and self._pacer is not None and not self._pacer.done():
            self._progress.clear()
            await self._progress.wait()

    def _pacer_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("the sender's pacer crashed; nothing more will be sent", exc_info=task.exception())
        self._progress.set()  # a drain waiting for it must not wait forever

    def _drop_queued(self) -> None:
        dropped = [job for queue in self._queues.values() for _, _, job in queue]
        self._queues.clear()
        self._ready.clear()
        self._sleeping.clear()
        self._queued = 0
        for job in dropped:
            if job.permit is not None:
                job.permit.cancel()
                continue
            self._counters.dropped += 1
            if job.future is not None and not job.future.done():
                job.future.set_exception(DeliveryError(job.chat_id, "the sender stopped"))
        if dropped:
            logger.warning("stop: dropped %d queued message(s)", len(dropped))

    # ------------------------------------------------------------------ sending

    async def _pace(self) -> None:
        assert self._slots is not None and self._window is not None
        while True:
            await self._slots.acquire()
            try:
                await self._window.acquire()
            except BaseException:
                self._slots.release()
                raise
            try:
                job = await self._next_job()
            except BaseException:
                self._slots.release()
                self._window.release()
                raise
            if job.permit is not None:
                if job.permit.done():  # its holder gave up waiting
                    self._end_turn(job, Turn(), used=False)
                else:
                    job.permit.set_result(None)  # the holder sends; _end_turn frees the slot
                continue
            task = asyncio.create_task(self._deliver(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _end_turn(self, job: _Job, handle: Turn, used: bool = True) -> None:
        assert self._slots is not None and self._window is not None
        now = time.monotonic()
        if used:
            self._counters.turns += 1
            if job.chat_id > _UNCHAINED_BASE:
                self._spaced(job.chat_id, now)
        if handle.retry_after is not None:
            self._counters.rate_limited += 1
            self._paused_until = max(self._paused_until, now + handle.retry_after)
            logger.warning("429 from Telegram on a direct request: all sending paused for %ss", handle.retry_after)
        self._active -= 1
        self._busy.discard(job.chat_id)
        self._schedule(job.chat_id)
        if used:
            self._free_window_later()
        else:
            self._window.release()  # nothing was sent
        self._slots.release()
        self._progress.set()

    def _free_window_later(self) -> None:
        # Telegram accepted the request before its answer reached us, so a second from now it
        # no longer counts in any window the next sends fall into.
        assert self._window is not None
        asyncio.get_running_loop().call_later(RATE_WINDOW, self._window.release)

    async def _next_job(self) -> _Job:
        while True:
            await self._wait_unpaused()
            if self._probing():
                await self._wait_progress()
                continue
            await self._wait_ready()
            # The pace comes after a message is ready, so time spent idle is not saved up
            # into a burst (see _pace_limiter); the job is picked after it, so a message submitted meanwhile with a
            # better priority still goes first.
            await self._limiter.acquire()
            if self._paused_until > time.monotonic() or self._probing():
                continue  # a flood wait or an outage began while we waited
            job = self._pop_ready()
            if job is not None:
                return job

    def _probing(self) -> bool:
        """While Telegram is unreachable one send at a time tells whether it is back."""
        return self._unreachable_since is not None and self._active > 0

    async def _wait_progress(self) -> None:
        self._progress.clear()
        await self._progress.wait()

    def _interval(self, chat_id: int) -> float:
        # Positive ids are users; groups, supergroups and channels are negative.
        return self._private_interval if chat_id > 0 else self._group_interval

    def _spaced(self, chat_id: int, now: float) -> None:
        """A send to `chat_id` just completed: the chat's spacing starts now, and it used one
        send of its burst."""
        self._next_allowed[chat_id] = now + self._interval(chat_id)
        if chat_id > 0:
            self._bursts.spend(chat_id, now)

    def _allowed_at(self, chat_id: int, job: _Job, now: float) -> float:
        """When `job`, the head of its chat's queue, may go: alerts when the chat's spacing ends;
        a reply to a user's own action sooner, while the private chat has burst left."""
        allowed = self._next_allowed.get(chat_id, 0.0)
        if allowed > now and job.priority == Lane.REPLY and chat_id > 0 and not job.failures:
            return min(allowed, self._bursts.ready_at(chat_id, now))
        return allowed

    async def _send(self, job: _Job) -> Message:
        """The request itself: a photo with caption when the job has one that fits, else text."""
        paid = True if self.paid_broadcast else None  # None: the field is left out of the request
        timeout = math.ceil(self._request_timeout)
        reply_to = job.message.reply_to_message_id
        # A reply whose message was deleted goes as a plain message rather than not at all.
        reply = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None
        photo: str | InputFile | None = job.photo_url
        if photo is None and job.photo_bytes:
            photo = BufferedInputFile(job.photo_bytes, filename="chart.png")
        if photo is not None and caption_fits(job.html):
            try:
                return await self._bot.send_photo(
                    chat_id=job.chat_id,
                    photo=photo,
                    caption=job.html,
                    parse_mode=ParseMode.HTML,
                    reply_markup=job.reply_markup,
                    reply_parameters=reply,
                    allow_paid_broadcast=paid,
                    request_timeout=timeout,
                )
            except TelegramBadRequest as exc:
                if not (_is_media_error(exc.message) or _is_caption_error(exc.message)):
                    raise
                # The image is unusable, or Telegram counts the caption longer than we did: the
                # alert matters, not the picture, and a text message takes four times as much.
                self._counters.photo_fallbacks += 1
                logger.info("photo for chat %s refused (%s); sending text", job.chat_id, exc.message)
                job.photo_url = job.photo_bytes = None
        return await self._bot.send_message(
            chat_id=job.chat_id,
            text=job.html,
            parse_mode=ParseMode.HTML,
            reply_markup=job.reply_markup,
            reply_parameters=reply,
            link_preview_options=self._link_preview,
            allow_paid_broadcast=paid,
            request_timeout=timeout,
        )

    async def _deliver(self, job: _Job) -> None:
        assert self._slots is not None
        chat_id = job.chat_id
        message: Message | None = None
        gone: tuple[str, list[_Job]] | None = None  # (reason, messages that will never go)
        migrated: str | None = None
        try:
            token = _SENDING.set(True)
            asked = time.perf_counter()
            try:
                message = await self._send(job)
            finally:
                self.answer_time.observe(time.perf_counter() - asked)
                _SENDING.reset(token)
        except TelegramRetryAfter as exc:
            self._answered()
            self._counters.rate_limited += 1
            self._paused_until = max(self._paused_until, time.monotonic() + exc.retry_after)
            logger.warning("429 from Telegram: all sending paused for %ss", exc.retry_after)
            self._retry(job)
        except TelegramMigrateToChat as exc:
            self._answered()
            # The group became a supergroup: its messages go to the new id, in their order.
            migrated = f"migrated to {exc.migrate_to_chat_id}"
            self._move_chat(chat_id, exc.migrate_to_chat_id, job)
        except TelegramForbiddenError as exc:
            self._answered()
            gone = (exc.message, self._take_chat(chat_id, job))
        except TelegramBadRequest as exc:
            self._answered()
            if "chat not found" in exc.message.lower():
                gone = (exc.message, self._take_chat(chat_id, job))
            else:  # bad markup, text too long...: the same request would fail again
                self._fail(job, exc.message)
        except TelegramEntityTooLarge as exc:  # a TelegramNetworkError, but not a transient one
            self._answered()
            self._fail(job, exc.message)
        except _TRANSIENT_ERRORS as exc:
            self._no_verdict(job, f"{type(exc).__name__}: {exc}")
        except ClientDecodeError as exc:
            if isinstance(exc.data, str):  # not JSON: a proxy's error page, not Telegram's answer
                self._no_verdict(job, f"undecodable answer: {exc.data[:_META_VALUE_MAX]!r}")
            else:  # Telegram's JSON, in a shape we cannot read: it may have sent the message
                self._fail(job, f"{type(exc).__name__}: {exc.message}")
        except TelegramAPIError as exc:  # 409 and codes Telegram does not document
            self._answered()
            self._fail(job, f"{type(exc).__name__}: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - a surprise must not kill the sender
            logger.exception("unexpected error sending to chat %s", chat_id)
            self._fail(job, f"{type(exc).__name__}: {exc}")
        else:
            self._answered()
            self._spaced(chat_id, time.monotonic())
        finally:
            self._active -= 1
            self._busy.discard(chat_id)
            self._schedule(chat_id)
            self._prune_next_allowed()
            self._free_window_later()
            self._slots.release()
            self._progress.set()

        # Callbacks run after the bookkeeping, so a slow one never holds a chat or a worker slot.
        if message is not None:
            await self._succeeded(job, message)
        elif gone is not None:
            await self._report_gone(chat_id, *gone)
        elif migrated is not None and self._on_gone is not None:
            await _call(self._on_gone, chat_id, migrated)

    def _retry(self, job: _Job) -> None:
        self._counters.retried += 1
        self._push(job)

    def _answered(self) -> None:
        """Telegram gave a verdict (any answer of its own): it is reachable."""
        self._no_answer_streak = 0
        if self._unreachable_since is not None:
            logger.warning(
                "Telegram reachable again after %.1fs; sending resumes", time.monotonic() - self._unreachable_since
            )
            self._unreachable_since = None

    def _no_verdict(self, job: _Job, reason: str) -> None:
        """A send Telegram said nothing about: kept and tried again, unless someone waits on it
        (`send_now`) and it ran out of retries."""
        now = time.monotonic()
        job.failures += 1
        self._no_answer_streak += 1
        if self._unreachable_since is None and self._no_answer_streak >= UNREACHABLE_AFTER:
            self._unreachable_since = now
            self._counters.outages += 1
            self._outage_pause = self._backoff_base
            self._paused_until = max(self._paused_until, now + self._outage_pause)
            logger.warning("Telegram unreachable (%s); queued messages are kept and retried, one at a time", reason)
        elif self._unreachable_since is not None and now >= self._paused_until:
            # A probe failed (not a send that was already in flight when the outage began).
            self._outage_pause = min(self._outage_pause * 2, self._backoff_max)
            self._paused_until = now + self._outage_pause
        if job.future is not None and job.failures > self._max_retries:
            self._fail(job, f"{reason} (after {self._max_retries} retries)")
            return
        if self._unreachable_since is None:
            # Only this chat waits out the backoff; the others keep going.
            backoff = min(self._backoff_base * 2 ** (job.failures - 1), self._backoff_max)
            self._next_allowed[job.chat_id] = now + backoff
            logger.info("send to chat %s failed (%s); retry %d in %.2fs", job.chat_id, reason, job.failures, backoff)
        self._retry(job)

    def _fail(self, job: _Job, reason: str) -> None:
        self._counters.failed += 1
        logger.error("send to chat %s failed for good: %s %s", job.chat_id, reason, job.log_fields())
        if job.future is not None and not job.future.done():
            job.future.set_exception(DeliveryError(job.chat_id, reason))
        self._settle(job, Outcome(job.chat_id, "failed", reason=reason))

    def _settle(self, job: _Job, outcome: Outcome) -> None:
        """Tell whoever queued `job` (each alert of a digest) what became of it."""
        for one in job.members or [job]:
            if one.on_done is not None:
                task = asyncio.get_running_loop().create_task(
                    _call(one.on_done, replace(outcome, digest=bool(job.members)))
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _take_chat(self, chat_id: int, job: _Job) -> list[_Job]:
        """`job` and everything still queued for its chat, removed from the queue."""
        queued = [other for _, _, other in self._queues.pop(chat_id, [])]
        self._queued -= len(queued)
        return [job, *queued]

    def _move_chat(self, old_chat_id: int, new_chat_id: int, job: _Job) -> None:
        for moved in self._take_chat(old_chat_id, job):
            moved.chat_id = new_chat_id
            self._retry(moved)

    async def _succeeded(self, job: _Job, message: Message) -> None:
        self._counters.sent += 1
        self._counters.alerts_sent += sum(1 for one in job.members or [job] if one.message.kind == "alert")
        latency: float | None = None
        received_at = job.message.received_at
        if received_at:
            latency = max(0.0, time.time() - received_at)
            self._counters.latencies.append(latency)
            self.frame_to_send.observe(latency)
        sent_logger.info(
            "chat=%s message_id=%s%s %s",
            job.chat_id,
            message.message_id,
            f" latency_ms={latency * 1000:.0f}" if latency is not None else "",
            job.log_fields(),
        )
        if job.future is not None and not job.future.done():
            job.future.set_result(message)
        self._settle(job, Outcome(job.chat_id, "sent", message.message_id))
        if self._on_sent is not None:
            await _call(self._on_sent, job.chat_id, message, job.message)

    async def _report_gone(self, chat_id: int, reason: str, casualties: list[_Job]) -> None:
        # The rest of the chat's queue was dropped too: it would only fail the same way.
        self._counters.gone += len(casualties)
        logger.info("chat %s is gone (%s); %d message(s) not sent", chat_id, reason, len(casualties))
        for casualty in casualties:
            if casualty.future is not None and not casualty.future.done():
                casualty.future.set_exception(DeliveryError(chat_id, reason, gone=True))
            self._settle(casualty, Outcome(chat_id, "gone", reason=reason))
        if self._on_gone is not None:
            await _call(self._on_gone, chat_id, reason)

    def _prune_next_allowed(self) -> None:
        # One entry per chat ever messaged would grow forever; past times mean nothing.
        if len(self._next_allowed) > 10_000:
            now = time.monotonic()
            self._next_allowed = {c: t for c, t in self._next_allowed.items() if t > now}
            self._bursts.prune(now)


def _pace_limiter(rate: float) -> AsyncLimiter:
    """A leaky bucket of `rate` a second that holds PACE_CATCH_UP's worth of sends (at least one).

    Why not a bucket of one: a waiting task wakes late, by up to ~1 ms from epoll's millisecond
    timeouts and by however long the loop was busy handling answers. Spacing each send from the
    previous one lost that lateness every time: at 1,000/s, whose interval is 1 ms, it paced at
    500-650/s. A bucket of 10 ms lets a late turn be made up by the next ones. At 30/s it holds
    one send, so after an idle spell nothing bursts; Telegram's per-second count is guarded
    separately by the sender's window permits.
    """
    capacity = max(1, math.floor(rate * PACE_CATCH_UP))
    return AsyncLimiter(capacity, capacity / rate)


class _ChatBursts:
    """Per private chat, the quick sends it has left: a bucket of `size` refilled one per
    `interval` seconds. Every send to the chat takes one; only replies wait on it (alerts wait
    for the full spacing, which refills at least the one they take). Plain bookkeeping on the
    times it is given, so it is exact whatever the loop's lateness."""

    def __init__(self, size: int, interval: float) -> None:
        self.size = size
        self.interval = interval
        self._state: dict[int, tuple[float, float]] = {}  # chat -> (sends left, as of when)

    def level(self, chat_id: int, now: float) -> float:
        entry = self._state.get(chat_id)
        if entry is None or self.interval <= 0:
            return float(self.size)
        left, since = entry
        return min(float(self.size), left + (now - since) / self.interval)

    def ready_at(self, chat_id: int, now: float) -> float:
        """When the chat has one whole send left (`now` if it has)."""
        level = self.level(chat_id, now)
        return now if level >= 1 - 1e-9 else now + (1 - level) * self.interval

    def spend(self, chat_id: int, now: float) -> None:
        if self.interval > 0:
            self._state[chat_id] = (self.level(chat_id, now) - 1, now)

    def prune(self, now: float) -> None:
        """Forget chats whose bucket is full again: they are like chats never sent to."""
        self._state = {chat: entry for chat, entry in self._state.items() if self.level(chat, now) < self.size}


class Turn:
    """A direct request's place in the pace; tell it when Telegram answered 429."""

    __slots__ = ("retry_after",)

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def rate_limited(self, retry_after: float) -> None:
        self.retry_after = retry_after


# Set while the sender itself makes a request, so the session middleware lets it through.
_SENDING: ContextVar[bool] = ContextVar("alertbot_sender_sending", default=False)


def sending_from_queue() -> bool:
    """Whether the current request is one the sender is making from its queue."""
    return _SENDING.get()


_MEDIA_ERRORS = (
    "wrong file identifier",
    "failed to get http url content",
    "wrong type of the web page content",
    "photo_invalid_dimensions",
    "image_process_failed",
    "wrong remote file",
    "file must be non-empty",
    "can't parse url",
    "wrong http url",
    "not enough rights to send photos",
)


def _is_media_error(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _MEDIA_ERRORS)


_CAPTION_ERRORS = ("caption is too long", "media_caption_too_long")


def _is_caption_error(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _CAPTION_ERRORS)


def caption_fits(html: str) -> bool:
    """Whether `html` fits a photo's caption. Telegram counts a caption in UTF-16 code units
    (an emoji beyond U+FFFF takes two), after the tags are parsed."""
    return _utf16_len(_visible_text(html)) <= CAPTION_LIMIT


def _utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _visible_text(html: str) -> str:
    """What Telegram counts toward a caption's length: the text without tags, entities decoded."""
    return html_module.unescape(re.sub(r"<[^>]+>", "", html))


async def _call(callback: Callable[..., Any], *args: Any) -> None:
    """Run a user callback, sync or async; its errors are logged, never raised into the sender."""
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:  # noqa: BLE001
        logger.exception("sender callback %r failed", callback)
