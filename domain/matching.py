"""Which subscribers a call matches, for thousands of subscribers in well under a millisecond.

The rules are those of `domain.filters` (and a test checks this index agrees with them on
random filters). Instead of looping over subscribers in Python, every filter bound is a column
(a numpy array, one entry per subscriber) and a call is checked against all subscribers with a
handful of vector comparisons. An unset bound is stored as -inf/+inf so it always passes; a
"needs" column says which subscribers have a bound whose field the token may lack.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from domain.events import Channel
from domain.filters import TokenFacts
from domain.subscriber import Subscriber

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _lower(value: float | int | None) -> float:
    return -math.inf if value is None else float(value)


def _upper(value: float | int | None) -> float:
    return math.inf if value is None else float(value)


@dataclass
class _Columns:
    ids: IntArray
    eligible: BoolArray  # active and not paused; plan expiry is checked per call
    expires: FloatArray  # epoch seconds; +inf for admins
    min_mcap: FloatArray
    max_mcap: FloatArray
    needs_mcap: BoolArray
    min_liquidity: FloatArray
    needs_liquidity: BoolArray
    min_holders: FloatArray
    needs_holders: BoolArray
    max_age: FloatArray  # minutes
    needs_age: BoolArray
    min_win_rate: FloatArray  # percent
    needs_win_rate: BoolArray
    min_avg_gain: FloatArray
    needs_avg_gain: BoolArray
    min_channels: IntArray
    has_allow_list: BoolArray
    allow_positions: dict[str, IntArray]  # channel ref -> positions of subscribers allowing it
    exclude_positions: dict[str, IntArray]


def _build(subscribers: Sequence[Subscriber]) -> _Columns:
    n = len(subscribers)

    def column(values: Iterable[float], dtype: type = np.float64) -> npt.NDArray:
        return np.fromiter(values, dtype=dtype, count=n)

    allow: dict[str, list[int]] = {}
    exclude: dict[str, list[int]] = {}
    for position, subscriber in enumerate(subscribers):
        for ref in subscriber.filters.channels or ():
            allow.setdefault(ref, []).append(position)
        for ref in subscriber.filters.exclude_channels or ():
            exclude.setdefault(ref, []).append(position)
    f = [s.filters for s in subscribers]
    return _Columns(
        ids=column((s.telegram_id for s in subscribers), np.int64),
        eligible=column((s.status == "active" and not s.paused for s in subscribers), np.bool_),
        expires=column(
            (math.inf if s.is_admin else (s.plan_expires_at.timestamp() if s.plan_expires_at else -math.inf))
            for s in subscribers
        ),
        min_mcap=column(_lower(x.min_mcap) for x in f),
        max_mcap=column(_upper(x.max_mcap) for x in f),
        needs_mcap=column((x.min_mcap is not None or x.max_mcap is not None for x in f), np.bool_),
        min_liquidity=column(_lower(x.min_liquidity) for x in f),
        needs_liquidity=column((x.min_liquidity is not None for x in f), np.bool_),
        min_holders=column(_lower(x.min_holders) for x in f),
        needs_holders=column((x.min_holders is not None for x in f), np.bool_),
        max_age=column(_upper(x.max_age) for x in f),
        needs_age=column((x.max_age is not None for x in f), np.bool_),
        min_win_rate=column(_lower(x.min_win_rate) for x in f),
        needs_win_rate=column((x.min_win_rate is not None for x in f), np.bool_),
        min_avg_gain=column(_lower(x.min_avg_gain) for x in f),
        needs_avg_gain=column((x.min_avg_gain is not None for x in f), np.bool_),
        min_channels=column((x.min_channels for x in f), np.int64),
        has_allow_list=column((x.channels is not None for x in f), np.bool_),
        allow_positions={ref: np.array(p, dtype=np.int64) for ref, p in allow.items()},
        exclude_positions={ref: np.array(p, dtype=np.int64) for ref, p in exclude.items()},
    )


def _bound(mask: BoolArray, value: float | int | None, needs: BoolArray, ok: BoolArray | None) -> None:
    """Narrow `mask` in place: a missing value fails every subscriber that needs it."""
    if value is None:
        mask &= ~needs
    elif ok is not None:
        mask &= ok


class SubscriberIndex:
    """All subscribers' filters as columns; rebuilt lazily after changes (a rebuild is O(n))."""

    def __init__(self, subscribers: Iterable[Subscriber] = ()) -> None:
        self._subscribers: dict[int, Subscriber] = {s.telegram_id: s for s in subscribers}
        self._columns: _Columns | None = None
        self.rebuilds = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def replace_all(self, subscribers: Iterable[Subscriber]) -> None:
        self._subscribers = {s.telegram_id: s for s in subscribers}
        self._columns = None

    def upsert(self, subscriber: Subscriber) -> None:
        self._subscribers[subscriber.telegram_id] = subscriber
        self._columns = None

    def remove(self, telegram_id: int) -> None:
        if self._subscribers.pop(telegram_id, None) is not None:
            self._columns = None

    def get(self, telegram_id: int) -> Subscriber | None:
        return self._subscribers.get(telegram_id)

    def _ensure(self) -> _Columns:
        if self._columns is None:
            self._columns = _build(list(self._subscribers.values()))
            self.rebuilds += 1
        return self._columns

    def token_mask(self, token: TokenFacts, called_at: datetime, now: datetime | None = None) -> BoolArray:
        """Subscribers who receive alerts `now` and whose token-level filters this token passes."""
        c = self._ensure()
        mask = c.eligible & (c.expires > (now or called_at).timestamp())
        mcap = token.market_cap_usd
        _bound(mask, mcap, c.needs_mcap, None if mcap is None else (c.min_mcap <= mcap) & (mcap <= c.max_mcap))
        liquidity = token.liquidity_usd
        _bound(mask, liquidity, c.needs_liquidity, None if liquidity is None else c.min_liquidity <= liquidity)
        holders = token.holders
        _bound(mask, holders, c.needs_holders, None if holders is None else c.min_holders <= holders)
        if token.created_at is None:
            mask &= ~c.needs_age
        else:
            age_minutes = (called_at - token.created_at).total_seconds() / 60
            mask &= age_minutes <= c.max_age
        return mask

    def channel_mask(self, channel: Channel) -> BoolArray:
        """Subscribers whose per-channel filters this channel passes."""
        c = self._ensure()
        mask = np.ones(len(c.ids), dtype=np.bool_)
        win_rate = None if channel.win_rate is None else channel.win_rate * 100 + 1e-9
        _bound(mask, win_rate, c.needs_win_rate, None if win_rate is None else c.min_win_rate <= win_rate)
        gain = channel.avg_gain
        _bound(mask, gain, c.needs_avg_gain, None if gain is None else c.min_avg_gain <= gain)
        if c.allow_positions:
            allowed = ~c.has_allow_list
            for ref in channel.refs:
                positions = c.allow_positions.get(ref)
                if positions is not None:
                    allowed[positions] = True
            mask &= allowed
        for ref in channel.refs:
            positions = c.exclude_positions.get(ref)
            if positions is not None:
                mask[positions] = False
        return mask

    def match(
        self, token: TokenFacts, called_at: datetime, callers: Sequence[Channel], now: datetime | None = None
    ) -> list[int]:
        """Telegram ids of subscribers for whom the token passes with these calling channels.

        `called_at` dates the call (for max_age); `now` decides whose plan is active (default: called_at).
        """
        c = self._ensure()
        if len(c.ids) == 0:
            return []
        mask = self.token_mask(token, called_at, now)
        if not mask.any():
            return []
        distinct = {channel.id: channel for channel in callers}
        passing = np.zeros(len(c.ids), dtype=np.int64)
        for channel in distinct.values():
            passing += self.channel_mask(channel)
        mask &= passing >= c.min_channels
        return c.ids[mask].tolist()
