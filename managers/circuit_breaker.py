"""A small circuit breaker: stop hammering a dependency that is down, probe it now and then.

Pure state machine, no I/O and no asyncio: the caller asks `allow()` before a call and reports the
outcome with `record_success()` / `record_failure()`. The clock is injectable so tests can drive the
cool-downs without sleeping.

    closed    -- calls go through; `failure_threshold` consecutive failures open the circuit.
    open      -- calls are refused until the cool-down has passed; then exactly one call (the probe)
                 is let through and the circuit becomes half-open.
    half_open -- the probe is in flight; every other call is refused. Success closes the circuit,
                 failure re-opens it with a doubled cool-down (capped at `max_cooldown`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown: float = 5.0,
        max_cooldown: float = 60.0,
        backoff_factor: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown < 0 or max_cooldown < cooldown:
            raise ValueError("need 0 <= cooldown <= max_cooldown")
        self.failure_threshold = failure_threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.backoff_factor = backoff_factor
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        self._cooldown = cooldown
        self._opened_at = 0.0
        # Counters for metrics; never reset.
        self.opens = 0  # transitions closed -> open (an outage starting)
        self.failed_probes = 0  # half-open probes that failed (the outage going on)
        self.probes = 0  # half-open probes let through
        self.successes = 0
        self.failures = 0

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def current_cooldown(self) -> float:
        """The cool-down the open circuit waits before its next probe."""
        return self._cooldown

    def retry_in(self) -> float:
        """Seconds until `allow()` will let a probe through (0 when closed or already due)."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def allow(self) -> bool:
        """May a call go to the dependency now? In the open state, True at most once per cool-down."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN and self.retry_in() <= 0:
            # The caller that gets this True is the probe; everyone else waits for its verdict.
            self._state = CircuitState.HALF_OPEN
            self.probes += 1
            return True
        return False

    def record_success(self) -> None:
        self.successes += 1
        if self._state is CircuitState.OPEN:
            # A call that started before the circuit opened; only a probe may close it.
            return
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        self._cooldown = self.base_cooldown

    def record_failure(self) -> None:
        self.failures += 1
        if self._state is CircuitState.OPEN:
            # Late failures of calls already in flight must not push the next probe further away.
            return
        if self._state is CircuitState.HALF_OPEN:
            self.failed_probes += 1
            self._cooldown = min(self._cooldown * self.backoff_factor, self.max_cooldown)
            self._open()
            return
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.failure_threshold:
            self.opens += 1
            self._open()

    def trip(self) -> None:
        """Open the circuit now, e.g. when the dependency is already known to be down at start."""
        if self._state is CircuitState.CLOSED:
            self.opens += 1
        self._open()

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self._state.value,
            "consecutive_failures": self._consecutive_failures,
            "cooldown": self._cooldown,
            "retry_in": round(self.retry_in(), 3),
            "opens": self.opens,
            "probes": self.probes,
            "failed_probes": self.failed_probes,
        }
