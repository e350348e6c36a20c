"""The admins' commands end to end: the Telegram double <- a real Dispatcher polling it -> the
stores on real Redis and PostgreSQL; broadcasts through the sender, across restarts."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bot.callbacks import AdminCB, BroadcastCB
from bot.routers.admin import ADMIN_COMMANDS
from bot.runtime import ADMIN_MENU_COMMANDS, MENU_COMMANDS, Runtime
from bot.texts import TEXTS
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from services.admin_queries import EXPORTS, AdminQueries, Audience, day_start
from services.broadcast import Broadcast, Broadcasts, claimed_key, todo_key
from services.sender import MessageSender
from standins.telegram import FakeTelegramServer, RateLimits
from tests.bot_env import ADMIN, REPLY_TIMEOUT, BotEnv, running_bot
from tests.conftest import Stores
from tests.test_runtime import make_settings

pytestmark = pytest.mark.timeout(90)

USER = 7  # not an admin


@pytest.fixture
async def env(stores: Stores) -> AsyncIterator[BotEnv]:
    async with running_bot(stores) as running:
        yield running


# ------------------------------------------------------------------ a known set of rows


class Rows:
    """Users, plans, payments, alerts and deliveries whose figures the tests know."""

    def __init__(self, postgres: PostgresManager, now: datetime) -> None:
        self.postgres = postgres
        self.now = now
        self.ids: dict[int, int] = {}

    async def user(
        self,
        telegram_id: int,
        *,
        status: str = "active",
        paused: bool = False,
        age: timedelta = timedelta(0),
        first_name: str | None = None,
    ) -> None:
        self.ids[telegram_id] = await self.postgres.fetchval(
            """
            INSERT INTO users (telegram_id, status, paused, created_at, first_name) VALUES ($1, $2, $3, $4, $5)
            RETURNING id
            """,
            telegram_id,
            status,
            paused,
            self.now - age,
            first_name,
        )

    async def payment(
        self,
        telegram_id: int,
        rail: str,
        amount: str,
        currency: str | None,
        status: str,
        *,
        plan: str | None = None,
        age: timedelta = timedelta(0),
    ) -> int:
        return int(
            await self.postgres.fetchval(
                """
                INSERT INTO payments (user_id, telegram_id, plan_id, rail, external_id, amount, currency, status,
                                      created_at)
                VALUES ($1, $2, (SELECT id FROM plans WHERE code = $3), $4, $5, $6, $7, $8, $9) RETURNING id
                """,
                self.ids[telegram_id],
                telegram_id,
                plan,
                rail,
                f"{rail}-{telegram_id}-{amount}-{status}",
                Decimal(amount),
                currency,
                status,
                self.now - age,
            )
        )

    async def subscription(
        self, telegram_id: int, source: str, ends_in: timedelta, *, plan: str | None = None, payment: int | None = None
    ) -> None:
        await self.postgres.execute(
            """
            INSERT INTO subscriptions (user_id, plan_id, payment_id, source, starts_at, expires_at)
            VALUES ($1, (SELECT id FROM plans WHERE code = $2), $3, $4, $5, $6)
            """,
            self.ids[telegram_id],
            plan,
            payment,
            source,
            self.now + ends_in - timedelta(days=30),
            self.now + ends_in,
        )

    async def alert(self, telegram_id: int, token: str, at: datetime) -> None:
        await self.postgres.execute("INSERT INTO tokens (address) VALUES ($1) ON CONFLICT DO NOTHING", token)
        await self.postgres.execute(
            "INSERT INTO alerts (user_id, token_address, created_at) VALUES ($1, $2, $3)",
            self.ids[telegram_id],
            token,
            at,
        )

    async def delivery(self, telegram_id: int, token: str, status: str, at: datetime) -> None:
        await self.postgres.execute(
            "INSERT INTO deliveries (token_address, chat_id, status, delivered_at) VALUES ($1, $2, $3, $4)",
            token,
            telegram_id,
            status,
            at,
        )


async def seed(postgres: PostgresManager, now: datetime) -> Rows:
    """101 paid a month in Stars; 102 is on the trial, alerts paused; 103 banned; 104 blocked the
    bot; 105 has a grant (and a week that ended); 106 came 10 days ago, paid SOL 40 days ago, has
    no plan, and has a pending and a refunded payment; 107 paid a quarter through NOWPayments."""
    rows = Rows(postgres, now)
    day = day_start(now)
    await rows.user(101, first_name="=HYPERLINK(1)")
    await rows.user(102, paused=True)
    await rows.user(103, status="banned")
    await rows.user(104, status="blocked")
    await rows.user(105)
    await rows.user(106, age=timedelta(days=10))
    await rows.user(107)
    paid = await rows.payment(101, "stars", "750", "XTR", "confirmed", plan="month", age=timedelta(days=2))
    await rows.subscription(101, "payment", timedelta(days=28), plan="month", payment=paid)
    await rows.subscription(102, "trial", timedelta(days=2))
    week = await rows.payment(105, "stars", "250", "XTR", "refunded", plan="week", age=timedelta(days=20))
    await rows.subscription(105, "payment", -timedelta(days=13), plan="week", payment=week)
    await rows.subscription(105, "grant", timedelta(days=5))
    sol = await rows.payment(106, "sol", "0.09", "SOL", "confirmed", plan="month", age=timedelta(days=40))
    await rows.subscription(106, "payment", -timedelta(days=10), plan="month", payment=sol)
    await rows.payment(106, "nowpayments", "15", "USD", "pending", plan="month", age=timedelta(hours=1))
    quarter = await rows.payment(107, "nowpayments", "40", "USD", "confirmed", plan="quarter", age=timedelta(days=1))
    await rows.subscription(107, "payment", timedelta(days=89), plan="quarter", payment=quarter)
    await rows.payment(105, "grant", "0", None, "confirmed")
    # Alerts: two today, one yesterday, one 8 days ago. Deliveries today: 3 sent, 1 gone, 1 failed.
    await rows.alert(101, "TokA", day)
    await rows.alert(107, "TokA", day)
    await rows.alert(101, "TokB", day - timedelta(days=1))
    await rows.alert(101, "TokC", now - timedelta(days=8))
    for chat, status in ((101, "sent"), (107, "sent"), (105, "sent"), (104, "gone"), (102, "failed")):
        await rows.delivery(chat, "TokA", status, day)
    await rows.delivery(101, "TokB", "sent", day - timedelta(days=1))
    return rows


async def test_overview_figures_on_a_known_set_of_rows(stores: Stores) -> None:
    now = datetime.now(UTC)
    await seed(stores.postgres, now)
    queries = AdminQueries(stores.postgres)
    overview = await queries.overview(now)
    users = overview.users
    assert (users.total, users.active, users.banned, users.blocked, users.paused, users.new_7d) == (7, 5, 1, 1, 1, 6)
    assert overview.plans == {"month": 1, "quarter": 1, "trial": 1, "grant": 1}
    assert (overview.alerts_today, overview.alerts_7d) == (2, 3)
    assert overview.deliveries_today == {"sent": 3, "gone": 1, "failed": 1}
    revenue = {(r.rail, r.currency): (r.count, r.amount, r.count_30d, r.amount_30d) for r in overview.revenue}
    assert revenue == {
        ("nowpayments", "USD"): (1, Decimal(40), 1, Decimal(40)),
        ("sol", "SOL"): (1, Decimal("0.09"), 0, Decimal(0)),
        ("stars", "XTR"): (1, Decimal(750), 1, Decimal(750)),
    }
    # Every user who may be messaged is in "all" and in exactly one of the other three.
    assert await queries.audience_sizes(now) == {
        Audience.ALL: 5,
        Audience.PAYING: 3,
        Audience.TRIAL: 1,
        Audience.FREE: 1,
    }
    assert await queries.audience(Audience.PAYING, now) == [101, 105, 107]
    assert await queries.audience(Audience.TRIAL, now) == [102]
    assert await queries.audience(Audience.FREE, now) == [106]
    assert await queries.audience(Audience.ALL, now) == [101, 102, 105, 106, 107]


# ------------------------------------------------------------------ refusals


ANSWERED = {
    "/admin": "Admin",
    "/stats": "Statistics",
    "/user 5": "User",
    "/payments": "No payments yet",
    "/channels": "No channel has a resolved call",
    "/broadcast Hello": "Broadcast preview",
    "/ban 5": "is banned",
    "/unban 5": "no longer banned",
    "/grant 5 1": "Granted 1 days",
    "/revoke 5": "Revoked",
    "/refund nosuchcharge": "No Stars payment",
    "/setpreset": "/setpreset CODE",
    "/delpreset": "/delpreset CODE",
    "/health": "Health: ok",
}


async def test_every_admin_command_is_answered_for_an_admin_and_refused_for_anyone_else(
    env: BotEnv, caplog: pytest.LogCaptureFixture
) -> None:
    admin, user = env.chat(ADMIN), env.chat(USER)
    await env.chat(5).ask("/start")
    for command, answer in ANSWERED.items():
        reply = await admin.ask(command)
        assert answer in reply.text, (command, reply.text)
    exported = await admin.say("/export", replies=3)
    assert [record.method for record in exported] == ["sendDocument"] * 3

    # Every admin-only command is answered above; /channels is the subscribers' command too
    # (their own view), not admin-only.
    answered = {command.split()[0].lstrip("/") for command in ANSWERED} | {"export"}
    assert answered - {"channels"} == set(ADMIN_COMMANDS)
    refused = list(ADMIN_COMMANDS)
    with caplog.at_level(logging.WARNING, logger="alertbot.admin"):
        for command in refused:
            reply = await user.ask(f"/{command} 5")
            assert reply.text == TEXTS["en"]["admin_only"], command
    rows = await env.stores.postgres.fetch(
        "SELECT details->>'command' AS command FROM activity_log WHERE actor_telegram_id = $1 AND action = $2",
        USER,
        "admin_refused",
    )
    assert sorted(row["command"] for row in rows) == sorted(refused)
    logged = [r.getMessage() for r in caplog.records]
    assert all(any(f"user {USER} is not an admin and tried /{c}" in line for line in logged) for c in refused)
    assert (await env.store.get(5)).status == "active"  # the refused /ban changed nothing

    # An admin's button pressed by someone else: refused and logged, nothing done.
    welcome = user.sent()[0]
    for data in (AdminCB(action="ban", user=5).pack(), BroadcastCB(action="send", id="x").pack()):
        update_id = env.server.inject_callback(USER, welcome.message_id, data, check_button=False)
        await env.handled.wait(update_id)
        assert user.last_toast() == TEXTS["en"]["admin_only"]
    assert (await env.store.get(5)).status == "active"
    pressed = await env.stores.postgres.fetchval(
        "SELECT count(*) FROM activity_log WHERE actor_telegram_id = $1 AND details ? 'button'", USER
    )
    assert pressed == 2


# ------------------------------------------------------------------ screens


async def test_stats_shows_the_figures_of_the_rows(env: BotEnv) -> None:
    await seed(env.stores.postgres, datetime.now(UTC))
    reply = await env.chat(ADMIN).ask("/stats")  # the admin becomes the eighth user, active
    assert "Users: 8: active 6 (alerts paused 1), banned 1, blocked the bot 1; new in 7 days: 7" in reply.text
    assert "Live plans: grant 1, month 1, quarter 1, trial 1" in reply.text
    assert "Alerts: today" in reply.text and "Deliveries today: sent" in reply.text
    assert "• nowpayments: 1 for $40; 1 for $40" in reply.text
    assert "• sol: 1 for 0.09 SOL; 0 for 0 SOL" in reply.text
    assert "• stars: 1 for 750 ⭐; 1 for 750 ⭐" in reply.text
    # From the menu, the same screen in place of the menu, with the way back.
    admin = env.chat(ADMIN)
    await admin.ask("/admin")
    screen = await admin.press("Statistics")
    assert "Live plans: grant 1, month 1, quarter 1, trial 1" in screen.text
    assert "Admin menu" in screen.labels()[0]
    assert "/broadcast TEXT" in (await admin.press("Admin menu")).text


async def test_payments_and_channels_screens(env: BotEnv) -> None:
    await seed(env.stores.postgres, datetime.now(UTC))
    admin = env.chat(ADMIN)
    payments = await admin.ask("/payments")
    assert "• nowpayments: confirmed 1, pending 1" in payments.text
    assert "• stars: confirmed 1, refunded 1" in payments.text
    latest = payments.text.split("Latest:")[1].splitlines()[1:]
    assert len(latest) == 6 and "106 · nowpayments · $15 · pending · month" in latest[1]

    assert "No channel has a resolved call yet." in (await admin.ask("/channels")).text
    # The channel statistics' figures (as their job writes them): the most measured first, all
    # of them however few their resolved calls, each with N.
    for channel_id, name, username, rate, resolved, wins, still_open, unpriced, avg, median in (
        ("-1001", "Alpha <Calls>", "alpha", 0.5, 4, 2, 1, 0, 2.25, 1.9),
        ("-1002", None, None, 0.45, 40, 18, 5, 2, 2.1, 1.6),
        ("-1003", "Quiet", None, None, 0, 0, 3, 0, None, None),  # nothing resolved: not listed
    ):
        await env.stores.postgres.execute(
            "INSERT INTO channels (id, name, username, computed_win_rate, computed_avg_gain, computed_median_gain,"
            " computed_calls, computed_resolved, computed_wins, computed_unresolved, computed_unpriced, computed_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())",
            channel_id,
            name,
            username,
            rate,
            avg,
            median,
            resolved + still_open + unpriced,
            resolved,
            wins,
            still_open,
            unpriced,
        )
    lines = (await admin.ask("/channels")).text.splitlines()
    assert lines[0].startswith("📡 Channels by the bot's own figures") and len(lines) == 4
    assert lines[2] == "• -1002: N=40, 2x 18 (45%), average 2.1x, median 1.6x; open 5, unpriced 2"
    assert lines[3] == "• Alpha <Calls> @alpha: N=4, 2x 2 (50%), average 2.2x, median 1.9x; open 1, unpriced 0"
    # A subscriber's /channels is still theirs.
    assert "Channels with the best win rate" in (await env.chat(USER).ask("/channels")).text


async def test_user_record_shows_the_plan_and_its_buttons_work(env: BotEnv) -> None:
    await env.chat(5).ask("/start")
    await env.store.update_filters(5, (await env.store.get(5)).filters.__class__(min_mcap=50_000), name="min_mcap")
    admin = env.chat(ADMIN)
    assert "/user USER_ID" in (await admin.ask("/user")).text
    assert "is unknown" in (await admin.ask("/user 4242")).text
    record = await admin.ask("/user 5")
    assert "Plan: none" in record.text and "min_mcap = $50K" in record.text and "Payments: none" in record.text
    assert admin.screen(record.message_id).labels() == ["🎁 Grant 30 days", "⛔ Revoke the plan", "🚫 Ban"]

    screen = await admin.press("Grant 30 days")
    assert "Granted 30 days" in (admin.last_toast() or "")
    end = (await env.store.get(5)).plan_expires_at
    assert end is not None and timedelta(days=29) < end - datetime.now(UTC) <= timedelta(days=30)
    assert f"until {end.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC')}" in screen.text
    await env.services.ledger.writer.drained()
    assert await env.stores.postgres.fetchval("SELECT source FROM subscriptions") == "grant"
    notice = await env.server.wait_for_sent(lambda r: r.chat_id == 5 and "🎁" in r.body, timeout=REPLY_TIMEOUT)
    assert "30 days" in notice[0].text
    screen = await admin.press("Grant 30 days")  # a second month follows the first
    assert "until" in screen.text
    assert timedelta(days=59) < (await env.store.get(5)).plan_expires_at - datetime.now(UTC)  # type: ignore[operator]

    screen = await admin.press("Revoke the plan")
    assert "Revoked" in (admin.last_toast() or "") and "Plan: none" in screen.text
    assert not (await env.store.get(5)).has_active_plan(datetime.now(UTC))

    screen = await admin.press("Ban")
    assert "is banned" in (admin.last_toast() or "") and "status: banned" in screen.text
    assert screen.labels()[-1] == "✅ Unban"
    assert (await env.store.get(5)).status == "banned"
    screen = await admin.press("Unban")
    assert "status: active" in screen.text and screen.labels()[-1] == "🚫 Ban"
    actions = await env.stores.postgres.fetch(
        "SELECT action FROM activity_log WHERE actor_telegram_id = $1 ORDER BY id", ADMIN
    )
    assert [row["action"] for row in actions] == ["grant", "grant", "revoke", "ban", "unban"]


async def test_ban_and_unban(env: BotEnv, caplog: pytest.LogCaptureFixture) -> None:
    user = env.chat(8)
    await user.ask("/start")
    admin = env.chat(ADMIN)
    assert "/ban USER_ID" in (await admin.ask("/ban")).text
    assert "/unban USER_ID" in (await admin.ask("/unban x")).text
    assert "is unknown" in (await admin.ask("/ban 4242")).text
    assert "cannot be banned" in (await admin.ask(f"/ban {ADMIN}")).text
    assert "is not banned" in (await admin.ask("/unban 8")).text

    assert "8</code> is banned" in (await admin.ask("/ban 8")).raw_text  # type: ignore[operator]
    assert (await env.store.get(8)).status == "banned"
    assert await env.stores.postgres.fetchval("SELECT status FROM users WHERE telegram_id = 8") == "banned"
    assert not (await env.store.get(8)).receives_alerts(datetime.now(UTC))
    assert "banned already" in (await admin.ask("/ban 8")).text
    # Banned users get nothing: no answer, and no broadcast.
    with caplog.at_level(logging.INFO, logger="alertbot.subscribers"):
        update_id = env.server.inject_message(8, "/filters")
        await env.handled.wait(update_id)
    assert any("banned user 8" in r.getMessage() for r in caplog.records)
    assert len(user.sent()) == 1  # the welcome only
    assert await env.services.admin_queries.audience(Audience.ALL, datetime.now(UTC)) == [ADMIN]

    assert "no longer banned" in (await admin.ask("/unban 8")).text
    assert (await env.store.get(8)).status == "active"
    assert "no filters" in (await user.ask("/filters")).text
    actions = await env.stores.postgres.fetch(
        "SELECT action, details->>'telegram_id' AS who FROM activity_log WHERE actor_telegram_id = $1 ORDER BY id",
        ADMIN,
    )
    assert [(row["action"], row["who"]) for row in actions] == [("ban", "8"), ("unban", "8")]


async def test_export_sends_three_csv_files(env: BotEnv) -> None:
    await seed(env.stores.postgres, datetime.now(UTC))
    admin = env.chat(ADMIN)
    await admin.ask("/admin")  # the admin is a user too from here on
    documents = await admin.say("/export", replies=3)
    counts = {
        "users": await env.stores.postgres.fetchval("SELECT count(*) FROM users"),
        "subscriptions": await env.stores.postgres.fetchval("SELECT count(*) FROM subscriptions"),
        "payments": await env.stores.postgres.fetchval("SELECT count(*) FROM payments"),
    }
    assert counts == {"users": 8, "subscriptions": 6, "payments": 6}
    for record, table in zip(documents, EXPORTS, strict=True):
        assert record.document is not None
        assert record.document.file_name is not None and record.document.file_name.startswith(f"{table}-")
        rows = list(csv.reader(io.StringIO(record.document.content.decode("utf-8"))))
        assert tuple(rows[0]) == EXPORTS[table][0]
        assert len(rows) - 1 == counts[table]
        assert record.caption == f"{table}: {counts[table]} row(s)"
    users = list(csv.DictReader(io.StringIO(documents[0].document.content.decode())))  # type: ignore[union-attr]
    # A name a spreadsheet would run as a formula is written as text.
    assert next(u for u in users if u["telegram_id"] == "101")["first_name"] == "'=HYPERLINK(1)"
    payments = list(csv.DictReader(io.StringIO(documents[2].document.content.decode())))  # type: ignore[union-attr]
    assert {(p["rail"], p["amount"], p["currency"], p["status"]) for p in payments} >= {
        ("sol", "0.09", "SOL", "confirmed"),
        ("stars", "750", "XTR", "confirmed"),
    }
    # From the menu's button too (a press returns once handled); each export is in the activity log.
    await admin.ask("/admin")
    await admin.press("Export CSV")
    assert sum(1 for r in env.server.sent if r.chat_id == ADMIN and r.method == "sendDocument") == 6
    exports = await env.stores.postgres.fetchval(
        "SELECT count(*) FROM activity_log WHERE actor_telegram_id = $1 AND action = 'export'", ADMIN
    )
    assert exports == 2


# ------------------------------------------------------------------ the command menu


async def test_admins_get_their_commands_in_a_menu_of_their_own(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    async with FakeTelegramServer() as telegram:
        runtime = Runtime(make_settings(telegram, redis_url, database_url, tmp_path, admin_ids=[ADMIN, ADMIN + 1]))
        await runtime.start()
        try:
            for admin_id in (ADMIN, ADMIN + 1):
                scope = {"type": "chat", "chat_id": admin_id}
                menu = [c["command"] for c in telegram.commands_for(scope)]
                assert menu[: len(MENU_COMMANDS)] == list(MENU_COMMANDS)
                assert set(menu[len(MENU_COMMANDS) :]) == set(ADMIN_MENU_COMMANDS) - set(MENU_COMMANDS)
                russian = {c["command"]: c["description"] for c in telegram.commands_for(scope, language_code="ru")}
                assert russian.keys() == set(menu) and russian["stats"] == TEXTS["ru"]["admincmd_stats"]
            # Everyone else keeps the subscribers' menu.
            assert [c["command"] for c in telegram.commands] == list(MENU_COMMANDS)
            assert telegram.commands_for({"type": "chat", "chat_id": USER}) == []
        finally:
            await runtime.stop()


# ------------------------------------------------------------------ broadcasts

BROADCAST_TEXT = "Big news: <b>v2</b> is out & faster"  # as typed: shown as typed, not as markup


def broadcast_copies(server: FakeTelegramServer) -> Counter[int]:
    """How many copies of the broadcast each chat got."""
    return Counter(record.chat_id for record in server.sent if record.text == BROADCAST_TEXT)


async def test_broadcast_preview_audiences_and_cancel(env: BotEnv) -> None:
    await seed(env.stores.postgres, datetime.now(UTC))
    admin = env.chat(ADMIN)
    assert "/broadcast TEXT" in (await admin.ask("/broadcast")).text
    assert "at most 3500" in (await admin.ask("/broadcast " + "x" * 3501)).text
    preview = await admin.ask(f"/broadcast {BROADCAST_TEXT}")
    assert preview.text.startswith("📣 Broadcast preview: to everyone, 6 user(s).")  # 5 users and the admin
    assert preview.text.endswith(BROADCAST_TEXT)
    assert admin.screen(preview.message_id).labels() == [
        "✓ everyone (6)",
        "users with a plan (3)",
        "users on the trial (1)",
        "users without a plan (2)",
        "📣 Send to 6",
        "✖ Cancel",
    ]
    screen = await admin.press("users on the trial")
    assert "to users on the trial, 1 user(s)" in screen.text and "📣 Send to 1" in screen.labels()
    screen = await admin.press("Cancel")
    assert screen.text == TEXTS["en"]["broadcast_cancelled"] and screen.labels() == []
    # The cancelled draft sends nothing, whichever button of its preview is pressed.
    data = [d for label, d in admin.screen(preview.message_id).buttons]
    assert data == []
    sent = BroadcastCB(action="send", id="nosuchid").pack()
    update_id = env.server.inject_callback(ADMIN, preview.message_id, sent, check_button=False)
    await env.handled.wait(update_id)
    assert admin.last_toast() == TEXTS["en"]["broadcast_gone"]
    assert broadcast_copies(env.server) == Counter()


async def test_broadcast_interrupted_by_a_restart_reaches_everyone_once(stores: Stores) -> None:
    recipients = list(range(2001, 2031))
    for telegram_id in recipients:
        await stores.postgres.execute("INSERT INTO users (telegram_id) VALUES ($1)", telegram_id)
    options = {
        "sender_options": {"global_rate": 20},
        "broadcast_options": {"window": 3, "progress_seconds": 0.05},
    }
    async with FakeTelegramServer(limits=RateLimits.unlimited()) as server:
        server.block_chat(2005)
        admin = None
        async with running_bot(stores, server=server, **options) as env:  # type: ignore[arg-type]
            admin = env.chat(ADMIN)
            preview = await admin.ask(f"/broadcast {BROADCAST_TEXT}")
            await admin.press("Send to 31")  # the 30 users and the admin
            await server.wait_for(lambda: sum(broadcast_copies(server).values()) >= 5, REPLY_TIMEOUT)
            await env.broadcasts.stop()  # the process stops mid-way
        before = sum(broadcast_copies(server).values())
        assert 5 <= before < 30
        assert await stores.redis.client.llen(todo_key(_only_broadcast_id(server, preview.message_id))) > 0

        async with running_bot(stores, server=server, **options):  # type: ignore[arg-type]
            await server.wait_for(
                lambda: "finished" in admin.screen(preview.message_id).text, timeout=30, description="the end"
            )
        expected = {chat: 1 for chat in [*recipients, ADMIN] if chat != 2005}
        assert broadcast_copies(server) == expected
        final = admin.screen(preview.message_id)
        assert (
            final.text == "📣 Broadcast finished to everyone: 31 recipient(s)\n✅ sent 30 · 🚫 blocked 1 · ❌ failed 0"
        )
        assert final.labels() == []
        # The progress went through edits of that one message, the last being the final counts.
        edits = [record for record in server.edits if record.message_id == preview.message_id]
        assert len(edits) >= 2 and edits[-1].text == final.text


def _only_broadcast_id(server: FakeTelegramServer, message_id: int) -> str:
    """The broadcast id in the callback data the preview carried."""
    sent = next(record for record in server.sent if record.message_id == message_id and record.chat_id == ADMIN)
    return BroadcastCB.unpack(sent.callback_data[-1]).id


async def test_broadcast_resumes_what_a_stopped_sender_dropped(redis_url: str) -> None:
    """Recipients claimed and still queued in a sender stopped without draining (as a stop does
    when its time runs out) are handed out again by the next start, and each gets one copy."""
    recipients = list(range(3001, 3021))

    async def audience(which: Audience, now: datetime) -> list[int]:
        return recipients

    shown: list[Broadcast] = []
    finished = asyncio.Event()

    async def progress(broadcast: Broadcast) -> bool:
        shown.append(broadcast)
        if broadcast.status == "done":
            finished.set()
        return True

    redis = RedisManager.from_url(redis_url)
    await redis.start()
    try:
        async with FakeTelegramServer(limits=RateLimits.unlimited()) as server:
            bot = server.create_bot()
            sender = MessageSender(bot, global_rate=20)
            await sender.start()
            broadcasts = Broadcasts(redis, sender, audience, on_progress=progress, window=8)
            await broadcasts.start()
            draft = await broadcasts.draft(ADMIN, html.escape(BROADCAST_TEXT), "en")
            assert (await broadcasts.confirm(draft.id, message_id=1)) is not None
            assert await broadcasts.confirm(draft.id, message_id=1) is None  # a second press sends nothing
            await server.wait_for(lambda: sum(broadcast_copies(server).values()) >= 3, REPLY_TIMEOUT)
            # Telegram says "wait a minute": what the sender holds now stays queued in it.
            server.force_retry_after(60, count=1, methods=["sendMessage"])
            await server.wait_for(lambda: server.stats.rejected_429 >= 1, REPLY_TIMEOUT)
            await broadcasts.stop()
            await sender.stop(drain=False)
            assert await redis.client.hlen(claimed_key(draft.id)) >= 1  # claimed, never answered
            assert sum(broadcast_copies(server).values()) < len(recipients)

            sender = MessageSender(bot, global_rate=20)
            await sender.start()
            broadcasts = Broadcasts(redis, sender, audience, on_progress=progress, window=8)
            await broadcasts.start()
            await asyncio.wait_for(finished.wait(), 30)
            await broadcasts.stop()
            await sender.stop()
            await bot.session.close()
            assert broadcast_copies(server) == {chat: 1 for chat in recipients}
            assert (shown[-1].total, shown[-1].sent, shown[-1].blocked, shown[-1].failed) == (20, 20, 0, 0)
            assert await redis.client.scard("broadcasts:running") == 0
    finally:
        await redis.close()
