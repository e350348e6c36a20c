"""What admins ask of the stores: figures, one user's record, recent payments, exports, audiences
(the channels' figures are services.channel_stats').

Read from PostgreSQL, which holds every user, plan, payment, alert and delivery (a payment may
reach it a moment after Redis has the plan). No Telegram imports: the admin routers only format
what these return. Times are UTC; "today" begins at midnight UTC.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from domain.plans import PAID_RAILS
from managers.postgres import PostgresManager

RECENT_PAYMENTS = 15
USER_PAYMENTS = 5


class Audience(StrEnum):
    """Who a broadcast goes to. Every user who has not blocked the bot and is not banned is in
    `ALL` and in exactly one of the other three: `PAYING` has a live plan other than the trial
    (bought, granted or rewarded), `TRIAL` has only the trial live, `FREE` has no live plan."""

    ALL = "all"
    PAYING = "paying"
    TRIAL = "trial"
    FREE = "free"


def day_start(now: datetime) -> datetime:
    moment = now.astimezone(UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class UserCounts:
    total: int
    active: int
    banned: int
    blocked: int  # the user blocked the bot
    paused: int  # active, alerts paused
    new_7d: int


@dataclass(frozen=True)
class Revenue:
    """Confirmed payments of one rail in one currency (refunded ones not counted)."""

    rail: str
    currency: str
    count: int
    amount: Decimal
    count_30d: int
    amount_30d: Decimal


@dataclass(frozen=True)
class Overview:
    users: UserCounts
    plans: dict[str, int]  # plan code, or trial/grant/referral -> users whose live plan it is
    alerts_today: int
    alerts_7d: int
    deliveries_today: dict[str, int]  # sent / gone / failed
    revenue: list[Revenue]


@dataclass(frozen=True)
class PaymentRow:
    created_at: datetime
    telegram_id: int | None
    rail: str
    amount: Decimal | None
    currency: str | None
    status: str
    plan: str | None


@dataclass(frozen=True)
class UserRecord:
    telegram_id: int
    username: str | None
    first_name: str | None
    language: str
    status: str
    paused: bool
    created_at: datetime
    last_seen_at: datetime | None
    plan: str | None  # the live plan ending last: its code, or trial/grant/referral
    plan_expires_at: datetime | None
    alerts_total: int
    alerts_7d: int
    deliveries: dict[str, int]  # outcomes of its alerts: sent / gone / failed
    payments: list[PaymentRow]


@dataclass(frozen=True)
class PaymentsSummary:
    counts: dict[tuple[str, str], int]  # (rail, status) -> payments
    recent: list[PaymentRow]


@dataclass(frozen=True)
class Export:
    data: bytes  # CSV
    rows: int  # below the header


# Each user's live plan: the unrevoked subscription that ends last ($1 = now).
_LIVE_PLANS = """
SELECT DISTINCT ON (s.user_id) s.user_id, COALESCE(p.code, s.source) AS plan, s.source, s.expires_at
  FROM subscriptions s LEFT JOIN plans p ON p.id = s.plan_id
 WHERE s.revoked_at IS NULL AND s.expires_at > $1
 ORDER BY s.user_id, s.expires_at DESC
"""

_PAYMENT_COLUMNS = """
p.created_at, p.telegram_id, p.rail, p.amount, p.currency, p.status, pl.code AS plan
"""


def _payment(row: Mapping[str, Any]) -> PaymentRow:
    return PaymentRow(
        created_at=row["created_at"],
        telegram_id=row["telegram_id"],
        rail=row["rail"],
        amount=row["amount"],
        currency=row["currency"],
        status=row["status"],
        plan=row["plan"],
    )


class AdminQueries:
    def __init__(self, postgres: PostgresManager) -> None:
        self.postgres = postgres

    async def overview(self, now: datetime) -> Overview:
        today, week = day_start(now), now - timedelta(days=7)
        users = await self.postgres.fetchrow(
            """
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE status = 'active') AS active,
                   count(*) FILTER (WHERE status = 'banned') AS banned,
                   count(*) FILTER (WHERE status = 'blocked') AS blocked,
                   count(*) FILTER (WHERE status = 'active' AND paused) AS paused,
                   count(*) FILTER (WHERE created_at >= $1) AS new_7d
              FROM users
            """,
            week,
        )
        assert users is not None
        plans = await self.postgres.fetch(
            f"SELECT plan, count(*) AS users FROM ({_LIVE_PLANS}) live GROUP BY plan ORDER BY users DESC, plan", now
        )
        alerts = await self.postgres.fetchrow(
            """
            SELECT count(*) FILTER (WHERE created_at >= $1) AS today, count(*) AS week
              FROM alerts WHERE created_at >= $2 AND created_at <= $3
            """,
            today,
            week,
            now,
        )
        assert alerts is not None
        deliveries = await self.postgres.fetch(
            "SELECT status, count(*) AS n FROM deliveries WHERE delivered_at >= $1 AND delivered_at <= $2"
            " GROUP BY status",
            today,
            now,
        )
        revenue = await self.postgres.fetch(
            """
            SELECT rail, currency, count(*) AS n, sum(amount) AS amount,
                   count(*) FILTER (WHERE created_at >= $2) AS n_30d,
                   COALESCE(sum(amount) FILTER (WHERE created_at >= $2), 0) AS amount_30d
              FROM payments
             WHERE status = 'confirmed' AND rail = ANY($1::text[]) AND created_at <= $3
             GROUP BY rail, currency ORDER BY rail, currency
            """,
            [rail.value for rail in PAID_RAILS],
            now - timedelta(days=30),
            now,
        )
        return Overview(
            users=UserCounts(**{key: int(users[key]) for key in users.keys()}),
            plans={row["plan"]: int(row["users"]) for row in plans},
            alerts_today=int(alerts["today"]),
            alerts_7d=int(alerts["week"]),
            deliveries_today={row["status"]: int(row["n"]) for row in deliveries},
            revenue=[
                Revenue(
                    rail=row["rail"],
                    currency=row["currency"] or "",
                    count=int(row["n"]),
                    amount=Decimal(row["amount"] or 0),
                    count_30d=int(row["n_30d"]),
                    amount_30d=Decimal(row["amount_30d"]),
                )
                for row in revenue
            ],
        )

    async def user(self, telegram_id: int, now: datetime) -> UserRecord | None:
        row = await self.postgres.fetchrow(
            f"""
            SELECT u.id, u.telegram_id, u.username, u.first_name, u.language, u.status, u.paused,
                   u.created_at, u.last_seen_at, live.plan, live.expires_at AS plan_expires_at,
                   (SELECT count(*) FROM alerts a WHERE a.user_id = u.id) AS alerts_total,
                   (SELECT count(*) FROM alerts a WHERE a.user_id = u.id AND a.created_at >= $3) AS alerts_7d
              FROM users u
              LEFT JOIN ({_LIVE_PLANS}) live ON live.user_id = u.id
             WHERE u.telegram_id = $2
            """,
            now,
            telegram_id,
            now - timedelta(days=7),
        )
        if row is None:
            return None
        deliveries = await self.postgres.fetch(
            "SELECT status, count(*) AS n FROM deliveries WHERE chat_id = $1 GROUP BY status", telegram_id
        )
        payments = await self.postgres.fetch(
            f"""
            SELECT {_PAYMENT_COLUMNS} FROM payments p LEFT JOIN plans pl ON pl.id = p.plan_id
             WHERE p.telegram_id = $1 ORDER BY p.created_at DESC, p.id DESC LIMIT $2
            """,
            telegram_id,
            USER_PAYMENTS,
        )
        return UserRecord(
            telegram_id=int(row["telegram_id"]),
            username=row["username"],
            first_name=row["first_name"],
            language=row["language"],
            status=row["status"],
            paused=bool(row["paused"]),
            created_at=row["created_at"],
            last_seen_at=row["last_seen_at"],
            plan=row["plan"],
            plan_expires_at=row["plan_expires_at"],
            alerts_total=int(row["alerts_total"]),
            alerts_7d=int(row["alerts_7d"]),
            deliveries={r["status"]: int(r["n"]) for r in deliveries},
            payments=[_payment(p) for p in payments],
        )

    async def payments(self, limit: int = RECENT_PAYMENTS) -> PaymentsSummary:
        counts = await self.postgres.fetch(
            "SELECT rail, status, count(*) AS n FROM payments GROUP BY rail, status ORDER BY rail, status"
        )
        recent = await self.postgres.fetch(
            f"""
            SELECT {_PAYMENT_COLUMNS} FROM payments p LEFT JOIN plans pl ON pl.id = p.plan_id
             ORDER BY p.created_at DESC, p.id DESC LIMIT $1
            """,
            limit,
        )
        return PaymentsSummary(
            counts={(row["rail"], row["status"]): int(row["n"]) for row in counts},
            recent=[_payment(row) for row in recent],
        )

    async def audience(self, audience: Audience, now: datetime) -> list[int]:
        """The telegram ids a broadcast to `audience` goes to, in a stable order."""
        rows = await self.postgres.fetch(
            f"""
            SELECT u.telegram_id FROM users u LEFT JOIN ({_LIVE_PLANS}) live ON live.user_id = u.id
             WHERE u.status = 'active' AND {_AUDIENCE_CONDITION[audience]}
             ORDER BY u.telegram_id
            """,
            now,
        )
        return [int(row["telegram_id"]) for row in rows]

    async def audience_sizes(self, now: datetime) -> dict[Audience, int]:
        row = await self.postgres.fetchrow(
            f"""
            SELECT {", ".join(f"count(*) FILTER (WHERE {_AUDIENCE_CONDITION[a]}) AS {a.value}" for a in Audience)}
              FROM users u LEFT JOIN ({_LIVE_PLANS}) live ON live.user_id = u.id
             WHERE u.status = 'active'
            """,
            now,
        )
        assert row is not None
        return {audience: int(row[audience.value]) for audience in Audience}

    async def export(self, table: str) -> Export:
        """One of EXPORTS as CSV (UTF-8, a header row first)."""
        header, query = EXPORTS[table]
        rows = await self.postgres.fetch(query)
        data = to_csv(header, ([row[name] for name in header] for row in rows), free_text=FREE_TEXT)
        return Export(data, len(rows))


# A trial is "the trial" only while no other plan is live; the live plan is the one ending last,
# so a trial extended by a purchase counts as paying.
_AUDIENCE_CONDITION: dict[Audience, str] = {
    Audience.ALL: "true",
    Audience.PAYING: "live.user_id IS NOT NULL AND live.source <> 'trial'",
    Audience.TRIAL: "live.source = 'trial'",
    Audience.FREE: "live.user_id IS NULL",
}

# Per export: its columns, and the query that gives them (oldest first).
EXPORTS: dict[str, tuple[tuple[str, ...], str]] = {
    "users": (
        (
            "telegram_id",
            "username",
            "first_name",
            "language",
            "role",
            "status",
            "paused",
            "created_at",
            "last_seen_at",
        ),
        "SELECT * FROM users ORDER BY id",
    ),
    "subscriptions": (
        (
            "id",
            "telegram_id",
            "plan",
            "source",
            "payment_id",
            "granted_by",
            "starts_at",
            "expires_at",
            "revoked_at",
            "created_at",
        ),
        """
        SELECT s.*, u.telegram_id, p.code AS plan
          FROM subscriptions s JOIN users u ON u.id = s.user_id LEFT JOIN plans p ON p.id = s.plan_id
         ORDER BY s.id
        """,
    ),
    "payments": (
        (
            "id",
            "telegram_id",
            "rail",
            "external_id",
            "plan",
            "amount",
            "currency",
            "status",
            "order_id",
            "created_at",
            "confirmed_at",
        ),
        "SELECT p.*, pl.code AS plan FROM payments p LEFT JOIN plans pl ON pl.id = p.plan_id ORDER BY p.id",
    ),
}

# Columns whose text the users chose themselves. A spreadsheet takes a cell starting with one of
# _FORMULA_START for a formula, so such a cell is written with a leading apostrophe.
FREE_TEXT = frozenset({"username", "first_name"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any, free_text: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, str):
        return "'" + value if free_text and value.startswith(_FORMULA_START) else value
    return str(value)


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]], *, free_text: frozenset[str] = frozenset()) -> bytes:
    """The rows as CSV (UTF-8) under `header`; cells of the `free_text` columns guarded."""
    guarded = [name in free_text for name in header]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(value, guard) for value, guard in zip(row, guarded, strict=True)])
    return buffer.getvalue().encode("utf-8")
