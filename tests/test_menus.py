"""Subscriber experience through the Telegram double: /start and its deep links, the main menu,
filters set by pressing the buttons the bot sent, the value flow, /status, /language, /plans,
/privacy with delete-my-data, /paysupport, stale buttons and flood throttling."""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from aiogram.fsm.state import default_state
from aiogram.fsm.storage.base import StorageKey

from bot.callbacks import (
    MAX_CALLBACK_BYTES,
    AdminCB,
    BroadcastCB,
    FilterCB,
    LanguageCB,
    MenuCB,
    PayCB,
    PlanCB,
    PresetCB,
    PrivacyCB,
)
from bot.fsm_storage import SESSION_TTL_SECONDS, ManagedRedisStorage, fsm_keys
from bot.keyboards import MAIN_SCREENS
from bot.middlewares.throttling import FloodGate
from bot.routers.account import paysupport_key
from bot.runtime import ADMIN_MENU_COMMANDS, MENU_COMMANDS
from bot.texts import TEXTS
from domain.filters import FILTER_SPECS, REASON_KINDS, FilterValueError
from managers.redis_manager import RedisManager
from payments.records import NoticeKind
from payments.sol_verify import Verdict
from services.accounts import parse_start_payload
from services.cache import CacheRegistry
from services.subscribers import SUBSCRIBERS_KEY, subscriber_key
from standins.tcp_proxy import TcpProxy
from standins.telegram import ManualClock
from tests.bot_env import ADMIN, REPLY_TIMEOUT, BotEnv, running_bot
from tests.conftest import Stores
from tests.test_redis_manager import FAST

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent


def t(key: str, language: str) -> str:
    """A text as the user sees it: tags removed (the double strips markup), no placeholders."""
    return re.sub(r"<[^>]+>", "", TEXTS[language][key])


@pytest.fixture
async def env(stores: Stores) -> AsyncIterator[BotEnv]:
    async with running_bot(stores) as running:
        yield running


async def pg_filters(env: BotEnv, telegram_id: int) -> dict[str, object]:
    return await env.stores.postgres.fetchval(
        "SELECT s.filters FROM user_settings s JOIN users u ON u.id = s.user_id WHERE u.telegram_id = $1", telegram_id
    )


# ------------------------------------------------------------------------------ the main flow


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_new_user_sets_filters_by_buttons(env: BotEnv, language: str) -> None:
    chat = env.chat(21, language)
    welcome = await chat.ask("/start")
    assert t("menu_title", language).splitlines()[0] in welcome.text
    labels = chat.screen(welcome.message_id).labels()
    trial = TEXTS[language]["button_trial"].format(days=3)  # a new user is offered the trial first
    assert labels == [trial, *(TEXTS[language][f"menu_{screen}"] for screen in MAIN_SCREENS)]

    screen = await chat.press(TEXTS[language]["menu_filters"])
    assert t("filters_none", language) in screen.text
    assert TEXTS[language]["label_min_mcap"] in screen.labels()

    prompt = await chat.press(TEXTS[language]["label_min_mcap"])  # the screen becomes the question
    assert prompt.message_id == screen.message_id
    assert "min_mcap" in prompt.text and TEXTS[language]["accepted_min_mcap"] in prompt.text
    shown = await chat.ask("50k")  # saved, and the screen again below it, in one message
    assert "min_mcap = $50K" in shown.text and t("filters_screen_hint", language) in shown.text
    assert f"{TEXTS[language]['label_min_mcap']}: $50K" in chat.screen(shown.message_id).labels()

    await chat.press(TEXTS[language]["label_min_win_rate"])
    saved = await chat.ask("40")
    assert "min_win_rate = 40%" in saved.text

    listed = await chat.ask("/filters")
    assert t("filters_title", language) in listed.text
    assert "min_mcap = $50K" in listed.text and "min_win_rate = 40%" in listed.text
    assert await pg_filters(env, 21) == {"min_mcap": 50000.0, "min_win_rate": 40.0}
    rows = await env.stores.postgres.fetch("SELECT name, source FROM settings_history ORDER BY id")
    assert [(r["name"], r["source"]) for r in rows] == [("min_mcap", "menu"), ("min_win_rate", "menu")]


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_wrong_value_in_the_flow_saves_nothing_and_keeps_waiting(env: BotEnv, language: str) -> None:
    chat = env.chat(22, language)
    await chat.ask("/start")
    await chat.press(TEXTS[language]["menu_filters"])
    await chat.press(TEXTS[language]["label_min_holders"])

    error = await chat.ask("lots")
    assert "lots" in error.text
    assert t("reason_whole_number", language).format(minimum=0, maximum=10_000_000) in error.text
    assert TEXTS[language]["accepted_min_holders"] in error.text
    assert t("flow_try_again", language) in error.text
    assert await pg_filters(env, 22) == {}
    assert json.loads(await env.stores.redis.hget(subscriber_key(22), "filters")) == {}
    assert await env.stores.postgres.fetchval("SELECT count(*) FROM settings_history") == 0

    # Still waiting: the next message is taken as the value, no button needed.
    state_key = fsm_keys(22, 22)[0]
    assert await env.stores.redis.get(state_key) == "SettingsFlow:value"
    assert SESSION_TTL_SECONDS - 60 < await env.stores.redis.ttl(state_key) <= SESSION_TTL_SECONDS
    saved = await chat.ask("150")
    assert "min_holders = 150" in saved.text
    assert await pg_filters(env, 22) == {"min_holders": 150}
    assert await env.stores.redis.get(state_key) is None


async def test_commands_still_work_during_the_flow_and_cancel(env: BotEnv) -> None:
    chat = env.chat(23)
    await chat.ask("/start")
    await chat.press("Filters")
    await chat.press("Max token age")
    listed = await chat.ask("/filters")  # a command is a command, not a value
    assert "no filters" in listed.text
    pressed = await chat.press("Cancel")  # the question turns back into the Filters screen
    assert chat.last_toast() == "Nothing changed."
    assert "Max token age" in pressed.labels() and "no filters" in pressed.text
    assert await env.stores.redis.get(fsm_keys(23, 23)[0]) is None


async def test_one_tap_resets(env: BotEnv) -> None:
    chat = env.chat(24)
    await chat.ask("/set min_holders 100")
    await chat.ask("/set max_age 2h")
    await chat.ask("/settings")
    await chat.press("Min holders")
    screen = await chat.press("Remove this filter")
    assert screen.text.startswith("✅ Removed: min_holders")
    assert "max_age = 2h" in screen.text and "min_holders =" not in screen.text
    assert await pg_filters(env, 24) == {"max_age": 120}

    screen = await chat.press("Reset all filters")
    assert "All filters removed" in screen.text
    assert "no filters" in screen.text
    assert await pg_filters(env, 24) == {}
    sources = await env.stores.postgres.fetch("SELECT source FROM settings_history ORDER BY id")
    assert [r["source"] for r in sources] == ["command", "command", "menu", "menu"]


# ------------------------------------------------------------------------------ account screens


async def test_start_links_credit_the_referrer_and_open_plans(env: BotEnv) -> None:
    inviter = env.chat(31)
    await inviter.ask("/start")
    status = await inviter.ask("/status")
    code = re.search(r"start=ref_([a-z0-9]+)", status.text).group(1)  # type: ignore[union-attr]
    assert "(0 joined)" in status.text

    friend = env.chat(32)
    await friend.say(f"/start ref_{code}")
    referred_by = "SELECT r.telegram_id FROM users u JOIN users r ON r.id = u.referred_by WHERE u.telegram_id = $1"
    assert await env.stores.postgres.fetchval(referred_by, 32) == 31
    assert "(1 joined)" in (await inviter.ask("/status")).text

    # Only on first contact, and never oneself.
    late = env.chat(33)
    await late.ask("/start")
    await late.ask(f"/start ref_{code}")
    await inviter.ask(f"/start ref_{code}")
    assert await env.stores.postgres.fetchval(referred_by, 33) is None
    assert await env.stores.postgres.fetchval(referred_by, 31) is None

    welcome, card = await env.chat(34).say("/start plan_month", replies=2)
    assert "Welcome" in welcome.text
    assert "1 month" in card.text and "30 days" in card.text and "750 ⭐" in card.text and "0.09 SOL" in card.text
    _, listing = await env.chat(35).say("/start plan_nosuch", replies=2)
    assert "nosuch" in listing.text and "1 week" in listing.text and "3 months" in listing.text
    assert parse_start_payload("garbage") is None and parse_start_payload("ref_A;drop") is None
    assert "Welcome" in (await env.chat(36).ask("/start garbage")).text


async def test_status_shows_plan_pause_filters_and_alerts_today(env: BotEnv) -> None:
    chat = env.chat(41, "ru")
    await chat.ask("/start")
    await chat.ask("/set min_mcap 100k")
    await chat.ask("/pause")
    status = await chat.ask("/status")
    assert t("status_plan_none", "ru") in status.text and t("status_alerts_paused", "ru") in status.text
    assert "min_mcap = $100K" in status.text and "Оповещений сегодня: 0" in status.text

    await env.chat(ADMIN).ask("/grant 41 30")
    await env.server.wait_for(  # the user's notice of the grant comes through the sender
        lambda: any("Вам выдано" in (r.text or "") for r in chat.sent()), 10, description="the grant notice"
    )
    postgres = env.stores.postgres
    await postgres.execute("INSERT INTO tokens (address) VALUES ('tok1'), ('tok2')")
    await postgres.execute(
        "INSERT INTO alerts (user_id, token_address, created_at) SELECT id, t, now() FROM users, "
        "unnest(ARRAY['tok1', 'tok2']) t WHERE telegram_id = 41"
    )
    status = await chat.ask("/status")
    assert "активен до" in status.text and "осталось дней: 30" in status.text
    assert "Оповещений сегодня: 2" in status.text


async def test_language_is_chosen_from_telegram_then_changed(env: BotEnv) -> None:
    chat = env.chat(51, "ru")
    assert "Добро пожаловать" in (await chat.ask("/start")).text
    await chat.ask("/language")
    screen = await chat.press("English")
    assert screen.text.startswith("✅ Language: English")
    assert "Main menu" in screen.text and "🎯 Filters" in screen.labels()
    assert "What I can do" in (await chat.ask("/help")).text
    assert await env.stores.redis.hget(subscriber_key(51), "language") == "en"
    assert await env.stores.postgres.fetchval("SELECT language FROM users WHERE telegram_id = 51") == "en"
    history = await env.stores.postgres.fetchrow("SELECT name, old_value, new_value, source FROM settings_history")
    assert dict(history) == {"name": "language", "old_value": "ru", "new_value": "en", "source": "menu"}
    # A later /start keeps the chosen language even though Telegram still says "ru".
    assert "Welcome" in (await chat.ask("/start")).text


async def test_delete_my_data_removes_rows_and_keys(env: BotEnv) -> None:
    chat = env.chat(61)
    await chat.ask("/start")
    await env.chat(ADMIN).ask("/grant 61 7")
    await env.server.wait_for(lambda: len(chat.sent()) == 2, 10, description="the grant notice")
    await chat.ask("/set min_holders 50")
    await chat.ask("/status")  # makes an invite code
    await chat.press("Back")
    await chat.press("Filters")
    await chat.press("Min market cap")  # a flow in progress: its FSM keys exist
    assert await env.stores.redis.get(fsm_keys(61, 61)[0]) is not None

    user_id = await env.stores.postgres.fetchval("SELECT id FROM users WHERE telegram_id = 61")
    subscriptions = "SELECT count(*) FROM subscriptions WHERE user_id = $1"
    for _ in range(200):  # the plan reaches PostgreSQL through the payments queue, just after Redis
        if await env.stores.postgres.fetchval(subscriptions, user_id):
            break
        await asyncio.sleep(0.05)
    for table in ("user_settings", "settings_history", "subscriptions"):
        assert await env.stores.postgres.fetchval(f"SELECT count(*) FROM {table} WHERE user_id = $1", user_id), table
    privacy = await chat.ask("/privacy")
    assert "What this bot stores" in privacy.text
    confirm = await chat.press("Delete my data")
    assert "cannot be undone" in confirm.text
    done = await chat.press("Yes, delete everything")
    assert "everything the bot kept about you is deleted" in done.text

    postgres, redis = env.stores.postgres, env.stores.redis
    for table in ("user_settings", "settings_history", "subscriptions"):
        assert await postgres.fetchval(f"SELECT count(*) FROM {table} WHERE user_id = $1", user_id) == 0, table
    assert await postgres.fetchval("SELECT count(*) FROM users WHERE telegram_id = 61") == 0
    assert await postgres.fetchval("SELECT count(*) FROM users WHERE telegram_id = $1", ADMIN) == 1
    assert await redis.hgetall(subscriber_key(61)) == {}
    assert not await redis.client.sismember(SUBSCRIBERS_KEY, "61")
    for key in fsm_keys(61, 61):
        assert await redis.get(key) is None
    assert await env.store.get(61) is None

    # Cancel keeps everything; a later /start begins afresh.
    other = env.chat(62)
    await other.ask("/privacy")
    await other.press("Delete my data")
    assert "Nothing was deleted" in (await other.press("Cancel")).text
    assert await env.store.get(62) is not None
    assert "Welcome" in (await chat.ask("/start")).text
    assert await pg_filters(env, 61) == {}


async def test_paysupport_reaches_the_admins(env: BotEnv) -> None:
    chat = env.chat(71)
    assert "/paysupport" in (await chat.ask("/paysupport")).text
    reply = await chat.ask("/paysupport paid 0.09 SOL <b>no plan</b>")
    assert "Sent to the team" in reply.text
    (forwarded,) = await env.server.wait_for_sent(
        lambda r: r.chat_id == ADMIN and "paid 0.09 SOL <b>no plan</b>" in r.text, timeout=REPLY_TIMEOUT
    )
    assert "71" in forwarded.text


async def test_a_second_paysupport_within_a_minute_is_refused_politely(env: BotEnv) -> None:
    chat = env.chat(77)
    assert "Sent to the team" in (await chat.ask("/paysupport first: paid, no plan")).text
    forwarded = [r.text for r in await env.server.wait_for_sent(lambda r: r.chat_id == ADMIN, REPLY_TIMEOUT)]
    assert len(forwarded) == 1 and "first: paid, no plan" in forwarded[0]

    refused = await chat.ask("/paysupport second: still nothing")
    assert "less than a minute ago" in refused.text
    wait = int(re.search(r"write again in (\d+) s", refused.text).group(1))  # type: ignore[union-attr]
    assert 0 < wait <= 60
    # The minute is the user's own, kept in Redis; when it has passed they may write again.
    assert "Sent to the team" in (await env.chat(78).ask("/paysupport mine")).text
    # The sender keeps one chat's messages in order: a forwarded "second" would come before "mine".
    second = await env.server.wait_for_sent(lambda r: r.chat_id == ADMIN, REPLY_TIMEOUT, count=2)
    assert "mine" in second[1].text and "still nothing" not in second[1].text
    russian = env.chat(79, "ru")
    await russian.ask("/paysupport первое")
    assert "Написать снова можно через" in (await russian.ask("/paysupport второе")).text
    assert 0 < await env.stores.redis.ttl(paysupport_key(77)) <= 60
    await env.stores.redis.delete(paysupport_key(77))
    assert "Sent to the team" in (await chat.ask("/paysupport third: sorted, thanks")).text
    everything = await env.server.wait_for_sent(lambda r: r.chat_id == ADMIN, REPLY_TIMEOUT, count=4)
    assert "third: sorted" in everything[3].text and not any("второе" in r.text for r in everything)


async def test_plans_and_help_screens_from_the_menu(env: BotEnv) -> None:
    chat = env.chat(72)
    await chat.ask("/start")
    plans = await chat.press("Plans")
    assert "1 week" in plans.text and "$15" in plans.text
    card = await chat.press("3 months")
    assert "90 days" in card.text and "2000 ⭐" in card.text
    await chat.press("Back")
    main = await chat.press("Back")
    assert "Main menu" in main.text
    help_screen = await chat.press("Help")
    assert "/privacy" in help_screen.text and "/settings" in help_screen.text


async def test_an_out_of_date_button_gets_the_menu_again(env: BotEnv) -> None:
    chat = env.chat(73)
    welcome = await chat.ask("/start")
    answered = len(env.server.answered_callbacks)
    env.server.inject_callback(73, welcome.message_id, "m0:gone", check_button=False)
    await env.server.wait_for(lambda: len(env.server.answered_callbacks) > answered, 10)
    assert chat.last_toast() == TEXTS["en"]["stale_button"]
    assert "Main menu" in chat.screen(welcome.message_id).text


# ------------------------------------------------------------------------------ throttling


def test_flood_gate_lets_a_burst_through_then_one_notice() -> None:
    clock = ManualClock()
    gate = FloodGate(burst=3, interval=1.0, clock=clock)
    assert [gate.check(1) for _ in range(6)] == ["pass", "pass", "pass", "notice", "drop", "drop"]
    assert gate.check(2) == "pass"  # someone else is not slowed
    clock.advance(1.0)
    assert gate.check(1) == "pass"  # one more a second; the flood is over
    assert gate.check(1) == "notice"  # a new flood gets a new notice
    clock.advance(10)
    assert [gate.check(1) for _ in range(3)] == ["pass"] * 3


async def test_a_flooding_user_gets_one_polite_notice_and_others_are_served(stores: Stores) -> None:
    clock = ManualClock()  # frozen: the flood cannot refill its bucket while the test runs
    async with running_bot(stores, flood_gate=FloodGate(burst=5, interval=1.0, clock=clock)) as env:
        for _ in range(12):
            env.server.inject_message(81, "/help", language_code="ru")
        assert "Что я умею" in (await env.chat(82, "ru").ask("/help")).text
        await env.server.wait_for(lambda: len(env.server.messages_to(81)) >= 6, 10)
        await asyncio.sleep(0.3)  # anything more would have come by now
        texts = [record.text for record in env.server.messages_to(81)]
        assert texts.count(t("throttled", "ru")) == 1
        assert len(texts) == 6 and all("Что я умею" in text for text in texts if text != t("throttled", "ru"))


# ------------------------------------------------------------------------------ static checks


def test_callback_data_fits_telegrams_64_bytes() -> None:
    longest_filter = max(FILTER_SPECS, key=len)
    for data in (
        MenuCB(screen="language"),
        FilterCB(action="reset_all", name=longest_filter),
        PresetCB(action="unfollow", code="x" * 24),
        LanguageCB(code="en"),
        PrivacyCB(action="confirm"),
        PlanCB(code="x" * 40),
        PayCB(action="buy", plan="x" * 40, rail="nowpayments"),
        PayCB(action="monthly", plan="x" * 40),
        PayCB(action="refresh", order="x" * 12),  # order ids are 12 characters (ledger.new_order_id)
        PayCB(action="cancel", order="x" * 12),
        PayCB(action="unsub_ok"),
        AdminCB(action="grant30", user=2**63 - 1),  # the largest user id /user takes
        BroadcastCB(action="aud", id="x" * 8, audience="paying"),  # broadcast ids are 8 characters
    ):
        assert len(data.pack().encode()) <= MAX_CALLBACK_BYTES, data


def _text_keys_used() -> set[str]:
    """Every key the code passes to text(...): literal ones, and f-string families expanded."""
    families = {
        "menu_": MAIN_SCREENS,
        "label_": tuple(FILTER_SPECS),
        "accepted_": tuple(FILTER_SPECS),
        "cmd_": MENU_COMMANDS,
        "admincmd_": ADMIN_MENU_COMMANDS,
        "reason_": REASON_KINDS,
        "notice_": tuple(kind.value for kind in NoticeKind),
        "verdict_": tuple(verdict.value for verdict in Verdict),
        "monitor_previous_": ("first", "clean", "unclean", "unknown"),  # domain.incidents.previous_run
    }
    keys: set[str] = set()
    for path in [*ROOT.glob("bot/**/*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "text" and node.args):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                keys.add(first.value)
            elif isinstance(first, ast.JoinedStr) and isinstance(first.values[0], ast.Constant):
                prefix = first.values[0].value
                assert prefix in families, f"{path}: text(f'{prefix}...') has no known family"
                keys.update(prefix + name for name in families[prefix])
    return keys


def test_no_text_is_missing_in_any_language() -> None:
    used = _text_keys_used()
    assert len(used) > 60
    for language, table in TEXTS.items():
        missing = sorted(used - set(table))
        assert not missing, f"{language} lacks {missing}"
        assert set(table) == set(TEXTS["en"]), f"{language} and en differ: {set(table) ^ set(TEXTS['en'])}"
        for key, value in table.items():
            assert value.strip(), f"{language}.{key} is empty"
            # A translation may leave a value out (ru omits the parser's English reason), never
            # add one English does not supply: .format() would fail in that language only.
            assert set(re.findall(r"{(\w+)}", value)) <= set(re.findall(r"{(\w+)}", TEXTS["en"][key])), key


def test_russian_is_really_russian() -> None:
    """A copied English text would pass the key check; Russian prose has Cyrillic letters."""
    english_by_design = {key for key in TEXTS["ru"] if key.startswith("accepted_")} | {"paysupport_to_admin"}
    for key, value in TEXTS["ru"].items():
        prose = re.sub(r"<[^>]+>|{\w+}|/\w+|`[^`]*`", "", value)
        if re.search(r"[A-Za-z]{4,}", prose) and not re.search(r"[А-Яа-яЁё]", prose) and key not in english_by_design:
            pytest.fail(f"ru.{key} looks untranslated: {value!r}")


def test_every_screen_of_the_main_menu_has_a_handler() -> None:
    sources = "\n".join(path.read_text() for path in ROOT.glob("bot/routers/*.py"))
    for screen in MAIN_SCREENS:
        assert f'F.screen == "{screen}"' in sources, screen


async def test_the_filters_screen_offers_the_replay(env: BotEnv) -> None:
    """The button on the Filters screen reaches the replay (its counts: tests/test_replay.py)."""
    chat = env.chat(74)
    await chat.ask("/settings")
    before = len(chat.sent())
    await chat.press("Test my filters")
    await env.server.wait_for(lambda: len(chat.sent()) > before, 10, description="the replay's answer")
    assert "no call history yet" in chat.sent()[-1].text


async def press_and_wait_for_the_answer(env: BotEnv, chat_id: int, message_id: int, data: str) -> None:
    answered = len(env.server.answered_callbacks)
    env.server.inject_callback(chat_id, message_id, data, check_button=False)
    await env.server.wait_for(
        lambda: len(env.server.answered_callbacks) > answered, 10, description=f"the answer to {data!r}"
    )


async def test_forged_or_odd_button_data_is_answered_without_an_error(env: BotEnv) -> None:
    """Callback data is user input: a crafted client can send anything. Each press is answered,
    nothing is changed, and the user never sees the error text."""
    chat = env.chat(75)
    welcome = await chat.ask("/start")
    forged = [
        "f1:edit:bogus",
        "f1:reset:bogus",
        "f1:explode:min_mcap",
        "l1:xx",
        "pl1:nosuch",
        "d1:maybe",
        "p1:apply:nosuch",
        "p1:unfollow:safe",
        "p1:follow:" + "x" * 40,
        "m1:nowhere",
        "m1",
        "",
        "🙂" * 10,
    ]
    for data in forged:
        await press_and_wait_for_the_answer(env, 75, welcome.message_id, data)
    assert all(TEXTS["en"]["error"] not in record.body for record in chat.sent())
    assert await pg_filters(env, 75) == {}
    assert await env.store.get(75) is not None  # "d1:maybe" deleted nothing


async def test_the_settings_flow_survives_redis_going_down(stores: Stores) -> None:
    """Redis dies between the question and the answer: the flow's state and the subscriber come
    from the manager's fallback, the value is saved to PostgreSQL at once and reaches Redis when
    it is back."""
    parts = urlsplit(stores.redis_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        proxied = urlunsplit((parts.scheme, f"{proxy.listen_host}:{proxy.port}", parts.path, "", ""))
        redis = RedisManager.from_url(proxied, FAST)
        await redis.start()
        caches = CacheRegistry(redis)
        await caches.start()
        through_proxy = Stores(redis, stores.postgres, caches, stores.database_url, proxied)
        try:
            async with running_bot(through_proxy) as env:
                chat = env.chat(76)
                await chat.ask("/start")
                await chat.press("Filters")
                await chat.press("Min holders")
                await proxy.stop_forwarding()

                saved = await chat.ask("150")
                assert "min_holders = 150" in saved.text
                assert await pg_filters(env, 76) == {"min_holders": 150}

                await proxy.resume()
                # The outage's writes are replayed into Redis once the manager's probe finds it back.
                direct = aioredis.from_url(stores.redis_url, decode_responses=True)
                try:
                    for _ in range(200):
                        if redis.available and await direct.hget(subscriber_key(76), "filters"):
                            break
                        await asyncio.sleep(0.05)
                    assert json.loads(await direct.hget(subscriber_key(76), "filters")) == {"min_holders": 150}
                    assert await direct.get(fsm_keys(76, 76)[0]) is None  # the flow ended
                finally:
                    await direct.aclose()
        finally:
            await caches.stop()
            await redis.close()


async def test_setting_the_default_state_ends_the_flow(redis_url: str) -> None:
    """default_state (a State without a name) means "no flow", as in aiogram's own storages."""
    key = StorageKey(bot_id=1, chat_id=91, user_id=91)
    async with RedisManager.from_url(redis_url) as redis:
        storage = ManagedRedisStorage(redis)
        await storage.set_state(key, "Settings:value")
        assert await storage.get_state(key) == "Settings:value"
        await storage.set_state(key, default_state)
        assert await storage.get_state(key) is None
        assert await redis.get(fsm_keys(91, 91)[0]) is None


@pytest.mark.parametrize("name", list(FILTER_SPECS))
def test_every_bad_value_has_a_reason_in_both_languages(name: str) -> None:
    """Whatever is typed, the parser names what is wrong in a way both languages can word."""
    for raw in ("lots", "-5", "1e999", "", "@x", ",".join(str(-100 - i) for i in range(150)), "99999999999"):
        try:
            FILTER_SPECS[name].parse(raw)
        except FilterValueError as exc:
            assert exc.kind in REASON_KINDS, (name, raw, exc)
            for language in TEXTS:
                assert TEXTS[language][f"reason_{exc.kind}"].format(**exc.values)


@pytest.mark.parametrize(
    ("code", "language"),
    [("ru", "ru"), ("ru-RU", "ru"), ("RU", "ru"), ("en_GB", "en"), ("pt-BR", "en"), ("", "en"), (None, "en")],
)
def test_the_bots_language_is_the_stored_language_where_the_bot_speaks_it(code: str | None, language: str) -> None:
    from bot.texts import pick_language
    from domain.subscriber import language_of

    assert pick_language(code) == language
    assert pick_language(code) == (language_of(code) if language_of(code) in ("en", "ru") else "en")
