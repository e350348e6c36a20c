"""Presets end to end (FakeTelegramServer <- a real Dispatcher -> SubscriberStore and PresetStore on
real Redis and PostgreSQL), the stores on their own, and the pure definition parser."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bot.callbacks import MenuCB, PresetCB
from domain.filters import Filters, set_filter
from services.cache import CacheRegistry
from services.presets import (
    Preset,
    PresetDefinitionError,
    PresetStore,
    parse_preset_definition,
    preset_definition,
)
from services.sender import Lane, OutgoingMessage
from services.subscribers import RETRY_KEY, SubscriberStore, subscriber_key
from standins.telegram import SentRecord
from tests import bot_env
from tests.bot_env import ADMIN, REPLY_TIMEOUT, StoreEnv
from tests.conftest import Stores

pytestmark = pytest.mark.timeout(60)

SAFE_CHANGE = (
    "/setpreset safe min_mcap=250k max_mcap=10m min_liquidity=30k min_holders=300 "
    "min_win_rate=50 min_avg_gain=2 min_channels=2"
)


class Env(StoreEnv):
    async def press(self, user_id: int, on: SentRecord, data: str) -> SentRecord:
        """Press the button `data` under the bot's message `on`; returns the next message sent to
        the user, once the press is answered too."""
        before = len(self.server.messages_to(user_id))
        update_id = self.server.inject_callback(user_id, on.message_id, data)
        query_id = self.server.callback_query_id_of(update_id)
        replies = await self.server.wait_for_sent(
            lambda record: record.chat_id == user_id, count=before + 1, timeout=REPLY_TIMEOUT
        )
        await self.server.wait_for(
            lambda: any(a.callback_query_id == query_id for a in self.server.answered_callbacks),
            REPLY_TIMEOUT,
            description="the callback answer",
        )
        return replies[before]

    async def notice(self, user_id: int, needle: str) -> SentRecord:
        """The notice the sender delivers to `user_id` (queued by an admin's command), once it came."""
        (record,) = await self.server.wait_for_sent(
            lambda r: r.chat_id == user_id and needle in r.text, timeout=REPLY_TIMEOUT
        )
        return record

    async def settled(self, user_id: int) -> list[SentRecord]:
        """Every message to `user_id`, once whatever was queued for them has gone: the sender keeps
        a chat's messages in order, so a marker queued now comes after all of it."""
        marker = f"marker {len(self.server.sent)}"
        self.sender.submit(OutgoingMessage(user_id, marker, lane=Lane.ADMIN))
        await self.notice(user_id, marker)
        return [r for r in self.server.messages_to(user_id) if not r.text.startswith("marker ")]

    async def follow(self, user_id: int, code: str, *, language_code: str = "en") -> SentRecord:
        listing = await self.ask(user_id, "/presets", language_code=language_code)
        return await self.press(user_id, listing, PresetCB(action="follow", code=code).pack())

    async def pg_settings(self, telegram_id: int) -> tuple[dict[str, Any], str | None]:
        row = await self.postgres.fetchrow(
            "SELECT s.filters, s.preset_code FROM user_settings s JOIN users u ON u.id = s.user_id"
            " WHERE u.telegram_id = $1",
            telegram_id,
        )
        return row["filters"], row["preset_code"]

    async def history(self, telegram_id: int) -> list[tuple[Any, ...]]:
        rows = await self.postgres.fetch(
            """SELECT h.name, h.old_value, h.new_value, h.source FROM settings_history h
               JOIN users u ON u.id = h.user_id WHERE u.telegram_id = $1 ORDER BY h.id""",
            telegram_id,
        )
        return [tuple(row) for row in rows]

    async def preset(self, code: str) -> Preset:
        preset = await PresetStore(self.postgres).get(code)
        assert preset is not None
        return preset


@asynccontextmanager
async def running_bot(stores: Stores, **options: Any) -> AsyncIterator[Env]:
    async with bot_env.running_bot(stores, **options) as running:
        yield Env.of(running)


@pytest.fixture
async def env(stores: Stores) -> AsyncIterator[Env]:
    async with running_bot(stores) as running:
        yield running


# ------------------------------------------------------------------ users: list, apply, follow


async def test_apply_button_replaces_filters_with_the_preset(env: Env) -> None:
    await env.ask(7, "/set min_holders 5")
    listing = await env.ask(7, "/presets")
    assert all(title in listing.text for title in ("Safe", "Balanced", "Degen"))
    assert "min_liquidity = $10K" in listing.text  # each preset's filters are listed
    assert MenuCB(screen="main").pack() in listing.callback_data

    result = await env.press(7, listing, PresetCB(action="apply", code="balanced").pack())
    balanced = await env.preset("balanced")
    assert "Balanced" in result.text and "min_mcap = $30K" in result.text and "max_age = 1d" in result.text
    assert (await env.store.get(7)).filters == balanced.filters
    assert json.loads(await env.redis.hget(subscriber_key(7), "filters")) == balanced.filters.to_dict()
    assert await env.pg_settings(7) == (balanced.filters.to_dict(), None)  # applied, not followed
    assert (await env.history(7))[-1] == ("filters", {"min_holders": 5}, balanced.filters.to_dict(), "preset")
    # Applying again changes nothing, so nothing more is written.
    listing = await env.ask(7, "/presets")
    await env.press(7, listing, PresetCB(action="apply", code="balanced").pack())
    assert len(await env.history(7)) == 2


async def test_menu_button_edits_the_message_into_the_presets_screen(env: Env) -> None:
    shown = await env.ask(7, "/filters")
    update_id = env.server.inject_callback(7, shown.message_id, MenuCB(screen="presets").pack(), check_button=False)
    query_id = env.server.callback_query_id_of(update_id)
    await env.server.wait_for(
        lambda: any(a.callback_query_id == query_id for a in env.server.answered_callbacks), REPLY_TIMEOUT
    )
    # The press is answered first; the screen follows.
    await env.server.wait_for(lambda: any(record.chat_id == 7 for record in env.server.edits), REPLY_TIMEOUT)
    edited = [record for record in env.server.edits if record.chat_id == 7]
    assert edited and "Presets" in edited[-1].text and "Degen" in edited[-1].text
    assert PresetCB(action="follow", code="degen").pack() in edited[-1].callback_data
    assert len(env.server.messages_to(7)) == 1  # edited in place, nothing new sent


async def test_follow_then_admin_change_reaches_followers_in_their_language(env: Env) -> None:
    reply = await env.follow(21, "safe", language_code="ru")
    assert "Вы подписаны на пресет" in reply.text
    await env.follow(22, "safe")
    listing = await env.ask(23, "/presets")
    await env.press(23, listing, PresetCB(action="apply", code="safe").pack())  # applied, not followed
    old_safe = await env.preset("safe")
    assert (await env.store.get(21)).preset == "safe"
    assert await env.pg_settings(22) == (old_safe.filters.to_dict(), "safe")
    # The followed preset is marked, with an Unfollow button in place of Follow.
    listing = await env.ask(22, "/presets")
    assert "you follow this preset" in listing.text
    assert PresetCB(action="unfollow", code="safe").pack() in listing.callback_data
    before_23 = len(env.server.messages_to(23))

    reply = await env.ask(ADMIN, SAFE_CHANGE)
    assert "Followers updated and notified: 2" in reply.text and "min_mcap = $250K" in reply.text
    new_safe = await env.preset("safe")
    assert new_safe.title == "Safe" and new_safe.description == old_safe.description  # kept
    assert new_safe.filters == old_safe.filters.with_value("min_mcap", 250_000.0)

    ru_notice = (await env.notice(21, "Администратор изменил пресет")).text
    assert "min_mcap = $250K" in ru_notice
    en_notice = (await env.notice(22, "An admin changed the preset")).text
    assert "min_mcap = $250K" in en_notice
    for follower in (21, 22):
        assert (await env.store.get(follower)).filters == new_safe.filters
        assert await env.pg_settings(follower) == (new_safe.filters.to_dict(), "safe")
        assert (await env.history(follower))[-1] == (
            "filters",
            old_safe.filters.to_dict(),
            new_safe.filters.to_dict(),
            "preset",
        )
    # The user who only applied it keeps the old filters and hears nothing.
    assert (await env.store.get(23)).filters == old_safe.filters
    assert len(await env.settled(23)) == before_23

    # The same definition again finds everyone in step: nobody is told twice.
    assert "Followers updated and notified: 0" in (await env.ask(ADMIN, SAFE_CHANGE)).text
    assert (await env.settled(21))[-1].text == ru_notice


async def test_manual_set_stops_following(env: Env) -> None:
    await env.follow(7, "balanced")
    assert "Saved" in (await env.ask(7, "/set min_mcap 40k")).text
    balanced = await env.preset("balanced")
    subscriber = await env.store.get(7)
    assert subscriber.preset is None and subscriber.filters == balanced.filters.with_value("min_mcap", 40_000.0)
    assert await env.redis.hget(subscriber_key(7), "preset") == ""
    assert await env.pg_settings(7) == (subscriber.filters.to_dict(), None)
    assert (await env.history(7))[-2:] == [
        ("min_mcap", 30000.0, 40000.0, "command"),
        ("preset", "balanced", None, "command"),
    ]

    # The admin's next change of the preset leaves the user's own filters alone.
    before = len(env.server.messages_to(7))
    reply = await env.ask(ADMIN, "/setpreset balanced min_mcap=35k max_mcap=2m min_liquidity=10k")
    assert "Followers updated and notified: 0" in reply.text
    assert (await env.store.get(7)).filters == subscriber.filters
    assert len(await env.settled(7)) == before


async def test_unfollow_button_keeps_the_filters(env: Env) -> None:
    await env.follow(7, "degen")
    degen = await env.preset("degen")
    listing = await env.ask(7, "/presets")
    reply = await env.press(7, listing, PresetCB(action="unfollow", code="degen").pack())
    assert "no longer follow" in reply.text
    subscriber = await env.store.get(7)
    assert subscriber.preset is None and subscriber.filters == degen.filters
    assert await env.pg_settings(7) == (degen.filters.to_dict(), None)
    assert (await env.history(7))[-1] == ("preset", "degen", None, "menu")
    # The screen it was pressed on now offers Follow again.
    edited = [record for record in env.server.edits if record.message_id == listing.message_id]
    assert PresetCB(action="follow", code="degen").pack() in edited[-1].callback_data


async def test_apply_keeps_the_followed_preset_and_ends_following_another(env: Env) -> None:
    await env.follow(7, "safe")
    listing = await env.ask(7, "/presets")
    await env.press(7, listing, PresetCB(action="apply", code="safe").pack())
    assert (await env.store.get(7)).preset == "safe"  # pressing Apply on it is no unfollow
    await env.press(7, listing, PresetCB(action="apply", code="degen").pack())
    subscriber = await env.store.get(7)
    assert subscriber.preset is None and subscriber.filters == (await env.preset("degen")).filters
    assert await env.pg_settings(7) == (subscriber.filters.to_dict(), None)


async def test_admin_creates_and_deletes_a_preset(env: Env) -> None:
    reply = await env.ask(
        ADMIN, '/setpreset whales "Whales only" "Big caps, many holders" min_mcap=1m min_holders=1000'
    )
    assert "created" in reply.text and "min_mcap = $1M" in reply.text
    whales = await env.preset("whales")
    assert (whales.title, whales.description) == ("Whales only", "Big caps, many holders")
    assert whales.sort_order > (await env.preset("degen")).sort_order  # listed last
    assert await env.postgres.fetchval("SELECT updated_by FROM presets WHERE code = 'whales'") == ADMIN

    await env.follow(7, "whales", language_code="ru")
    reply = await env.ask(ADMIN, "/delpreset whales")
    assert "deleted" in reply.text and "1" in reply.text
    notice = (await env.notice(7, "удалён")).text
    assert "Whales only" in notice
    subscriber = await env.store.get(7)
    assert subscriber.preset is None and subscriber.filters == whales.filters  # filters kept
    assert await env.pg_settings(7) == (whales.filters.to_dict(), None)
    assert await env.postgres.fetchval("SELECT count(*) FROM presets WHERE code = 'whales'") == 0
    assert "no preset" in (await env.ask(ADMIN, "/delpreset whales")).text
    assert "/delpreset CODE" in (await env.ask(ADMIN, "/delpreset")).text
    actions = await env.postgres.fetch("SELECT action FROM activity_log WHERE actor_telegram_id = $1", ADMIN)
    assert {row["action"] for row in actions} == {"preset_set", "preset_deleted"}


async def test_notices_go_through_the_sender(stores: Stores) -> None:
    async with running_bot(stores, paced=True) as env:
        await env.follow(21, "safe", language_code="ru")
        assert env.sender.stats()["sent"] == 0
        assert "Followers updated and notified: 1" in (await env.ask(ADMIN, SAFE_CHANGE)).text
        (notice,) = await env.server.wait_for_sent(
            lambda r: "Администратор изменил пресет" in r.body, timeout=REPLY_TIMEOUT
        )
        assert notice.chat_id == 21 and "$250K" in notice.text
        assert env.sender.stats()["sent"] == 1  # queued in the sender (admin lane), not sent by the handler


# ------------------------------------------------------------------ bad input, non-admins


async def test_bad_setpreset_is_explained_and_saves_nothing(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    async def presets_now() -> list[tuple[Any, ...]]:
        rows = await env.postgres.fetch(
            "SELECT code, title, description, filters, updated_at FROM presets ORDER BY code"
        )
        return [tuple(row) for row in rows]

    before = await presets_now()
    cases = {
        '/setpreset safe "Safe" min_mcap=lots': "min_mcap takes a USD amount",
        '/setpreset safe "Safe" bogus=1': "unknown filter 'bogus'",
        '/setpreset safe "Safe" min_mcap=2m max_mcap=1m': "min_mcap must not be above max_mcap",
        '/setpreset safe "Safe"': "at least one filter",
        "/setpreset safe Safe min_mcap=5k": "not NAME=VALUE",
        '/setpreset Bad-Code "X" min_mcap=5k': "is not a preset code",
        '/setpreset safe "Safe min_mcap=5k': "quote is not closed",
        "/setpreset fresh min_mcap=5k": "needs a title",
        '/setpreset safe "<b>x</b>" min_holders=<b>': "min_holders takes",
    }
    for command, reason in cases.items():
        reply = await env.ask(ADMIN, command)
        assert reason in reply.text and "Nothing was saved" in reply.text, (command, reply.text)
        assert "/setpreset CODE" in reply.text
    usage = await env.ask(ADMIN, "/setpreset")
    assert "/setpreset CODE" in usage.text and '/setpreset degen "Degen"' in usage.text  # copyable
    assert await presets_now() == before

    # Someone who is not an admin is refused, and the attempt logged.
    await env.follow(7, "safe")
    with caplog.at_level(logging.WARNING, logger="alertbot.admin"):
        assert "admins only" in (await env.ask(7, SAFE_CHANGE)).text
        assert "admins only" in (await env.ask(7, "/delpreset safe")).text
    assert any("tried /setpreset" in record.getMessage() for record in caplog.records)
    refused = await env.postgres.fetch(
        "SELECT details FROM activity_log WHERE actor_telegram_id = 7 AND action = 'admin_refused' ORDER BY id"
    )
    assert [row["details"]["command"] for row in refused] == ["setpreset", "delpreset"]
    assert await presets_now() == before
    assert (await env.store.get(7)).filters == (await env.preset("safe")).filters


# ------------------------------------------------------------------ the stores on their own


async def test_preset_store_upsert_list_and_followers(stores: Stores) -> None:
    presets = PresetStore(stores.postgres)
    assert [p.code for p in await presets.list()] == ["safe", "balanced", "degen"]
    old, new = await presets.upsert(
        "degen", title=None, description="Changed", filters=Filters(max_age=30), updated_by=ADMIN
    )
    assert old is not None and old.title == new.title == "Degen" and new.description == "Changed"
    assert new.filters == Filters(max_age=30)
    assert (await presets.list())[-1] == new  # the store's own change shows at once
    with pytest.raises(ValueError, match="title"):
        await presets.upsert("nameless", title=None, description=None, filters=Filters(max_age=5), updated_by=ADMIN)
    assert await presets.get("nameless") is None and await presets.get("BAD CODE") is None

    store = SubscriberStore(stores.redis, stores.postgres, stores.caches, frozenset({ADMIN}))
    for telegram_id in (5, 6, 7):
        await store.register(telegram_id, username=None, first_name=None, language_code="en")
    await store.apply_filters(6, new.filters, source="preset", preset="degen")
    await store.apply_filters(5, new.filters, source="preset", preset="degen")
    assert await presets.followers("degen") == [5, 6]
    assert await presets.delete("degen") == new
    assert await presets.followers("degen") == []
    # PostgreSQL let go of the deleted preset (ON DELETE SET NULL); the filters stay.
    assert (
        await stores.postgres.fetchval(
            "SELECT count(*) FROM user_settings WHERE preset_code IS NULL AND filters = $1", {"max_age": 30}
        )
        == 2
    )
    assert await presets.delete("degen") is None


async def test_seeded_presets_are_filters_set_would_make(stores: Stores) -> None:
    rows = await stores.postgres.fetch("SELECT code, filters FROM presets")
    assert {row["code"] for row in rows} == {"safe", "balanced", "degen"}
    for row in rows:
        filters = Filters.from_dict(row["filters"])
        assert filters.to_dict() == row["filters"]  # stored exactly as Filters.to_dict() writes
        preset = await PresetStore(stores.postgres).get(row["code"])
        assert preset is not None
        # ...and as an admin could have typed them.
        assert parse_preset_definition(preset_definition(preset)).filters == filters


async def test_following_survives_a_postgres_outage(stores: Stores) -> None:
    store = SubscriberStore(stores.redis, stores.postgres, stores.caches, frozenset({ADMIN}))
    await store.register(7, username=None, first_name=None, language_code="en")
    safe = await PresetStore(stores.postgres).get("safe")
    assert safe is not None
    await stores.postgres.close()
    saved = await store.apply_filters(7, safe.filters, source="preset", preset="safe")
    assert saved.preset == "safe" and await stores.redis.hget(subscriber_key(7), "preset") == "safe"
    assert await stores.redis.client.llen(RETRY_KEY) == 1
    await stores.postgres.start()
    assert await store.flush_pending() == 1
    row = await stores.postgres.fetchrow(
        "SELECT s.filters, s.preset_code FROM user_settings s JOIN users u ON u.id = s.user_id WHERE u.telegram_id = 7"
    )
    assert (row["filters"], row["preset_code"]) == (safe.filters.to_dict(), "safe")
    names = await stores.postgres.fetch("SELECT name, source FROM settings_history ORDER BY id")
    assert [tuple(r) for r in names] == [("filters", "preset"), ("preset", "preset")]
    # Another process reads the followed preset back from PostgreSQL when Redis lost the hash.
    await stores.redis.delete(subscriber_key(7))
    other = SubscriberStore(stores.redis, stores.postgres, CacheRegistry(stores.redis), frozenset({ADMIN}))
    assert (await other.get(7)).preset == "safe"


# ------------------------------------------------------------------ the definition parser (pure)


def test_parse_a_full_definition() -> None:
    parsed = parse_preset_definition('safe "Safe" min_mcap=50k min_liquidity=15k min_win_rate=45')
    assert (parsed.code, parsed.title, parsed.description) == ("safe", "Safe", None)
    assert parsed.filters == Filters(min_mcap=50_000.0, min_liquidity=15_000.0, min_win_rate=45.0)

    parsed = parse_preset_definition(
        'Mid_1  “Mid caps”  «Two channels at least»  max_age=2h channels="@Alpha, -1001" min_channels=2'
    )
    assert (parsed.code, parsed.title, parsed.description) == ("mid_1", "Mid caps", "Two channels at least")
    assert parsed.filters == Filters(max_age=120, channels=frozenset({"@alpha", "-1001"}), min_channels=2)

    # No title: the preset's own is kept (the store decides; a new preset needs one).
    assert parse_preset_definition("degen max_mcap=300k").title is None


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ("", "empty"),
        ("way_too_long_code_for_presets_here min_mcap=1", "not a preset code"),
        ("bad-code min_mcap=1", "not a preset code"),
        ('safe "Safe"', "at least one filter"),
        ('safe "Safe" min_mcap=50k min_mcap=60k', "given twice"),
        ('safe "Safe" min_mcap=', "has no value"),
        ('safe "Safe" min_mcap=lots', "min_mcap takes a USD amount"),
        ('safe "Safe" nope=1', "unknown filter 'nope'"),
        ('safe "Safe" min_mcap=2m max_mcap=1m', "min_mcap must not be above max_mcap"),
        ('safe "Safe" 50k', "not NAME=VALUE"),
        ("safe Safe min_mcap=5k", 'title goes in "double quotes"'),
        ('safe "Safe" min_mcap=5k "late"', "before the filters"),
        ('safe "A" "B" "C" min_mcap=5k', "only a"),
        ('safe "" min_mcap=5k', "title must be 1 to 64"),
        (f'safe "{"x" * 65}" min_mcap=5k', "title must be 1 to 64"),
        (f'safe "Safe" "{"x" * 301}" min_mcap=5k', "description must be at most 300"),
        ('safe "Safe min_mcap=5k', "quote is not closed"),
    ],
)
def test_parse_rejects_with_a_reason(definition: str, message: str) -> None:
    with pytest.raises(PresetDefinitionError) as info:
        parse_preset_definition(definition)
    assert message in str(info.value)


def test_definition_round_trips() -> None:
    filters = Filters()
    for name, value in (
        ("min_mcap", "1.5m"),
        ("min_avg_gain", "2.5x"),
        ("exclude_channels", "@rugs, -100999"),
        ("max_age", "90"),
        ("min_win_rate", "42.5"),
    ):
        filters = set_filter(filters, name, value)
    preset = Preset("mix", "Mixed bag", "All sorts", filters)
    parsed = parse_preset_definition(preset_definition(preset))
    assert (parsed.code, parsed.title, parsed.description, parsed.filters) == (
        preset.code,
        preset.title,
        preset.description,
        preset.filters,
    )
