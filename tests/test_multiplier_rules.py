"""The follow-up rules as plain functions: which threshold to announce, and when following ends."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from domain.multipliers import (
    THRESHOLDS,
    End,
    TrackingRules,
    below_since,
    level,
    levels,
    threshold_at,
    to_announce,
    tracking_end,
    trigger,
)

BASE = 100_000.0


def announced_along(path: list[float], followup_min: int = 2, base: float = BASE) -> list[int]:
    """The thresholds announced as the market cap walks `path` (multiples of the base)."""
    last, told = 0, []
    for multiple in path:
        threshold = to_announce(last, multiple * base, base, followup_min)
        if threshold is not None:
            told.append(threshold)
            last = threshold
    return told


def test_up_down_and_up_again_announces_each_threshold_once() -> None:
    assert announced_along([2.0, 5.0, 1.5, 5.5]) == [2, 5]


def test_a_jump_past_several_thresholds_announces_only_the_highest() -> None:
    assert announced_along([1.0, 12.0]) == [10]
    assert announced_along([1.2, 2.1, 3.4, 9.9, 10.0, 150.0, 500.0]) == [2, 3, 5, 10, 100]


def test_followup_min_skips_the_thresholds_below_it_and_zero_means_none() -> None:
    path = [2.0, 3.0, 5.0, 1.0, 12.0, 60.0]
    assert announced_along(path, followup_min=2) == [2, 3, 5, 10, 50]
    assert announced_along(path, followup_min=5) == [5, 10, 50]
    assert announced_along(path, followup_min=10) == [10, 50]
    assert announced_along(path, followup_min=0) == []


def test_levels_and_thresholds() -> None:
    assert [level(m) for m in (0.5, 1.99, 2.0, 2.99, 3.0, 99.9, 100.0, 1e9)] == [0, 0, 1, 1, 2, 6, 7, 7]
    assert level(math.nan) == 0 and level(math.inf) == 0
    assert [threshold_at(i) for i in range(8)] == [0, *THRESHOLDS]
    # Nothing to say against a base that is missing or nonsense.
    assert to_announce(0, 5e5, 0.0, 2) is None and to_announce(0, math.inf, BASE, 2) is None


def test_the_vectorised_rule_agrees_with_the_one_at_a_time_rule() -> None:
    rng = np.random.default_rng(7)
    bases = rng.uniform(1e4, 1e6, 2_000)
    floors = rng.integers(0, 8, 2_000).astype(np.int8)
    for market_cap in rng.uniform(1e4, 2e8, 50):
        got = levels(float(market_cap), bases)
        assert got.tolist() == [level(float(market_cap) / b) for b in bases]
        # Below the trigger no entry rises above its floor; at it, at least one does.
        limit = trigger(bases, floors)
        rising = got > floors
        if market_cap < limit:
            assert not rising.any()
        assert (levels(limit, bases) > floors).any() or limit == math.inf
    assert trigger(np.empty(0), np.empty(0, np.int8)) == math.inf
    assert trigger(np.array([BASE]), np.array([7], np.int8)) == math.inf


T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RULES = TrackingRules(
    window=timedelta(days=7), dead_share=0.1, dead_after=timedelta(hours=1), silent_after=timedelta(hours=24)
)


def end_at(now: datetime, **state: object) -> End | None:
    values: dict[str, object] = {"last_alert_at": T0, "last_price_at": T0, "started_at": T0, "low_since": None}
    values.update(state)
    return tracking_end(now, rules=RULES, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "state", "expected"),
    [
        (T0 + timedelta(days=6, hours=23), {"last_price_at": T0 + timedelta(days=6, hours=22)}, None),
        (T0 + timedelta(days=7), {"last_price_at": T0 + timedelta(days=6, hours=23)}, End.WINDOW),
        # A later alert (another subscriber) keeps the token followed for its own week.
        (
            T0 + timedelta(days=7),
            {"last_alert_at": T0 + timedelta(days=2), "last_price_at": T0 + timedelta(days=7)},
            None,
        ),
        (T0 + timedelta(minutes=59), {"low_since": T0}, None),
        (T0 + timedelta(hours=1), {"low_since": T0}, End.DEAD),
        (T0 + timedelta(hours=23, minutes=59), {}, None),
        (T0 + timedelta(hours=24), {}, End.SILENT),
        (T0 + timedelta(hours=24), {"last_price_at": None}, End.SILENT),  # never priced: from the start
    ],
)
def test_when_following_ends(now: datetime, state: dict[str, object], expected: End | None) -> None:
    assert end_at(now, **state) == expected


def test_dead_counts_from_the_first_price_below_the_share_of_the_peak() -> None:
    peak = 500_000.0
    assert below_since(None, 60_000.0, peak, T0, 0.1) is None
    first = below_since(None, 40_000.0, peak, T0, 0.1)
    assert first == T0
    assert below_since(first, 30_000.0, peak, T0 + timedelta(minutes=5), 0.1) == T0  # still the first
    assert below_since(first, 55_000.0, peak, T0 + timedelta(minutes=6), 0.1) is None  # recovered: reset
    assert below_since(None, 1.0, peak, T0, 0.0) is None  # share 0: never dead by price
