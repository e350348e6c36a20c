"""The fault bench's counting: what the Bot API received against the expected alerts."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.faults import Copy, Kill, Received, build_workload, explain_copies, tally, tokens_in

A = "7" * 40 + "pump"
B = "8" * 40 + "pump"
C = "9" * 40 + "pump"


def test_a_digest_counts_once_for_each_token_it_carries_and_repeats_are_copies() -> None:
    expected = frozenset({(1, A), (1, B), (2, A), (2, C)})
    received = [
        Received(1, 10.0, (A, B)),  # a digest carrying both of chat 1's alerts
        Received(2, 11.0, (A,)),
        Received(2, 12.0, (A,)),  # chat 2's alert again
        Received(3, 13.0, (A,)),  # nobody expected chat 3 to get anything
    ]
    result = tally(expected, received)
    assert (result.expected, result.delivered, result.duplicated, result.lost, result.unexpected) == (4, 3, 1, 1, 1)
    assert result.missing == [(2, C)]
    assert result.copies == [Copy(2, A, 11.0, 12.0)]
    assert result.last_at == 11.0


def test_only_a_copy_first_sent_just_before_a_kill_and_again_after_it_is_explained() -> None:
    kills = [Kill(at=100.0, delivered=50, frames=10), Kill(at=200.0, delivered=90, frames=0)]
    in_flight = Copy(1, A, first_at=98.5, again_at=104.0)  # answered 1.5 s before the first kill
    long_before = Copy(2, A, first_at=50.0, again_at=104.0)  # recorded long before: not in flight
    no_kill_between = Copy(3, B, first_at=120.0, again_at=150.0)
    per_kill, unexplained = explain_copies([in_flight, long_before, no_kill_between], kills, window=5.0)
    assert per_kill == {0: 1}
    assert unexplained == [long_before, no_kill_between]


def test_tokens_are_read_from_the_text_only_where_the_feed_has_them() -> None:
    text = (
        f'<b>New call</b>\n<code>{A}</code>\n<a href="https://dexscreener.com/solana/{A}">DexScreener</a>'
        f"\n• <code>{C}</code> and {B[:20]}"
    )
    assert tokens_in(text, frozenset({A, B, C})) == (A, C)


def test_the_workload_reaches_its_target_and_its_controls_expect_nothing() -> None:
    workload = build_workload(300, seed=7, now=datetime(2026, 11, 20, tzinfo=UTC))
    assert 300 <= len(workload.expected) < 320
    controls = {m.telegram_id for m in workload.members if not m.plan or m.paused}
    assert len(controls) == 4
    assert not {chat for chat, _ in workload.expected} & controls
    assert workload.receiving == len(workload.members) - 4
