"""A channel's statistics from its own calls, as the bot measures them: the rules, pure.

Each call is measured against its own base (the call's price, or its market cap when it gave
no price: the multiple is the same) and the highest value of the same seen in the WINDOW after
it, so far. Its peak multiple is that highest value over the base, at least 1 (the call's own
value counts as seen).

* A call is a **win** once its peak reaches WIN_MULTIPLE (2x) within the window; that resolves
  it at once. Its peak may still grow until the window is over.
* A call is a **loss** when its window is over and it never reached 2x.
* A call still in its window below 2x is **unresolved**, counted apart.
* A call whose window is over without a single price seen after it is **unpriced**: the bot
  cannot tell how it did, so it counts in neither the win rate nor the gains.

Win rate = wins / resolved calls (wins and losses). Average gain = the mean of the resolved
calls' peak multiples, each capped at GAIN_CAP (10x), so one 300x call cannot make a channel
look good on its own; the (uncapped) median and the number of resolved calls go beside it.

The feed may describe a channel's statistics itself (`channel` frames): its figures win where
it gives them, figure by figure; the bot's own fill in the rest (`effective_channel`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from domain.events import Channel

WIN_MULTIPLE = 2.0
WINDOW = timedelta(days=7)
GAIN_CAP = 10.0
# /channels ranks a channel only from this many resolved calls on (the default of the setting).
MIN_RESOLVED = 10

CallState = Literal["win", "loss", "unresolved", "unpriced"]


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """One call as the statistics see it; `peak` None: no price seen after it yet."""

    called_at: datetime
    base: float  # > 0
    peak: float | None = None

    @property
    def multiple(self) -> float | None:
        return None if self.peak is None else max(1.0, self.peak / self.base)

    def state(self, now: datetime) -> CallState:
        # peak >= 2 * base rather than peak / base >= 2: exact in floats as in SQL numerics
        if self.peak is not None and self.peak >= WIN_MULTIPLE * self.base:
            return "win"
        if now < self.called_at + WINDOW:
            return "unresolved"
        return "loss" if self.peak is not None else "unpriced"


@dataclass(frozen=True, slots=True)
class ChannelFigures:
    """What the bot measured of one channel's calls; None figures: no resolved call yet."""

    calls: int  # resolved + unresolved + unpriced
    resolved: int
    wins: int
    unresolved: int
    unpriced: int
    win_rate: float | None  # share 0..1
    avg_gain: float | None  # capped mean of peak multiples
    median_gain: float | None


def channel_figures(outcomes: Iterable[CallOutcome], now: datetime, *, cap: float = GAIN_CAP) -> ChannelFigures:
    """The figures of one channel's calls as they stand at `now`."""
    counts = {"win": 0, "loss": 0, "unresolved": 0, "unpriced": 0}
    multiples: list[float] = []
    for outcome in outcomes:
        state = outcome.state(now)
        counts[state] += 1
        if state in ("win", "loss") and outcome.multiple is not None:
            multiples.append(outcome.multiple)
    resolved = counts["win"] + counts["loss"]
    return ChannelFigures(
        calls=sum(counts.values()),
        resolved=resolved,
        wins=counts["win"],
        unresolved=counts["unresolved"],
        unpriced=counts["unpriced"],
        win_rate=counts["win"] / resolved if resolved else None,
        avg_gain=sum(min(m, cap) for m in multiples) / len(multiples) if multiples else None,
        median_gain=statistics.median(multiples) if multiples else None,
    )


def effective_channel(feed: Channel, figures: ChannelFigures | None) -> Channel:
    """The channel as filters see it: the feed's figures where it gave them, the bot's elsewhere."""
    if figures is None:
        return feed
    return Channel(
        id=feed.id,
        name=feed.name,
        username=feed.username,
        win_rate=feed.win_rate if feed.win_rate is not None else figures.win_rate,
        avg_gain=feed.avg_gain if feed.avg_gain is not None else figures.avg_gain,
        calls=feed.calls if feed.calls is not None else figures.calls,
    )


@dataclass(frozen=True, slots=True)
class RatedChannel:
    """A channel as the feed describes it (`channel`), with the bot's own figures beside it."""

    channel: Channel
    figures: ChannelFigures | None = None
    effective: Channel = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # kept: matching reads it for every caller of every call
        object.__setattr__(self, "effective", effective_channel(self.channel, self.figures))


@dataclass(frozen=True, slots=True)
class ChannelBoard:
    """/channels: the ranked channels, and those with too few resolved calls to rank yet."""

    ranked: tuple[RatedChannel, ...]
    too_few: tuple[RatedChannel, ...]
    min_resolved: int


def best_channels(rated: Iterable[RatedChannel], min_resolved: int = MIN_RESOLVED, limit: int = 10) -> ChannelBoard:
    """Channels by the bot's win rate (then more resolved calls, then higher average gain), only
    those with `min_resolved` resolved calls or more; the rest with resolved calls apart, most
    resolved first. Each list at most `limit` long."""
    ranked: list[RatedChannel] = []
    few: list[RatedChannel] = []
    for entry in rated:
        figures = entry.figures
        if figures is None or figures.resolved == 0 or figures.win_rate is None:
            continue
        (ranked if figures.resolved >= min_resolved else few).append(entry)

    def rank_key(entry: RatedChannel) -> tuple[float, int, float, str]:
        f = entry.figures
        assert f is not None and f.win_rate is not None
        return (-f.win_rate, -f.resolved, -(f.avg_gain or 0.0), entry.channel.id)

    def few_key(entry: RatedChannel) -> tuple[int, float, str]:
        f = entry.figures
        assert f is not None and f.win_rate is not None
        return (-f.resolved, -f.win_rate, entry.channel.id)

    return ChannelBoard(
        ranked=tuple(sorted(ranked, key=rank_key)[:limit]),
        too_few=tuple(sorted(few, key=few_key)[:limit]),
        min_resolved=min_resolved,
    )
