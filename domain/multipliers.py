"""Multiplier follow-ups: which threshold to announce after an alert, and when following a token ends.

Pure rules, no I/O. Each subscriber's follow-ups are measured against the market cap at their
own alert (the base). Only the highest threshold a price reaches is announced, never one at or
below the last announced, and never one below the subscriber's `followup_min` (0: none). The
rules come twice: one entry at a time (`to_announce`), and for a token's whole array of entries
at once (`levels`, `trigger`), which the tracker's hot path uses.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import numpy as np
import numpy.typing as npt

THRESHOLDS: tuple[int, ...] = (2, 3, 5, 10, 20, 50, 100)
# What a subscriber may choose as followup_min: every threshold, from 5x, from 10x, none.
FOLLOWUP_CHOICES: tuple[int, ...] = (2, 5, 10, 0)

_THRESHOLD_ARRAY = np.array(THRESHOLDS, dtype=np.float64)
# The multiple an entry at each level (0 = nothing reached yet) must reach for the next one.
_NEXT_MULTIPLE = np.array([*THRESHOLDS, math.inf], dtype=np.float64)

FloatArray = npt.NDArray[np.float64]
LevelArray = npt.NDArray[np.int8]


def level(multiple: float) -> int:
    """How many thresholds `multiple` reaches: 0 below 2x, 1 for 2x..3x, ... 7 from 100x."""
    return bisect_right(THRESHOLDS, multiple) if math.isfinite(multiple) else 0


def level_of(threshold: int) -> int:
    """The level a threshold stands for (0 for 0: nothing announced yet)."""
    return THRESHOLDS.index(threshold) + 1 if threshold else 0


def threshold_at(level_: int) -> int:
    """The threshold a level stands for (0 for level 0)."""
    return THRESHOLDS[level_ - 1] if level_ else 0


def wanted(threshold: int, followup_min: int) -> bool:
    """Whether a subscriber with `followup_min` hears about `threshold` (0: no follow-ups)."""
    return followup_min != 0 and threshold >= followup_min


def to_announce(last: int, market_cap: float, base: float, followup_min: int) -> int | None:
    """The threshold to announce when the market cap is `market_cap`, for a subscriber alerted at
    `base` whose last announced threshold is `last` (0: none yet); None: nothing to say.

    A jump past several thresholds announces only the highest; going down and up again never
    repeats one (2x, 5x, back to 1.5x, then 5.5x: only 2x and 5x ever)."""
    if not (base > 0 and math.isfinite(base)) or not math.isfinite(market_cap):
        return None
    reached = level(market_cap / base)
    if reached <= level_of(last):
        return None
    threshold = threshold_at(reached)
    return threshold if wanted(threshold, followup_min) else None


def levels(market_cap: float, bases: FloatArray) -> npt.NDArray[np.intp]:
    """`level` of every entry of a token at once: `market_cap` against each entry's base."""
    with np.errstate(divide="ignore", invalid="ignore"):
        multiples = market_cap / bases
    return np.searchsorted(_THRESHOLD_ARRAY, multiples, side="right")


def trigger(bases: FloatArray, floors: LevelArray) -> float:
    """The lowest market cap at which any entry reaches a level above its floor (inf: none can).

    Below it a price changes nothing for the token's entries, so the hot path compares one
    number and skips the arrays."""
    if len(bases) == 0:
        return math.inf
    return float(np.min(bases * _NEXT_MULTIPLE[floors]))


# ---------------------------------------------------------------------------------- the end


class End(StrEnum):
    """Why a token stopped being followed."""

    WINDOW = "window"  # every alert of it is older than the tracking window
    DEAD = "dead"  # its market cap stayed far below its peak
    SILENT = "silent"  # no price came for too long


@dataclass(frozen=True)
class TrackingRules:
    """How long a token is followed: `window` after each alert, and not at all once it is dead,
    that is when its market cap has stayed below `dead_share` of its peak (the highest since the
    first alert, the alert's own market cap included) for `dead_after`, or no price has come for
    `silent_after`."""

    window: timedelta = timedelta(days=7)
    dead_share: float = 0.1
    dead_after: timedelta = timedelta(hours=1)
    silent_after: timedelta = timedelta(hours=24)


def below_since(
    previous: datetime | None, market_cap: float, peak: float, at: datetime, share: float
) -> datetime | None:
    """Since when the market cap has been below `share` of the peak (None: it is not now)."""
    if market_cap < peak * share:
        return previous if previous is not None else at
    return None


def tracking_end(
    now: datetime,
    *,
    last_alert_at: datetime,
    last_price_at: datetime | None,
    started_at: datetime,
    low_since: datetime | None,
    rules: TrackingRules,
) -> End | None:
    """Why following the token ends at `now`, or None while it goes on."""
    if now >= last_alert_at + rules.window:
        return End.WINDOW
    if low_since is not None and now - low_since >= rules.dead_after:
        return End.DEAD
    if now - (last_price_at or started_at) >= rules.silent_after:
        return End.SILENT
    return None


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A threshold one subscriber is told about: it replies to their alert (`reply_to`, the
    alert's message id when known)."""

    chat_id: int
    token: str
    symbol: str | None
    multiple: int
    base_market_cap: float
    market_cap: float
    price_usd: float | None
    peak_market_cap: float
    reply_to: int | None
    reached_at: datetime
