"""The follow-ups choice through the Telegram double: from /status, by the buttons the bot sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.bot_env import BotEnv, running_bot
from tests.conftest import Stores

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def env(stores: Stores) -> AsyncIterator[BotEnv]:
    async with running_bot(stores) as running:
        yield running


async def test_the_follow_ups_choice_is_reached_from_status_and_saved(env: BotEnv) -> None:
    chat = env.chat(61)
    await chat.ask("/start")
    status = await chat.ask("/status")
    assert "Follow-ups: every multiple" in (status.text or "")
    screen = await chat.press("Follow-ups: every multiple")
    assert "Now: every multiple" in screen.text
    assert screen.labels() == ["✓ every multiple", "from 5x", "from 10x", "off", "⬅ Back"]
    screen = await chat.press("from 5x")
    assert "✅ Follow-ups: from 5x" in screen.text and "✓ from 5x" in screen.labels()
    assert (await env.store.get(61)).followup_min == 5  # type: ignore[union-attr]
    row = await env.stores.postgres.fetchrow(
        "SELECT s.followup_min, h.new_value FROM user_settings s JOIN users u ON u.id = s.user_id "
        "JOIN settings_history h ON h.user_id = u.id AND h.name = 'followup_min' WHERE u.telegram_id = 61"
    )
    assert row is not None and (row["followup_min"], row["new_value"]) == (5, 5)
    await chat.press("off")
    assert (await env.store.get(61)).followup_min == 0  # type: ignore[union-attr]
    back = await chat.press("Back")
    assert "Follow-ups: off" in back.text


async def test_the_choice_speaks_russian(env: BotEnv) -> None:
    chat = env.chat(62, "ru")
    await chat.ask("/start")
    screen = (await chat.say("/followups"))[0]
    assert "Сейчас: все" in (screen.text or "")
    pressed = await chat.press("от 10x")
    assert "✅ Иксы после оповещения: от 10x" in pressed.text
    assert (await env.store.get(62)).followup_min == 10  # type: ignore[union-attr]
