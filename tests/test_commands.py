"""Subscriber and admin commands end to end: FakeTelegramServer <- a real Dispatcher polling it
-> SubscriberStore on real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.texts import TEXTS
from domain.filters import FILTER_SPECS, Filters
from services.subscribers import subscriber_key
from tests.bot_env import ADMIN, REPLY_TIMEOUT, StoreEnv, running_bot
from tests.conftest import Stores

pytestmark = pytest.mark.timeout(60)


class Env(StoreEnv):
    async def pg_filters(self, telegram_id: int) -> dict[str, object]:
        return await self.postgres.fetchval(
            "SELECT s.filters FROM user_settings s JOIN users u ON u.id = s.user_id WHERE u.telegram_id = $1",
            telegram_id,
        )


@pytest.fixture
async def env(stores: Stores) -> AsyncIterator[Env]:
    # No sender is attached to the bot's pacing middleware here, so replies are not spaced a
    # second apart per chat (tested with the sender); a conversation takes no seconds.
    async with running_bot(stores) as running:
        yield Env.of(running)


async def test_set_then_filters_shows_it(env: Env) -> None:
    reply = await env.ask(7, "/set min_mcap 50k")
    assert "min_mcap = $50K" in reply.text
    listed = await env.ask(7, "/filters")
    assert "min_mcap = $50K" in listed.text and "/unset" in listed.text
    assert await env.pg_filters(7) == {"min_mcap": 50000.0}
    assert json.loads(await env.redis.hget(subscriber_key(7), "filters")) == {"min_mcap": 50000.0}

    reply = await env.ask(7, "/set channels @AlphaCalls, -1001234567890")
    assert "channels = -1001234567890, @alphacalls" in reply.text
    reply = await env.ask(7, "/set max_age 90")
    assert "max_age = 90m" in reply.text
    listed = await env.ask(7, "/filters")
    assert all(part in listed.text for part in ("min_mcap = $50K", "max_age = 90m", "@alphacalls"))


async def test_bad_value_says_what_is_accepted_and_saves_nothing(env: Env) -> None:
    await env.ask(7, "/start")
    reply = await env.ask(7, "/set min_mcap lots")
    assert "lots" in reply.text and "50k" in reply.text and "Nothing was saved" in reply.text
    assert await env.pg_filters(7) == {}
    assert json.loads(await env.redis.hget(subscriber_key(7), "filters")) == {}
    assert await env.postgres.fetchval("SELECT count(*) FROM settings_history") == 0

    # User input is echoed escaped, as text.
    reply = await env.ask(7, "/set min_holders <b>many</b>")
    assert "<b>many</b>" in reply.text and "Nothing was saved" in reply.text

    await env.ask(7, "/set max_mcap 100k")
    reply = await env.ask(7, "/set min_mcap 200k")
    assert "max_mcap" in reply.text and "Nothing was saved" in reply.text
    assert await env.pg_filters(7) == {"max_mcap": 100000.0}


async def test_unknown_filter_and_usage(env: Env) -> None:
    reply = await env.ask(7, "/set bogus 1")
    assert "bogus" in reply.text and "min_mcap" in reply.text and "Nothing was saved" in reply.text
    usage = await env.ask(7, "/set")
    # Every filter is listed with what it accepts.
    assert "min_win_rate: percent 0..100" in usage.text and "exclude_channels" in usage.text
    usage = await env.ask(7, "/set min_mcap")
    assert "/set NAME VALUE" in usage.text
    assert await env.pg_filters(7) == {}


async def test_unset(env: Env) -> None:
    await env.ask(7, "/set min_holders 100")
    reply = await env.ask(7, "/unset min_holders")
    assert "Removed" in reply.text and "min_holders" in reply.text
    assert await env.pg_filters(7) == {}
    assert "no filters" in (await env.ask(7, "/filters")).text
    assert "was not set" in (await env.ask(7, "/unset min_holders")).text
    assert "no filter called" in (await env.ask(7, "/unset bogus")).text
    assert "/unset NAME" in (await env.ask(7, "/unset")).text
    assert await env.postgres.fetchval("SELECT count(*) FROM settings_history") == 2


async def test_pause_and_resume(env: Env) -> None:
    assert "paused" in (await env.ask(7, "/pause")).text
    assert (await env.store.get(7)).paused
    assert await env.postgres.fetchval("SELECT paused FROM users WHERE telegram_id = 7") is True
    assert "already paused" in (await env.ask(7, "/pause")).text
    history = await env.postgres.fetch("SELECT name, old_value, new_value FROM settings_history")
    assert [tuple(row) for row in history] == [("paused", False, True)]  # once: the repeat changed nothing
    reply = await env.ask(7, "/resume")
    assert "resumed" in reply.text and "/plans" in reply.text  # no plan yet: told so
    assert not (await env.store.get(7)).paused
    assert "already on" in (await env.ask(7, "/resume")).text


async def test_non_admin_is_refused_and_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    await env.ask(5, "/start")
    with caplog.at_level(logging.WARNING, logger="alertbot.admin"):
        reply = await env.ask(7, "/grant 5 30")
    assert "admins only" in reply.text
    row = await env.postgres.fetchrow(
        "SELECT action, details, user_id IS NOT NULL AS linked FROM activity_log WHERE actor_telegram_id = 7"
    )
    assert row["action"] == "admin_refused" and row["details"]["command"] == "grant" and row["linked"]
    assert any("tried /grant" in r.getMessage() for r in caplog.records)
    assert "admins only" in (await env.ask(7, "/stats")).text
    assert not (await env.store.get(5)).has_active_plan(datetime.now(UTC))
    assert await env.postgres.fetchval("SELECT count(*) FROM subscriptions") == 0


async def test_admin_grant_and_revoke(env: Env) -> None:
    await env.ask(5, "/start", language_code="ru")
    assert not (await env.store.get(5)).receives_alerts(datetime.now(UTC))

    reply = await env.ask(ADMIN, "/grant 5 30")
    assert "Granted 30 days" in reply.text and "active until" in reply.text
    subscriber = await env.store.get(5)
    now = datetime.now(UTC)
    assert subscriber.receives_alerts(now)
    assert timedelta(days=29) < subscriber.plan_expires_at - now <= timedelta(days=30)
    notice = await env.server.wait_for_sent(lambda r: r.chat_id == 5 and "🎁" in r.body, timeout=REPLY_TIMEOUT)
    assert "тариф активен" in notice[0].text  # in the user's language
    assert await env.postgres.fetchval("SELECT action FROM activity_log WHERE actor_telegram_id = $1", ADMIN) == "grant"

    for bad in ("/grant 5", "/grant abc 30", "/grant 5 0", "/grant 5 3651", "/grant -5 30"):
        assert "/grant USER_ID DAYS" in (await env.ask(ADMIN, bad)).text
    assert "unknown" in (await env.ask(ADMIN, "/grant 4242 3")).text

    assert "Revoked" in (await env.ask(ADMIN, "/revoke 5")).text
    assert not (await env.store.get(5)).receives_alerts(datetime.now(UTC))
    assert "no active plan" in (await env.ask(ADMIN, "/revoke 5")).text


async def test_russian_user_gets_russian_replies(env: Env) -> None:
    assert "Добро пожаловать" in (await env.ask(9, "/start", language_code="ru")).text
    assert "Фильтры не заданы" in (await env.ask(9, "/filters", language_code="ru")).text
    reply = await env.ask(9, "/set min_mcap lots", language_code="ru")
    assert "Ничего не сохранено" in reply.text and "сумма в USD" in reply.text
    assert "Сохранено: min_mcap = $50K" in (await env.ask(9, "/set min_mcap 50k", language_code="ru")).text
    assert "только для администраторов" in (await env.ask(9, "/grant 9 1", language_code="ru")).text


async def test_banned_user_gets_no_answer(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    await env.ask(8, "/start")
    await env.store.set_status(8, "banned")
    assert await env.postgres.fetchval("SELECT status FROM users WHERE telegram_id = 8") == "banned"
    with caplog.at_level(logging.INFO, logger="alertbot.subscribers"):
        env.server.inject_message(8, "/filters")
        # Once the drop is logged the update is over: no answer can follow it.
        async with asyncio.timeout(REPLY_TIMEOUT):
            while not any("banned user 8" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)
    assert len(env.server.messages_to(8)) == 1  # only the welcome
    await env.store.set_status(8, "active")
    assert "no filters" in (await env.ask(8, "/filters")).text


async def test_stores_down_still_answers(env: Env) -> None:
    await env.postgres.close()
    reply = await env.ask(11, "/start")  # unknown user, PostgreSQL down: welcomed anyway
    assert "Welcome" in reply.text
    assert "cannot be reached" in (await env.ask(11, "/filters")).text
    assert "cannot be reached" in (await env.ask(11, "/set min_mcap 5k")).text
    assert "Nothing was saved" in (await env.ask(11, "/set min_mcap lots")).text


def test_every_text_exists_in_every_language() -> None:
    keys = {language: set(table) for language, table in TEXTS.items()}
    assert keys["en"] == keys["ru"]
    assert {f"accepted_{name}" for name in FILTER_SPECS} <= keys["en"]
    assert all(TEXTS["ru"][key].strip() for key in keys["ru"])


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def test_filter_screens_stay_within_4096_whatever_the_channel_lists(env: Env) -> None:
    """200 channels of the longest usernames in each list (more than /set takes; a preset or an
    older version could have stored them): the lists are shortened with a count, and /filters,
    /status and /settings each stay one message Telegram accepts."""
    await env.ask(7, "/start")
    channels = frozenset(f"@{'a' * 27}{i:04d}" for i in range(200))
    excluded = frozenset(f"@{'x' * 27}{i:04d}" for i in range(200))
    filters = Filters(
        min_mcap=50_000,
        max_mcap=2_000_000,
        min_liquidity=10_000,
        min_holders=100,
        max_age=120,
        min_win_rate=40,
        min_avg_gain=2,
        channels=channels,
        exclude_channels=excluded,
        min_channels=2,
    )
    await env.store.update_filters(7, filters, name="channels")
    for command, title in (("/filters", "Your filters"), ("/status", "Your status"), ("/settings", "Your filters")):
        reply = await env.ask(7, command)
        assert reply.text is not None and title in reply.text, (command, reply.text)
        assert utf16_units(reply.text) <= 4096, command
        shortened = re.findall(r"… \(\+(\d+)\)", reply.text)
        assert len(shortened) == 2, command  # both lists, each with how many more it holds
        assert all(0 < int(more) < 200 for more in shortened)
        assert f"{sorted(channels)[0]}, " in reply.text and "min_channels = 2" in reply.text
    # The buttons of the Filters screen say little more than the label.
    labels = [b["text"] for row in reply.reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    assert all(utf16_units(label) <= 64 for label in labels), labels
