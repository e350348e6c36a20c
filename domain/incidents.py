"""When the admins are told something is wrong, and when that it is over: one rule, in plain functions.

Each watched condition (Redis unhealthy, a feed down, the queue nearly full, ...) has a `Watch`.
Every check feeds it what was seen; `observe` says whether an incident opens now (the condition
has held for `open_after` seconds) or is over (it has been clear for `close_after` seconds).
An incident opens once and recovers once: a condition that stays bad or stays fine says nothing
more, so the admins get one message per incident and one when it ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum


class Phase(StrEnum):
    OPENED = "opened"
    RECOVERED = "recovered"


class IncidentKind(StrEnum):
    REDIS = "redis"
    STREAM = "stream"
    QUEUE = "queue"
    MEMORY = "memory"
    RATE_LIMITED = "rate_limited"
    FAILURES = "failures"


@dataclass(frozen=True)
class Watch:
    """One condition's state: since when it has been bad (or clear again), and whether the
    incident it makes is open."""

    bad_since: float | None = None
    clear_since: float | None = None
    open: bool = False
    began: float | None = None  # when the condition of the open incident set in


def observe(
    watch: Watch, now: float, *, bad: bool, clear: bool | None = None, open_after: float = 0.0, close_after: float = 0.0
) -> tuple[Watch, Phase | None]:
    """The watch after one check, and the phase to announce (None: nothing to say).

    `bad`: the condition holds now. `clear`: it is over now (default: not bad); a separate
    `clear` leaves room in between, where an open incident stays open and a closed one closed
    (hysteresis, so a condition hovering at its threshold does not flap).
    """
    if clear is None:
        clear = not bad
    if bad:
        since = watch.bad_since if watch.bad_since is not None else now
        watch = replace(watch, bad_since=since, clear_since=None)
        if not watch.open and now - since >= open_after:
            return replace(watch, open=True, began=since), Phase.OPENED
        return watch, None
    if not clear:
        return replace(watch, clear_since=None), None
    if not watch.open:
        return Watch(), None
    since = watch.clear_since if watch.clear_since is not None else now
    if now - since >= close_after:
        return Watch(), Phase.RECOVERED
    return replace(watch, bad_since=None, clear_since=since), None


def over_share(value: float, limit: float | None, percent: float) -> bool:
    """Whether `value` has passed `percent` of `limit` (never, without a limit)."""
    return limit is not None and limit > 0 and value >= limit * percent / 100


def increase(samples: Sequence[tuple[float, float]], now: float, window: float) -> float:
    """How much a counter rose over the last `window` seconds, from (time, value) samples in
    time order: the newest value less the one at the window's start (the oldest sample, when
    the window reaches back before it). A counter never falls; a lower value means it started
    again from 0 and counts from there."""
    if not samples:
        return 0.0
    start = now - window
    base = samples[0][1]
    for at, value in samples:
        if at > start:
            break
        base = value
    latest = samples[-1][1]
    return latest - base if latest >= base else latest


def trim(samples: list[tuple[float, float]], now: float, window: float) -> None:
    """Drop the samples `increase` no longer needs (all but the last one before the window)."""
    start = now - window
    while len(samples) > 1 and samples[1][0] <= start:
        del samples[0]


def previous_run(
    started: float | None, heartbeat: float | None, stopped: float | None, *, known: bool = True
) -> tuple[str, str]:
    """How an instance's previous run ended, from the times (epoch seconds) its record keeps:
    ("first", "") when it never ran, ("clean", when it stopped), ("unclean", its last heartbeat)
    when it vanished without stopping, ("unknown", "") when the record could not be read."""
    if not known:
        return "unknown", ""
    if started is None:
        return "first", ""
    if stopped is not None and stopped >= (heartbeat or started):
        return "clean", _utc(stopped)
    return "unclean", _utc(heartbeat or started)


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
