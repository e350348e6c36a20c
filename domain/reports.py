"""The reports' rules: when each is due, what period it covers, and how alerts, tokens and
channels did over it. Pure: the figures come in as plain values (services/reports.py reads them).

A multiple is a market cap (after the alert, or now) over the market cap at the alert; where
either is missing, the price over the price at the alert (the supply of a token does not change,
so both give the same multiple).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from domain.channel_stats import GAIN_CAP, WIN_MULTIPLE


class ReportKind(StrEnum):
    DAILY = "daily"  # a subscriber's alerts of the day
    BEST = "best"  # the day's best tokens and channels
    WEEKLY = "weekly"  # the channels over the week


@dataclass(frozen=True)
class ReportSchedule:
    """A report's slot in UTC (every day, or on `weekday`, 0 = Monday), how far back it reaches,
    and how late it may still go out after a missed slot (the bot was down)."""

    kind: ReportKind
    hour: int
    minute: int = 0
    weekday: int | None = None
    period: timedelta = timedelta(days=1)
    grace: timedelta = timedelta(hours=6)

    def latest_slot(self, now: datetime) -> datetime:
        """The last slot at or before `now` (UTC)."""
        slot = now.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if slot > now:
            slot -= timedelta(days=1)
        if self.weekday is not None:
            slot -= timedelta(days=(slot.weekday() - self.weekday) % 7)
        return slot

    def due(self, now: datetime) -> datetime | None:
        """The slot whose report should go out at `now`: the latest one, unless it is more than
        `grace` ago (a report that late is news nobody wants)."""
        slot = self.latest_slot(now)
        return slot if now - slot <= self.grace else None

    def window(self, slot: datetime) -> tuple[datetime, datetime]:
        """The period a slot's report covers: the `period` up to the slot, so consecutive
        reports cover every moment once whatever the hour."""
        return slot - self.period, slot


SCHEDULES: dict[ReportKind, ReportSchedule] = {
    ReportKind.DAILY: ReportSchedule(ReportKind.DAILY, hour=20),
    ReportKind.BEST: ReportSchedule(ReportKind.BEST, hour=21),
    ReportKind.WEEKLY: ReportSchedule(
        ReportKind.WEEKLY, hour=9, weekday=0, period=timedelta(days=7), grace=timedelta(hours=24)
    ),
}


def report_day(slot: datetime) -> date:
    """The day a report is kept under (one per subscriber): its slot's UTC date."""
    return slot.date()


# ---------------------------------------------------------------------------------- multiples

# A call or an alert "won" when it reached 2x; gains are capped at 10x in means (one moonshot
# must not make a channel's average): the channel statistics' own rules.


def multiple(base: float | None, value: float | None) -> float | None:
    """`value` over `base`; None when either is unknown or the base is not positive."""
    if base is None or value is None or base <= 0:
        return None
    return value / base


@dataclass(frozen=True)
class Figures:
    """A starting point (at the alert or call) and what came after it, as read from the history:
    the highest market cap and price since, and the latest ones (None where unknown)."""

    base_mcap: float | None = None
    base_price: float | None = None
    peak_mcap: float | None = None
    peak_price: float | None = None
    now_mcap: float | None = None
    now_price: float | None = None

    def peak(self) -> float | None:
        """The highest multiple since the start: at least 1x (the start itself counts) and at
        least the current one; None when the start has no figure to compare with."""
        if self.base_mcap is None and self.base_price is None:
            return None
        seen = [
            m for m in (_ratio(self.base_mcap, self.peak_mcap, self.base_price, self.peak_price), self.current()) if m
        ]
        return max([1.0, *seen])

    def current(self) -> float | None:
        return _ratio(self.base_mcap, self.now_mcap, self.base_price, self.now_price)


def _ratio(base_mcap: float | None, mcap: float | None, base_price: float | None, price: float | None) -> float | None:
    by_mcap = multiple(base_mcap, mcap)
    return by_mcap if by_mcap is not None else multiple(base_price, price)


@dataclass(frozen=True)
class AlertResult:
    """One alert of a subscriber's day and how its token did since."""

    token_address: str
    symbol: str | None
    alerted_at: datetime
    peak: float | None
    current: float | None

    @property
    def won(self) -> bool:
        return self.peak is not None and self.peak >= WIN_MULTIPLE


def by_peak(results: Iterable[AlertResult]) -> list[AlertResult]:
    """Best first; unknown multiples last, then in alert order."""
    return sorted(results, key=lambda r: (r.peak is None, -(r.peak or 0.0), r.alerted_at))


@dataclass(frozen=True)
class DailySummary:
    alerts: int
    won: int  # reached 2x
    best: AlertResult | None  # the highest peak, when any is known


def summarize(results: Sequence[AlertResult]) -> DailySummary:
    ranked = by_peak(results)
    best = ranked[0] if ranked and ranked[0].peak is not None else None
    return DailySummary(alerts=len(results), won=sum(1 for r in results if r.won), best=best)


# ---------------------------------------------------------------------------------- calls


@dataclass(frozen=True)
class CallResult:
    """A channel's call in the period and how its token did since the call."""

    token_address: str
    symbol: str | None
    channel_id: str
    channel_name: str | None
    called_at: datetime
    peak: float | None
    current: float | None


@dataclass(frozen=True)
class TokenResult:
    """A token called in the period, measured from its first call in it."""

    token_address: str
    symbol: str | None
    first_called_at: datetime
    channels: int  # distinct channels that called it in the period
    peak: float | None
    current: float | None


@dataclass(frozen=True)
class ChannelResult:
    """A channel's calls in the period. Calls whose multiple is unknown (no price after them)
    are counted in `calls` but not in `measured`, the base of the win rate and the gains."""

    channel_id: str
    name: str | None
    calls: int
    measured: int
    won: int  # reached 2x
    median_peak: float | None
    mean_peak: float | None  # each peak capped at GAIN_CAP
    best_peak: float | None

    @property
    def win_rate(self) -> float | None:
        return self.won / self.measured if self.measured else None


def best_tokens(calls: Iterable[CallResult], count: int = 10) -> list[TokenResult]:
    """The period's tokens by peak multiple since their first call in it."""
    first: dict[str, CallResult] = {}
    callers: dict[str, set[str]] = {}
    for call in sorted(calls, key=lambda c: c.called_at):
        first.setdefault(call.token_address, call)
        callers.setdefault(call.token_address, set()).add(call.channel_id)
    tokens = [
        TokenResult(c.token_address, c.symbol, c.called_at, len(callers[c.token_address]), c.peak, c.current)
        for c in first.values()
        if c.peak is not None
    ]
    tokens.sort(key=lambda t: (-(t.peak or 0.0), t.first_called_at))
    return tokens[:count]


def channel_results(calls: Iterable[CallResult]) -> list[ChannelResult]:
    """Each channel's calls, won calls (2x) and gains, over what was measured."""
    grouped: dict[str, list[CallResult]] = {}
    for call in calls:
        grouped.setdefault(call.channel_id, []).append(call)
    results = []
    for channel_id, own in grouped.items():
        peaks = [c.peak for c in own if c.peak is not None]
        results.append(
            ChannelResult(
                channel_id=channel_id,
                name=next((c.channel_name for c in own if c.channel_name), None),
                calls=len(own),
                measured=len(peaks),
                won=sum(1 for p in peaks if p >= WIN_MULTIPLE),
                median_peak=statistics.median(peaks) if peaks else None,
                mean_peak=statistics.fmean(min(p, GAIN_CAP) for p in peaks) if peaks else None,
                best_peak=max(peaks) if peaks else None,
            )
        )
    return results


def best_channels(results: Iterable[ChannelResult], *, min_calls: int, count: int = 10) -> list[ChannelResult]:
    """Channels with at least `min_calls` measured calls (three lucky calls make no oracle), by
    win rate, then capped mean gain, then number of calls."""
    eligible = [r for r in results if r.measured >= min_calls]
    eligible.sort(key=lambda r: (-(r.win_rate or 0.0), -(r.mean_peak or 0.0), -r.measured, r.channel_id))
    return eligible[:count]
