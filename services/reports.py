"""What the reports say, read from PostgreSQL, and the claims that send each report once.

No Telegram here: the bot layer (bot/reports.py) words the figures, draws the charts and sends.
A report goes to a subscriber once per report and day: `claim` inserts a row per (kind, day,
subscriber) before anything is sent, and only the rows it inserted come back, so a job run
twice, or by two processes at once, sends each report once. A claim whose send never finished
(the process died in between) stays `claimed`: the report is not sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from domain.channel_stats import CallOutcome
from domain.reports import AlertResult, CallResult, Figures, ReportKind
from managers.postgres import PostgresManager

logger = logging.getLogger("alertbot.reports")

# A month of claims is kept for support ("did my report go out?"), then pruned.
KEEP_DAYS = 35
QUERY_TIMEOUT_SECONDS = 120.0

# Who may get a report at all: active, not paused (a paused subscriber asked for quiet), with
# the report switch on. `u` is users, `s` user_settings.
_WANTS_REPORTS = "u.status = 'active' AND NOT u.paused AND COALESCE(s.reports, true)"

# A subscriber's alerts in ($1, $2] not yet claimed for the day's report ($4), with what their
# token did since, up to $3: the highest market cap and price since the alert, and the latest.
# Alerts Telegram refused or whose chat was gone (deliveries) never reached the subscriber and
# are left out. The peaks are read per (token, alert time): one call alerts all its subscribers
# at the same moment, so there are few of them.
DAILY_SQL = f"""
WITH day_alerts AS (
    SELECT a.user_id, u.telegram_id, u.language, a.token_address, a.created_at,
           a.market_cap_usd, a.price_usd
      FROM alerts a
      JOIN users u ON u.id = a.user_id
      LEFT JOIN user_settings s ON s.user_id = u.id
     WHERE a.created_at > $1 AND a.created_at <= $2
       AND {_WANTS_REPORTS}
       AND NOT EXISTS (SELECT 1 FROM report_deliveries r
                        WHERE r.kind = 'daily' AND r.day = $4 AND r.user_id = a.user_id)
       AND NOT EXISTS (SELECT 1 FROM deliveries d
                        WHERE d.token_address = a.token_address AND d.chat_id = u.telegram_id
                          AND d.status <> 'sent')
), starts AS (
    SELECT DISTINCT token_address, created_at FROM day_alerts
), peaks AS (
    SELECT st.token_address, st.created_at, pk.peak_mcap, pk.peak_price
      FROM starts st
      LEFT JOIN LATERAL (
          SELECT max(p.market_cap_usd) AS peak_mcap, max(p.price_usd) AS peak_price
            FROM token_prices p
           WHERE p.token_address = st.token_address AND p.ts >= st.created_at AND p.ts <= $3
      ) pk ON true
), latest AS (
    SELECT t.token_address, cur.market_cap_usd AS now_mcap, cur.price_usd AS now_price
      FROM (SELECT DISTINCT token_address FROM starts) t
      LEFT JOIN LATERAL (
          SELECT p.market_cap_usd, p.price_usd FROM token_prices p
           WHERE p.token_address = t.token_address AND p.ts <= $3
           ORDER BY p.ts DESC LIMIT 1
      ) cur ON true
)
SELECT a.user_id, a.telegram_id, a.language, a.token_address, tk.symbol, a.created_at,
       a.market_cap_usd, a.price_usd, pk.peak_mcap, pk.peak_price, l.now_mcap, l.now_price
  FROM day_alerts a
  JOIN peaks pk ON pk.token_address = a.token_address AND pk.created_at = a.created_at
  JOIN latest l ON l.token_address = a.token_address
  LEFT JOIN tokens tk ON tk.address = a.token_address
 ORDER BY a.user_id, a.created_at
"""

# Everyone who receives alerts at $1 (a live plan, or an admin: $2) and wants reports, without a
# claim for report $3 of day $4 yet.
RECIPIENTS_SQL = f"""
SELECT u.id AS user_id, u.telegram_id, u.language
  FROM users u
  LEFT JOIN user_settings s ON s.user_id = u.id
 WHERE {_WANTS_REPORTS}
   AND (u.telegram_id = ANY($2::bigint[])
        OR EXISTS (SELECT 1 FROM subscriptions sub
                    WHERE sub.user_id = u.id AND sub.revoked_at IS NULL AND sub.expires_at > $1))
   AND NOT EXISTS (SELECT 1 FROM report_deliveries r WHERE r.kind = $3 AND r.day = $4 AND r.user_id = u.id)
 ORDER BY u.id
"""

# Every call in ($1, $2] and what its token did after it, up to $3.
CALLS_SQL = """
WITH period_calls AS (
    SELECT c.token_address, c.channel_id, c.called_at, c.market_cap_usd, c.price_usd
      FROM calls c
     WHERE c.called_at > $1 AND c.called_at <= $2
), latest AS (
    SELECT t.token_address, cur.market_cap_usd AS now_mcap, cur.price_usd AS now_price
      FROM (SELECT DISTINCT token_address FROM period_calls) t
      LEFT JOIN LATERAL (
          SELECT p.market_cap_usd, p.price_usd FROM token_prices p
           WHERE p.token_address = t.token_address AND p.ts <= $3
           ORDER BY p.ts DESC LIMIT 1
      ) cur ON true
)
SELECT pc.token_address, pc.channel_id, pc.called_at, pc.market_cap_usd, pc.price_usd,
       tk.symbol, ch.name AS channel_name, ch.username AS channel_username,
       pk.peak_mcap, pk.peak_price, l.now_mcap, l.now_price
  FROM period_calls pc
  JOIN latest l ON l.token_address = pc.token_address
  LEFT JOIN tokens tk ON tk.address = pc.token_address
  LEFT JOIN channels ch ON ch.id = pc.channel_id
  LEFT JOIN LATERAL (
      SELECT max(p.market_cap_usd) AS peak_mcap, max(p.price_usd) AS peak_price
        FROM token_prices p
       WHERE p.token_address = pc.token_address AND p.ts >= pc.called_at AND p.ts <= $3
  ) pk ON true
 ORDER BY pc.called_at
"""

# The week's calls as the channel statistics job keeps them (call_outcomes: each call's base and
# the highest value seen after it within 7 days, folded every few minutes while price history
# lasts), so a week of calls costs no scan of a week of prices. Calls never priced are left out.
WEEK_CALLS_SQL = """
SELECT o.token_address, o.channel_id, o.called_at, o.base, o.peak, ch.name AS channel_name,
       ch.username AS channel_username
  FROM call_outcomes o
  LEFT JOIN channels ch ON ch.id = o.channel_id
 WHERE o.called_at > $1 AND o.called_at <= $2
 ORDER BY o.called_at
"""

CLAIM_SQL = """
INSERT INTO report_deliveries (kind, day, user_id)
SELECT $1, $2, candidate FROM unnest($3::bigint[]) AS candidate
ON CONFLICT DO NOTHING
RETURNING user_id
"""

FINISH_SQL = """
UPDATE report_deliveries r
   SET status = o.status, message_id = o.message_id, reason = o.reason, finished_at = now()
  FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::text[]) AS o(user_id, status, message_id, reason)
 WHERE r.kind = $1 AND r.day = $2 AND r.user_id = o.user_id
"""

PRUNE_SQL = "DELETE FROM report_deliveries WHERE claimed_at < $1"


@dataclass(frozen=True)
class Recipient:
    user_id: int  # users.id, what claims are keyed by
    telegram_id: int
    language: str


@dataclass(frozen=True)
class DailyReport:
    """A subscriber's alerts of the period, in alert order."""

    recipient: Recipient
    alerts: tuple[AlertResult, ...]


@dataclass(frozen=True)
class Outcome:
    """What became of a claimed report: sent, gone (the chat), or failed."""

    user_id: int
    status: str
    message_id: int | None = None
    reason: str = ""


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _figures(row: asyncpg.Record) -> Figures:
    return Figures(
        base_mcap=_float(row["market_cap_usd"]),
        base_price=_float(row["price_usd"]),
        peak_mcap=_float(row["peak_mcap"]),
        peak_price=_float(row["peak_price"]),
        now_mcap=_float(row["now_mcap"]),
        now_price=_float(row["now_price"]),
    )


def _channel_name(row: asyncpg.Record) -> str | None:
    username = row["channel_username"]
    return row["channel_name"] or (f"@{username}" if username else None)


class ReportStore:
    """Business queries of the reports on PostgreSQL."""

    def __init__(self, postgres: PostgresManager) -> None:
        self.postgres = postgres

    async def daily(self, start: datetime, end: datetime, now: datetime, day: date) -> list[DailyReport]:
        """Each subscriber with alerts in (`start`, `end`] who wants reports and has no claim
        for `day` yet, with the alerts measured up to `now`."""
        rows = await self.postgres.fetch(DAILY_SQL, start, end, now, day, timeout=QUERY_TIMEOUT_SECONDS)
        reports: list[DailyReport] = []
        recipient: Recipient | None = None
        alerts: list[AlertResult] = []
        for row in rows:
            if recipient is None or recipient.user_id != row["user_id"]:
                if recipient is not None:
                    reports.append(DailyReport(recipient, tuple(alerts)))
                recipient = Recipient(int(row["user_id"]), int(row["telegram_id"]), row["language"])
                alerts = []
            figures = _figures(row)
            alerts.append(
                AlertResult(row["token_address"], row["symbol"], row["created_at"], figures.peak(), figures.current())
            )
        if recipient is not None:
            reports.append(DailyReport(recipient, tuple(alerts)))
        return reports

    async def recipients(self, kind: ReportKind, day: date, now: datetime, admin_ids: Iterable[int]) -> list[Recipient]:
        """Everyone receiving alerts at `now` who wants reports and has no claim for (`kind`, `day`)."""
        rows = await self.postgres.fetch(
            RECIPIENTS_SQL, now, sorted(admin_ids), kind.value, day, timeout=QUERY_TIMEOUT_SECONDS
        )
        return [Recipient(int(r["user_id"]), int(r["telegram_id"]), r["language"]) for r in rows]

    async def calls(self, start: datetime, end: datetime, now: datetime) -> list[CallResult]:
        """Every channel's calls in (`start`, `end`], measured up to `now`."""
        rows = await self.postgres.fetch(CALLS_SQL, start, end, now, timeout=QUERY_TIMEOUT_SECONDS)
        results = []
        for row in rows:
            figures = _figures(row)
            results.append(
                CallResult(
                    token_address=row["token_address"],
                    symbol=row["symbol"],
                    channel_id=row["channel_id"],
                    channel_name=_channel_name(row),
                    called_at=row["called_at"],
                    peak=figures.peak(),
                    current=figures.current(),
                )
            )
        return results

    async def week_calls(self, start: datetime, end: datetime) -> list[CallResult]:
        """Every channel's calls in (`start`, `end`) with their peak so far, as the channel
        statistics measure it (`current` is not kept there: None)."""
        rows = await self.postgres.fetch(WEEK_CALLS_SQL, start, end, timeout=QUERY_TIMEOUT_SECONDS)
        results = []
        for row in rows:
            outcome = CallOutcome(row["called_at"], float(row["base"]), _float(row["peak"]))
            results.append(
                CallResult(
                    token_address=row["token_address"],
                    symbol=None,
                    channel_id=row["channel_id"],
                    channel_name=_channel_name(row),
                    called_at=row["called_at"],
                    peak=outcome.multiple,
                    current=None,
                )
            )
        return results

    async def claim(self, kind: ReportKind, day: date, user_ids: Sequence[int]) -> set[int]:
        """Claim (`kind`, `day`) for each of `user_ids`; returns those claimed now, which this
        caller alone may send to."""
        if not user_ids:
            return set()
        rows = await self.postgres.fetch(CLAIM_SQL, kind.value, day, list(user_ids))
        return {int(row["user_id"]) for row in rows}

    async def finish(self, kind: ReportKind, day: date, outcomes: Sequence[Outcome]) -> None:
        """Record what the sender made of claimed reports."""
        if not outcomes:
            return
        await self.postgres.execute(
            FINISH_SQL,
            kind.value,
            day,
            [o.user_id for o in outcomes],
            [o.status for o in outcomes],
            [o.message_id for o in outcomes],
            [o.reason[:500] or None for o in outcomes],
        )

    async def prune(self, before: datetime) -> int:
        status = await self.postgres.execute(PRUNE_SQL, before)
        try:
            return int(str(status).rsplit(" ", 1)[-1])
        except ValueError:
            return 0
