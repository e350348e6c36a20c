"""Telegram's send limits, the clocks they run on, and the error answers a test forces.

`RateLimits` holds the limits per bot (30 messages/s, 1/s per private chat after a short burst,
20/min per group); the server counts each bot's sends in sliding windows and bursts on its clock
(`time.monotonic`, or a `ManualClock` that moves only when told to) and answers 429 with
``retry_after`` exactly like Telegram. `force_retry_after`, `force_error` and
`force_gateway_error` make it answer errors on demand.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from standins.telegram.state import ServerState, _BotState
from standins.telegram.wire import JsonDict, _ApiError


class ManualClock:
    """A clock for the rate limiter that only moves when told to.

    Tests pass it as ``FakeTelegramServer(clock=clock)`` so that "N sends within one second" is
    true by construction instead of depending on how fast the machine is.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now: float = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RateLimits:
    """Send limits per bot. ``None`` switches one limit off; ``enabled=False`` all of them.

    Defaults are the ones documented in Telegram's bots FAQ. Counted methods: sendMessage,
    sendPhoto, sendInvoice (overall + per chat) and editMessageText/editMessageReplyMarkup
    (overall only: edits have no documented per-chat limit).
    """

    enabled: bool = True
    global_per_second: int | None = 30
    #: Overall limit for sends carrying ``allow_paid_broadcast=true``.
    paid_per_second: int | None = 1000
    private_chat_per_second: int | None = 1
    #: Quick messages a private chat takes before its per-second limit applies (Telegram lets a
    #: short burst through): a bucket of this many, refilled at private_chat_per_second. 1 is a
    #: strict sliding window.
    private_chat_burst: int = 3
    group_per_minute: int | None = 20
    global_window: float = 1.0
    private_window: float = 1.0
    group_window: float = 60.0

    @classmethod
    def unlimited(cls) -> RateLimits:
        return cls(enabled=False)


@dataclass
class _ForcedErrors:
    status: int
    description: str
    parameters: JsonDict | None
    until: float | None
    remaining: int | None
    methods: frozenset[str] | None  # lower-case method names; None = every method


class FloodControl(ServerState):
    """Rate limits and forced errors: one part of `FakeTelegramServer`.

    The attributes are set in ``FakeTelegramServer.__init__``.
    """

    limits: RateLimits
    clock: Callable[[], float]
    _forced: list[_ForcedErrors]
    _gateway_errors: list[_ForcedErrors]

    def reset_limits(self) -> None:
        """Forget all rate-limit windows and forced errors (e.g. between benchmark phases)."""
        for state in self._all_states():
            state.global_window.clear()
            state.chat_windows.clear()
            state.chat_full_at.clear()
        self._forced.clear()

    def force_retry_after(
        self,
        retry_after: int,
        *,
        duration: float | None = None,
        count: int | None = None,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Burst mode: answer 429 "retry after `retry_after`" to every request for a while.

        Lasts `duration` seconds of the server clock (default: `retry_after`), or for the next
        `count` matching requests if `count` is given. `methods` limits it to those methods
        (default: all, getUpdates included). Forced 429s are counted in ``stats.rejected_429``.
        """
        retry_after = max(int(retry_after), 1)
        self.force_error(
            429,
            f"Too Many Requests: retry after {retry_after}",
            parameters={"retry_after": retry_after},
            duration=duration if duration is not None or count is not None else float(retry_after),
            count=count,
            methods=methods,
        )

    def force_error(
        self,
        error_code: int,
        description: str,
        *,
        parameters: JsonDict | None = None,
        duration: float | None = None,
        count: int | None = 1,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Answer any error (e.g. 500, 502) to matching requests; by default to the next one."""
        self._forced.append(
            _ForcedErrors(
                status=error_code,
                description=description,
                parameters=parameters,
                until=self.clock() + duration if duration is not None else None,
                remaining=count,
                methods=frozenset(m.lower() for m in methods) if methods is not None else None,
            )
        )

    def force_gateway_error(self, status: int = 502, *, duration: float | None = None, count: int | None = 1) -> None:
        """Answer as a load balancer in front of a Telegram that is down: `status` with an HTML
        page instead of Telegram's JSON, to every request, for `duration` s or `count` requests."""
        self._gateway_errors.append(
            _ForcedErrors(
                status=status,
                description="gateway page",
                parameters=None,
                until=self.clock() + duration if duration is not None else None,
                remaining=count,
                methods=None,
            )
        )

    def clear_forced_errors(self) -> None:
        self._forced.clear()
        self._gateway_errors.clear()

    def _apply_forced_errors(self, canonical: str) -> None:
        now = self.clock()
        self._forced = [
            f for f in self._forced if (f.until is None or now < f.until) and (f.remaining is None or f.remaining > 0)
        ]
        for forced in self._forced:
            if forced.methods is not None and canonical.lower() not in forced.methods:
                continue
            if forced.remaining is not None:
                forced.remaining -= 1
            raise _ApiError(forced.status, forced.description, dict(forced.parameters) if forced.parameters else None)

    def _check_limits(self, state: _BotState, chat_id: int, *, paid: bool, per_chat: bool) -> None:
        """Raise 429 when this send would exceed a window; nothing is recorded here."""
        limits = self.limits
        if not limits.enabled:
            return
        now = self.clock()
        waits: list[float] = []
        overall = limits.paid_per_second if paid else limits.global_per_second
        if overall is not None:
            wait = self._window_wait(state.global_window, now, limits.global_window, overall)
            if wait is not None:
                waits.append(wait)
        if per_chat:
            if chat_id > 0:
                limit, window = limits.private_chat_per_second, limits.private_window
            else:
                limit, window = limits.group_per_minute, limits.group_window
            chat_window = state.chat_windows.get(chat_id)
            if limit is not None and chat_id > 0 and limits.private_chat_burst > 1:
                wait = self._burst_wait(state.chat_full_at.get(chat_id), now, window / limit, limits.private_chat_burst)
                if wait is not None:
                    waits.append(wait)
            elif limit is not None and chat_window is not None:
                wait = self._window_wait(chat_window, now, window, limit)
                if wait is not None:
                    waits.append(wait)
        if waits:
            retry_after = max(1, math.ceil(max(waits) - 1e-9))
            raise _ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    @staticmethod
    def _window_wait(window: deque[float], now: float, length: float, limit: int) -> float | None:
        """Seconds until a sliding window of `length` has room for one more, None if it has now."""
        while window and window[0] <= now - length:
            window.popleft()
        if limit <= 0:
            return length  # a limit of 0 allows nothing
        if len(window) < limit:
            return None
        # The send that frees the slot is the (len - limit + 1)-th oldest in the window.
        return window[len(window) - limit] + length - now

    @staticmethod
    def _burst_wait(full_at: float | None, now: float, interval: float, burst: int) -> float | None:
        """Seconds until a bucket of `burst` sends, refilled one per `interval`, has one, None if
        it has now; `full_at` is when it is full again if nothing more is sent (GCRA)."""
        if full_at is None:
            return None
        wait = full_at - (burst - 1) * interval - now
        return wait if wait > 1e-9 else None

    def _record_limits(self, state: _BotState, chat_id: int, *, per_chat: bool) -> None:
        if not self.limits.enabled:
            return
        now = self.clock()
        state.global_window.append(now)
        if per_chat:
            state.chat_windows.setdefault(chat_id, deque()).append(now)
            limit = self.limits.private_chat_per_second
            if chat_id > 0 and limit:
                interval = self.limits.private_window / limit
                state.chat_full_at[chat_id] = max(state.chat_full_at.get(chat_id, now), now) + interval
            if len(state.chat_windows) > 50_000:
                # Drop idle chats so long benchmarks don't accumulate a window per recipient.
                horizon = now - max(self.limits.private_window, self.limits.group_window)
                state.chat_windows = {c: w for c, w in state.chat_windows.items() if w and w[-1] > horizon}
                state.chat_full_at = {c: t for c, t in state.chat_full_at.items() if t > now}
