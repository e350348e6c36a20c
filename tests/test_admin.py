"""The admins' commands end to end: the Telegram double <- a real Dispatcher polling it -> the
stores on real Redis and PostgreSQL; broadcasts through the sender, across restarts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.callbacks import AdminCB, BroadcastCB
from bot.routers.admin import ADMIN_COMMANDS
from bot.texts import TEXTS
from managers.postgres import PostgresManager
from services.admin_queries import AdminQueries, Audience, day_start
from tests.bot_env import ADMIN, BotEnv, running_bot
from tests.conftest import Stores

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
    "/channels": "No channel has called",
    "/broadcast Hello": "Broadcast preview",
    "/ban 5": "is banned",
    "/unban 5": "no longer banned",
    "/grant 5 1": "Granted 1 days",
    "/revoke 5": "Revoked",
    "/refund nosuchcharge": "No Stars payment",
    "/setpreset": "/setpreset CODE",
    "/delpreset": "/delpreset CODE",
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

    # Every admin-only command is answered above, but /health (the monitoring's reply, not an
    # admin screen); /channels is the subscribers' command too, so it is not admin-only.
    answered = {command.split()[0].lstrip("/") for command in ANSWERED} | {"export"}
    assert answered - {"channels"} == set(ADMIN_COMMANDS) - {"health"}
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
