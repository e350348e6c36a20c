"""A subscriber's account beyond their settings: referrals, the /status figures, plans on offer,
and deleting everything the bot keeps about them (/privacy). Settings themselves (filters,
preset, pause, language) are SubscriberStore's. `PaySupportGate` limits payment-support requests.

No Telegram imports: the bot and the HTTP side may share this.
"""

from __future__ import annotations

import logging
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from domain.plans import Plan
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager
from services.subscribers import (
    PG_FAILURES,
    SUBSCRIBERS_KEY,
    StoreUnavailable,
    SubscriberStore,
    settings_log,
    subscriber_key,
)

logger = logging.getLogger("alertbot.accounts")

REFERRAL_ALPHABET = string.ascii_lowercase + string.digits
REFERRAL_LENGTH = 8
# Telegram allows 64 characters of /start payload; "ref_" + 8 is far inside it.
REFERRAL_ATTEMPTS = 5
PAYSUPPORT_INTERVAL = 60  # seconds between two support requests of one user


@dataclass(frozen=True)
class AccountFigures:
    """What /status shows beyond the Subscriber itself."""

    alerts_today: int
    referral_code: str | None
    referred_users: int


def new_referral_code() -> str:
    return "".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(REFERRAL_LENGTH))


def parse_start_payload(payload: str | None) -> tuple[str, str] | None:
    """`/start ref_ab12cd34` -> ("ref", "ab12cd34"); `/start plan_month` -> ("plan", "month").

    Anything else (no payload, an unknown kind, characters a code never has) -> None, so a
    mangled link still gets the plain welcome.
    """
    if not payload:
        return None
    kind, sep, value = payload.partition("_")
    if not sep or kind not in ("ref", "plan") or not value or len(value) > 32:
        return None
    if not all(ch in REFERRAL_ALPHABET + "_" for ch in value):
        return None
    return kind, value


def start_of_day(moment: datetime) -> datetime:
    return datetime.combine(moment.date(), time.min, tzinfo=moment.tzinfo)


class AccountService:
    def __init__(self, store: SubscriberStore, postgres: PostgresManager) -> None:
        self.store = store
        self.postgres = postgres

    async def record_referral(self, telegram_id: int, code: str) -> int | None:
        """Record who referred a user on their first /start; returns the referrer's telegram id.

        Nothing changes when the code is unknown, is the user's own, or the user already has
        a referrer (the first link they came by wins).
        """
        try:
            referrer = await self.postgres.fetchval(
                """
                UPDATE users u SET referred_by = r.id
                  FROM users r
                 WHERE u.telegram_id = $1 AND r.referral_code = $2
                   AND r.id <> u.id AND u.referred_by IS NULL
                RETURNING r.telegram_id
                """,
                telegram_id,
                code,
            )
        except PG_FAILURES as exc:
            logger.warning("could not record the referral of %s by code %r: %r", telegram_id, code, exc)
            return None
        if referrer is not None:
            settings_log.info("user %s referred by %s", telegram_id, referrer)
        return referrer

    async def referral_code(self, telegram_id: int) -> str:
        """The user's own invite code, made on first request."""
        try:
            existing = await self.postgres.fetchval(
                "SELECT referral_code FROM users WHERE telegram_id = $1", telegram_id
            )
            if existing:
                return str(existing)
            for _ in range(REFERRAL_ATTEMPTS):
                code = new_referral_code()
                stored = await self.postgres.fetchval(
                    """
                    UPDATE users SET referral_code = $2
                     WHERE telegram_id = $1 AND referral_code IS NULL
                       AND NOT EXISTS (SELECT 1 FROM users WHERE referral_code = $2)
                    RETURNING referral_code
                    """,
                    telegram_id,
                    code,
                )
                if stored:
                    return str(stored)
                again = await self.postgres.fetchval(
                    "SELECT referral_code FROM users WHERE telegram_id = $1", telegram_id
                )
                if again:  # another request made it meanwhile
                    return str(again)
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot read {telegram_id}'s referral code: {exc!r}") from exc
        raise StoreUnavailable(f"no free referral code for {telegram_id} after {REFERRAL_ATTEMPTS} tries")

    async def figures(self, telegram_id: int, now: datetime) -> AccountFigures:
        try:
            row = await self.postgres.fetchrow(
                """
                SELECT u.referral_code,
                       (SELECT count(*) FROM alerts a WHERE a.user_id = u.id AND a.created_at >= $2) AS alerts_today,
                       (SELECT count(*) FROM users r WHERE r.referred_by = u.id) AS referred
                  FROM users u WHERE u.telegram_id = $1
                """,
                telegram_id,
                start_of_day(now),
            )
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot read {telegram_id}'s figures: {exc!r}") from exc
        if row is None:
            return AccountFigures(0, None, 0)
        return AccountFigures(int(row["alerts_today"]), row["referral_code"], int(row["referred"]))

    async def plans(self) -> list[Plan]:
        try:
            rows = await self.postgres.fetch(
                "SELECT code, title, days, price_stars, price_sol, price_usd FROM plans WHERE active"
                " ORDER BY sort_order, days"
            )
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot read plans: {exc!r}") from exc
        return [Plan(r["code"], r["title"], r["days"], r["price_stars"], r["price_sol"], r["price_usd"]) for r in rows]

    async def delete_everything(self, telegram_id: int, extra_redis_keys: list[str]) -> bool:
        """Delete the user's rows and keys; returns False if there was no such user.

        PostgreSQL goes first: its cascades remove settings, history, alerts, multipliers,
        subscriptions and notifications; payment rows stay for the accounts but lose the link
        to the user and the payer's id. If PostgreSQL is down nothing is deleted (the user is
        told to try again), so a half-deleted account cannot come back from the other store.
        """
        try:
            async with self.postgres.transaction() as conn:
                user_id = await conn.fetchval("SELECT id FROM users WHERE telegram_id = $1", telegram_id)
                await conn.execute(
                    "UPDATE payments SET telegram_id = NULL, raw = NULL WHERE telegram_id = $1", telegram_id
                )
                await conn.execute("DELETE FROM deliveries WHERE chat_id = $1", telegram_id)
                await conn.execute("DELETE FROM activity_log WHERE actor_telegram_id = $1", telegram_id)
                if user_id is not None:
                    await conn.execute("DELETE FROM activity_log WHERE user_id = $1", user_id)
                    await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot delete {telegram_id}'s data: {exc!r}") from exc
        await self.store.redis.delete(subscriber_key(telegram_id), *extra_redis_keys)
        await self.store.redis.srem(SUBSCRIBERS_KEY, telegram_id)
        await self.store.caches.invalidate("user_settings", telegram_id)
        await self.store.caches.invalidate("subscriptions", telegram_id)
        settings_log.info("user %s deleted their data", telegram_id)
        return user_id is not None


def plan_expiry_text(expires: datetime | None, now: datetime) -> tuple[str, int] | None:
    """(date, days left) of an active plan, None when there is none."""
    if expires is None or expires <= now:
        return None
    left = expires - now
    return expires.strftime("%Y-%m-%d"), max(1, left.days + (1 if left % timedelta(days=1) else 0))


def paysupport_key(telegram_id: int) -> str:
    """Exists for PAYSUPPORT_INTERVAL seconds after the user's last forwarded request."""
    return f"paysupport:{telegram_id}"


class PaySupportGate:
    """One payment-support request per user per `interval` seconds, the minute a Redis key with a TTL."""

    def __init__(self, redis: RedisManager, interval: int = PAYSUPPORT_INTERVAL) -> None:
        self.redis = redis
        self.interval = interval

    async def claim(self, telegram_id: int) -> int:
        """0 when the user may write to the team now (their minute starts), else seconds to wait."""
        key = paysupport_key(telegram_id)
        if await self.redis.set(key, "1", ex=self.interval, nx=True):
            return 0
        left = await self.redis.ttl(key)
        if left == -2:  # expired in between: this request may go
            return 0 if await self.redis.set(key, "1", ex=self.interval, nx=True) else 1
        return left if left > 0 else self.interval

    async def release(self, telegram_id: int) -> None:
        """Nothing was forwarded: the user may try again at once."""
        await self.redis.delete(paysupport_key(telegram_id))
