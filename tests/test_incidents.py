"""The incident rule as plain functions: opened once after its delay, recovered once, no flapping."""

from __future__ import annotations

from domain.incidents import Phase, Watch, increase, observe, over_share, previous_run, trim


def run(checks: list[tuple[float, bool]], **rule: float) -> list[tuple[float, Phase]]:
    watch, said = Watch(), []
    for now, bad in checks:
        watch, phase = observe(watch, now, bad=bad, **rule)
        if phase is not None:
            said.append((now, phase))
    return said


def test_an_incident_opens_once_after_its_delay_and_recovers_once() -> None:
    checks = [(t, 10 <= t < 400) for t in range(0, 600, 30)]  # bad from 30 s to 390 s
    assert run(checks, open_after=300) == [(330, Phase.OPENED), (420, Phase.RECOVERED)]


def test_a_short_outage_says_nothing() -> None:
    checks = [(t, 30 <= t <= 240) for t in range(0, 600, 30)]
    assert run(checks, open_after=300) == []


def test_an_outage_that_breaks_off_starts_counting_again() -> None:
    # Bad 0..150, fine at 180, bad again from 210: the delay counts from 210.
    checks = [(t, t != 180) for t in range(0, 600, 30)]
    assert run(checks, open_after=300) == [(510, Phase.OPENED)]


def test_recovery_can_wait_for_a_quiet_spell() -> None:
    checks = [(0, True), (10, False), (20, True), (30, False), (40, False), (50, False)]
    assert run(checks, close_after=15) == [(0, Phase.OPENED), (50, Phase.RECOVERED)]


def test_between_bad_and_clear_nothing_changes() -> None:
    watch, phase = observe(Watch(), 0, bad=True)
    assert phase is Phase.OPENED and watch.open and watch.began == 0
    watch, phase = observe(watch, 10, bad=False, clear=False)  # not bad enough to open, not quiet
    assert phase is None and watch.open
    watch, phase = observe(watch, 20, bad=False, clear=True)
    assert phase is Phase.RECOVERED and watch == Watch()
    watch, phase = observe(watch, 30, bad=False, clear=False)
    assert phase is None and not watch.open


def test_counter_increase_over_a_window() -> None:
    samples: list[tuple[float, float]] = []
    for at, count in [(0, 0), (30, 2), (60, 5), (90, 5), (120, 9)]:
        samples.append((at, count))
        trim(samples, at, 60)
    assert increase(samples, 120, 60) == 4  # 9 at 120 less 5 at 60
    assert samples == [(60, 5), (90, 5), (120, 9)]
    assert increase([(0, 7), (30, 2)], 30, 60) == 2  # counted again from 0 after a restart
    assert increase([], 0, 60) == 0


def test_share_of_a_limit() -> None:
    assert over_share(80, 100, 80) and not over_share(79, 100, 80)
    assert not over_share(10**9, None, 80) and not over_share(5, 0, 80)


def test_how_the_previous_run_ended() -> None:
    assert previous_run(None, None, None) == ("first", "")
    assert previous_run(100.0, 200.0, 250.0) == ("clean", "1970-01-01 00:04:10 UTC")
    assert previous_run(100.0, 300.0, 250.0) == ("unclean", "1970-01-01 00:05:00 UTC")  # ran on after a stop
    assert previous_run(100.0, 200.0, None) == ("unclean", "1970-01-01 00:03:20 UTC")
    assert previous_run(100.0, 200.0, 250.0, known=False) == ("unknown", "")
