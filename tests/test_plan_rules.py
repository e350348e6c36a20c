"""The plan arithmetic and reminder rules of domain/plans.py, as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain.plans import Plan, Rail, due_reminder, lamports_to_sol, moves_forward, paid_period, sol_to_lamports

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def test_paid_days_start_at_the_later_of_now_and_the_current_end() -> None:
    assert paid_period(None, NOW, 30) == (NOW, NOW + 30 * DAY)
    assert paid_period(NOW - DAY, NOW, 7) == (NOW, NOW + 7 * DAY)  # ran out: from now
    assert paid_period(NOW + 5 * DAY, NOW, 7) == (NOW + 5 * DAY, NOW + 12 * DAY)  # running: after it
    with pytest.raises(ValueError):
        paid_period(None, NOW, 0)


def test_a_plan_is_offered_on_the_rails_it_has_a_price_for() -> None:
    plan = Plan("month", "1 month", 30, 750, None, Decimal(15))
    assert plan.rails() == [Rail.STARS, Rail.NOWPAYMENTS]
    assert plan.price(Rail.STARS) == 750 and plan.price(Rail.SOL) is None


def test_sol_amounts_convert_exactly() -> None:
    assert sol_to_lamports(Decimal("0.09")) == 90_000_000
    assert lamports_to_sol(90_000_000) == Decimal("0.09")


def test_gateway_statuses_never_move_back() -> None:
    assert moves_forward(None, "waiting") and moves_forward("waiting", "confirming")
    assert moves_forward("confirming", "finished")
    assert not moves_forward("finished", "confirming") and not moves_forward("finished", "failed")
    assert not moves_forward("waiting", "made-up")


@pytest.mark.parametrize(
    ("moment", "sent", "expected"),
    [
        (-4 * DAY, frozenset(), None),
        (-3 * DAY, frozenset(), "3d"),
        (-2 * DAY, frozenset({"3d"}), None),
        (-DAY / 2, frozenset({"3d"}), "1d"),
        (-DAY / 2, frozenset(), "1d"),  # down for two days: only the latest
        (timedelta(hours=1), frozenset({"3d", "1d"}), "ended"),
        (timedelta(hours=1), frozenset({"ended"}), None),
        (3 * DAY, frozenset(), None),  # too late to be worth telling
    ],
)
def test_the_latest_due_reminder_is_sent_once(moment: timedelta, sent: frozenset[str], expected: str | None) -> None:
    end = NOW + 10 * DAY
    assert due_reminder(end, end + moment, sent) == expected


def test_a_short_plan_gets_no_reminder_that_was_due_when_it_began() -> None:
    started = NOW
    end = started + 3 * DAY  # a three-day trial
    assert due_reminder(end, started + timedelta(minutes=1), frozenset(), started) is None
    assert due_reminder(end, end - DAY / 2, frozenset(), started) == "1d"
