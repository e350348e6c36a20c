"""The vectorised index must decide exactly as the plain filter rules do."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from domain.events import Channel
from domain.filters import Filters, TokenFacts, token_matches
from domain.matching import SubscriberIndex
from domain.subscriber import Subscriber

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CHANNELS = [
    Channel(
        f"-100{i}",
        username=f"chan{i}" if i % 3 else None,
        win_rate=None if i % 7 == 0 else i / 25,
        avg_gain=None if i % 5 == 0 else 1 + i / 4,
    )
    for i in range(20)
]


def _maybe(rng: random.Random, value: object, p: float = 0.4) -> object:
    return value if rng.random() < p else None


def random_filters(rng: random.Random) -> Filters:
    refs = [c.id for c in CHANNELS] + [r for c in CHANNELS for r in c.refs if r.startswith("@")]
    low = rng.choice([5e3, 2e4, 5e4, 1e5])
    return Filters(
        min_mcap=_maybe(rng, low),  # type: ignore[arg-type]
        max_mcap=_maybe(rng, low * rng.choice([2, 10, 100])),  # type: ignore[arg-type]
        min_liquidity=_maybe(rng, rng.choice([1e3, 5e3, 2e4])),  # type: ignore[arg-type]
        min_holders=_maybe(rng, rng.choice([10, 100, 500])),  # type: ignore[arg-type]
        max_age=_maybe(rng, rng.choice([10, 60, 600])),  # type: ignore[arg-type]
        min_win_rate=_maybe(rng, rng.choice([0, 20, 40, 60])),  # type: ignore[arg-type]
        min_avg_gain=_maybe(rng, rng.choice([1.5, 2, 3])),  # type: ignore[arg-type]
        channels=_maybe(rng, frozenset(rng.sample(refs, 4)), 0.2),  # type: ignore[arg-type]
        exclude_channels=_maybe(rng, frozenset(rng.sample(refs, 2)), 0.2),  # type: ignore[arg-type]
        min_channels=rng.choice([1, 1, 1, 2, 3]),
    )


def random_subscriber(rng: random.Random, telegram_id: int) -> Subscriber:
    return Subscriber(
        telegram_id=telegram_id,
        filters=random_filters(rng),
        paused=rng.random() < 0.1,
        status=rng.choice(["active"] * 8 + ["blocked", "banned"]),
        is_admin=rng.random() < 0.05,
        plan_expires_at=rng.choice([None, NOW - timedelta(days=1), NOW + timedelta(days=3)]),
    )


def random_token(rng: random.Random) -> TokenFacts:
    return TokenFacts(
        market_cap_usd=_maybe(rng, rng.uniform(1e3, 3e6), 0.9),  # type: ignore[arg-type]
        liquidity_usd=_maybe(rng, rng.uniform(0, 5e4), 0.8),  # type: ignore[arg-type]
        holders=_maybe(rng, rng.randint(0, 2000), 0.8),  # type: ignore[arg-type]
        created_at=_maybe(rng, NOW - timedelta(minutes=rng.uniform(0, 900)), 0.8),  # type: ignore[arg-type]
    )


def test_index_agrees_with_the_filter_rules() -> None:
    rng = random.Random(11)
    subscribers = [random_subscriber(rng, 1000 + i) for i in range(400)]
    index = SubscriberIndex(subscribers)
    matched_somebody = 0
    for _ in range(300):
        token = random_token(rng)
        callers = rng.sample(CHANNELS, rng.randint(1, 5))
        expected = sorted(
            s.telegram_id
            for s in subscribers
            if s.receives_alerts(NOW) and token_matches(s.filters, token, NOW, callers)
        )
        got = sorted(index.match(token, NOW, callers))
        assert got == expected
        matched_somebody += bool(got)
    assert matched_somebody > 50  # the random mix really exercises matches, not only rejections


def test_changes_take_effect_at_once() -> None:
    subscriber = Subscriber(telegram_id=7, filters=Filters(min_mcap=100_000), is_admin=True)
    index = SubscriberIndex([subscriber])
    token = TokenFacts(market_cap_usd=50_000)
    assert index.match(token, NOW, CHANNELS[:1]) == []
    index.upsert(Subscriber(telegram_id=7, filters=Filters(min_mcap=10_000), is_admin=True))
    assert index.match(token, NOW, CHANNELS[:1]) == [7]
    index.remove(7)
    assert index.match(token, NOW, CHANNELS[:1]) == []


def test_expired_plan_stops_alerts_without_a_rebuild() -> None:
    index = SubscriberIndex([Subscriber(telegram_id=9, plan_expires_at=NOW + timedelta(minutes=1))])
    token = TokenFacts(market_cap_usd=1)
    assert index.match(token, NOW, CHANNELS[:1]) == [9]
    assert index.match(token, NOW + timedelta(minutes=2), CHANNELS[:1]) == []
    assert index.rebuilds == 1
