"""/channels in a conversation: channels ranked by the bot's own win rate with their resolved
calls, capped average and median, those with too few resolved calls apart, in English and Russian."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.runtime import MENU_COMMANDS
from services.channel_stats import ChannelStatistics
from tests.bot_env import running_bot
from tests.conftest import Stores
from tests.test_channel_stats import NOW, run_the_job_until, write_calls

pytestmark = pytest.mark.timeout(60)

# Measured elsewhere (figures written as the job writes them): (id, name, username, win rate,
# resolved, wins, open, average, median).
MEASURED = [
    ("-1004", "Delta <Calls>", "deltacalls", 0.45, 40, 18, 5, 2.1, 1.6),
    ("-1005", "Echo", "echocalls", 0.583333, 12, 7, 0, 2.4, 2.05),
    ("-1006", None, "foxtrot", 0.8, 10, 8, 1, 6.0, 3.5),
]


async def seed(stores: Stores) -> None:
    """The hand-worked channels A (7 resolved) and B (2) through the job, and three more."""
    postgres = stores.postgres
    writer = await write_calls(postgres)
    await run_the_job_until(ChannelStatistics(postgres), writer, NOW)
    for channel_id, name, username, rate, resolved, wins, still_open, avg, median in MEASURED:
        await postgres.execute(
            "INSERT INTO channels (id, name, username, computed_win_rate, computed_avg_gain, computed_median_gain,"
            " computed_calls, computed_resolved, computed_wins, computed_unresolved, computed_unpriced, computed_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11)",
            channel_id,
            name,
            username,
            rate,
            avg,
            median,
            resolved + still_open,
            resolved,
            wins,
            still_open,
            datetime.now(UTC) - timedelta(minutes=5),
        )


async def test_channels_ranked_with_their_counts_and_the_few_apart(stores: Stores) -> None:
    await seed(stores)
    async with running_bot(stores) as env:
        reply = await env.chat(31).ask("/channels")
        assert reply.text is not None
        lines = reply.text.splitlines()
        assert lines[0] == "📊 Channels with the best win rate"
        assert lines[2:5] == [
            "1. @foxtrot: 80% of 10 resolved calls reached 2x · avg 6.0x · median 3.5x · 1 still open",
            "2. Echo @echocalls: 58% of 12 resolved calls reached 2x · avg 2.4x · median 2.0x",
            "3. Delta <Calls> @deltacalls: 45% of 40 resolved calls reached 2x · avg 2.1x · median 1.6x · 5 still open",
        ]
        # A (57%, measured from the hand-worked calls) and B have fewer than 10 resolved calls.
        few = lines.index("Too few resolved calls to rank yet (fewer than 10):")
        assert lines[few + 1 : few + 3] == ["• Alpha: 4 of 7 reached 2x", "• Beta: 1 of 2 reached 2x"]
        assert "caps each call's peak at 10x" in reply.text

        russian = await env.chat(32, "ru").ask("/channels")
        assert russian.text is not None
        assert "1. @foxtrot: винрейт 80% (завершённых коллов: 10) · в среднем 6.0x · медиана 3.5x" in russian.text
        assert "• Alpha: 2x у 4 из 7" in russian.text and "меньше 10" in russian.text

        assert "/channels" in (await env.chat(31).ask("/help")).text
    assert "channels" in MENU_COMMANDS


async def test_no_channel_measured_yet(stores: Stores) -> None:
    async with running_bot(stores) as env:
        reply = await env.chat(33).ask("/channels")
        assert reply.text is not None and "No channel has 10 resolved calls yet." in reply.text
