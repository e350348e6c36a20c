"""The filter rules of docs/contract.md, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.events import Channel
from domain.filters import (
    Filters,
    FilterValueError,
    TokenFacts,
    channel_passes,
    parse_usd,
    set_filter,
    token_matches,
    token_passes,
    unset_filter,
)

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
ALPHA = Channel("-1001", username="AlphaCalls", win_rate=0.41, avg_gain=2.7)
BETA = Channel("-1002", username="beta", win_rate=0.10, avg_gain=1.2)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("50k", 50_000),
        ("1.5m", 1_500_000),
        ("50000", 50_000),
        ("$2M", 2_000_000),
        ("1,5m", 1_500_000),
        ("1,500,000", 1_500_000),
        ("0", 0),
        ("2b", 2e9),
    ],
)
def test_usd_amounts(raw: str, expected: float) -> None:
    assert parse_usd(raw) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("min_mcap", "lots", "50k"),
        ("min_mcap", "-5", "USD"),
        ("min_holders", "1.5", "whole number"),
        ("min_win_rate", "150", "0 to 100"),
        ("min_avg_gain", "big", "multiple"),
        ("max_age", "soon", "minutes"),
        ("channels", "not a channel!", "@usernames"),
        ("min_channels", "0", "1 to 100"),
        ("bogus", "1", "filters are"),
    ],
)
def test_bad_values_say_what_is_accepted(name: str, value: str, fragment: str) -> None:
    with pytest.raises(FilterValueError) as caught:
        set_filter(Filters(), name, value)
    assert fragment in str(caught.value)


def test_min_above_max_is_refused() -> None:
    filters = set_filter(Filters(), "max_mcap", "100k")
    with pytest.raises(FilterValueError, match="min_mcap must not be above max_mcap"):
        set_filter(filters, "min_mcap", "200k")


def test_set_unset_round_trip_through_stored_form() -> None:
    filters = Filters()
    for name, value in [
        ("min_mcap", "50k"),
        ("min_win_rate", "40%"),
        ("min_avg_gain", "2x"),
        ("channels", "@AlphaCalls, -1002"),
        ("max_age", "2h"),
        ("min_channels", "2"),
    ]:
        filters = set_filter(filters, name, value)
    assert filters.max_age == 120 and filters.channels == frozenset({"@alphacalls", "-1002"})
    assert Filters.from_dict(filters.to_dict()) == filters
    assert unset_filter(filters, "min_channels").min_channels == 1
    assert unset_filter(filters, "channels").channels is None


def test_token_bounds_and_missing_fields() -> None:
    token = TokenFacts(market_cap_usd=41_250, liquidity_usd=9_800, holders=212, created_at=NOW - timedelta(minutes=90))
    assert token_passes(Filters(min_mcap=40_000, max_mcap=50_000, min_liquidity=9_800, min_holders=212), token, NOW)
    assert not token_passes(Filters(min_mcap=41_251), token, NOW)
    assert not token_passes(Filters(max_mcap=41_249), token, NOW)
    assert token_passes(Filters(max_age=90), token, NOW)
    assert not token_passes(Filters(max_age=89), token, NOW)
    unknown = TokenFacts(market_cap_usd=41_250)
    assert token_passes(Filters(min_mcap=1), unknown, NOW)
    for filters in (Filters(min_liquidity=1), Filters(min_holders=1), Filters(max_age=60)):
        assert not token_passes(filters, unknown, NOW), filters


def test_channel_filters() -> None:
    assert channel_passes(Filters(min_win_rate=41), ALPHA)
    assert not channel_passes(Filters(min_win_rate=42), ALPHA)
    assert channel_passes(Filters(min_avg_gain=2.7), ALPHA) and not channel_passes(Filters(min_avg_gain=3), ALPHA)
    assert channel_passes(Filters(channels=frozenset({"@alphacalls"})), ALPHA)
    assert channel_passes(Filters(channels=frozenset({"-1001"})), ALPHA)
    assert not channel_passes(Filters(channels=frozenset({"-1001"})), BETA)
    assert not channel_passes(Filters(exclude_channels=frozenset({"@beta"})), BETA)
    no_stats = Channel("-1003")
    assert not channel_passes(Filters(min_win_rate=1), no_stats)


def test_min_channels_counts_distinct_passing_callers() -> None:
    token = TokenFacts(market_cap_usd=60_000)
    two = Filters(min_channels=2)
    assert not token_matches(two, token, NOW, [ALPHA])
    assert not token_matches(two, token, NOW, [ALPHA, ALPHA])
    assert token_matches(two, token, NOW, [ALPHA, BETA])
    assert not token_matches(Filters(min_channels=2, min_win_rate=40), token, NOW, [ALPHA, BETA])
