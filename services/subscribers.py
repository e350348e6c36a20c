"""Subscribers: who they are, their filters, their plan; and the rule of who receives alerts.

`SubscriberStore` keeps each subscriber in the in-process cache, in Redis (written first) and in
PostgreSQL; a change PostgreSQL missed waits on a retry list and is written later. Plans are
the payments ledger's (payments/ledger.py), which writes them into Redis. No Telegram
imports: the bot, the matcher and the schedulers share this module. Keys and the retry rule:
docs/architecture.md, "Subscriber store".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg

from domain.filters import Filters
from domain.subscriber import Subscriber, language_of
from managers.postgres import PostgresManager, PostgresNotStarted
from managers.redis_manager import REDIS_ERRORS, RedisManager
from services.cache import CacheRegistry

logger = logging.getLogger("alertbot.subscribers")
settings_log = logging.getLogger("alertbot.settings")

SUBSCRIBERS_KEY = "subscribers"
RETRY_KEY = "subscribers:pg_retry"
CHANGE_CACHES = frozenset({"user_settings", "subscriptions"})
STATUSES = frozenset({"active", "blocked", "banned"})
# Sources of a change the user made themselves; such a change of a filter ends following a preset.
MANUAL_SOURCES = frozenset({"command", "menu"})

# What PostgreSQL being unreachable looks like (as opposed to a query that is wrong).
PG_FAILURES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    asyncio.TimeoutError,
    PostgresNotStarted,
)
# Errors that retrying cannot fix: such a retry entry is dropped (and logged) instead of looping.
_PG_PERMANENT: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.SyntaxOrAccessError,
)
# A deferred write that retrying cannot fix: malformed, or rejected by PostgreSQL.
_ENTRY_REJECTED: tuple[type[BaseException], ...] = (*_PG_PERMANENT, KeyError, ValueError, TypeError)


def subscriber_key(telegram_id: int) -> str:
    return f"subscriber:{telegram_id}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class StoreUnavailable(RuntimeError):
    """The stores could not answer (PostgreSQL down and Redis without the subscriber)."""


class UnknownSubscriber(LookupError):
    """No subscriber with this telegram_id (they never sent /start)."""


def _filters_json(filters: Filters) -> str:
    return json.dumps(filters.to_dict(), sort_keys=True, ensure_ascii=False)


def _to_hash(sub: Subscriber) -> dict[str, str]:
    return {
        "filters": _filters_json(sub.filters),
        "paused": "1" if sub.paused else "0",
        "followup_min": str(sub.followup_min),
        "reports": "1" if sub.reports else "0",
        "status": sub.status,
        "is_admin": "1" if sub.is_admin else "0",
        "plan_expires_at": epoch_text(sub.plan_expires_at),
        "language": sub.language,
        "username": sub.username or "",
        "first_name": sub.first_name or "",
        "preset": sub.preset or "",
    }


def _jsonb(value: Any) -> str | None:
    """A filter value as jsonb text; an unset filter is SQL NULL."""
    return None if value is None else json.dumps(value)


def epoch_text(moment: datetime | None) -> str:
    """A moment as the subscriber hash (and the plan records beside it) keep one: epoch seconds
    as text, "" for none."""
    return "" if moment is None else repr(moment.timestamp())


def from_epoch_text(raw: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(raw), UTC) if raw else None


# One row per subscriber; the plan is the latest expiry of their unrevoked subscriptions
# (grants chain from the previous expiry, so the latest is when the plan runs out).
_SELECT = """
SELECT u.telegram_id, u.username, u.first_name, u.language, u.status, u.paused,
       COALESCE(s.followup_min, 2) AS followup_min, COALESCE(s.reports, true) AS reports,
       COALESCE(s.filters, '{}'::jsonb) AS filters, s.preset_code AS preset,
       (SELECT max(sub.expires_at) FROM subscriptions sub
         WHERE sub.user_id = u.id AND sub.revoked_at IS NULL) AS plan_expires_at
  FROM users u
  LEFT JOIN user_settings s ON s.user_id = u.id
"""


class SubscriberStore:
    """Business queries on subscribers over SmartCache, Redis and PostgreSQL (see the module doc)."""

    def __init__(
        self,
        redis: RedisManager,
        postgres: PostgresManager,
        caches: CacheRegistry,
        admin_ids: frozenset[int],
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.redis = redis
        self.postgres = postgres
        self.caches = caches
        self.admin_ids = frozenset(admin_ids)
        self.clock = clock
        self._cache = caches["user_settings"]
        # Retry entries made while Redis was down too; flushed like the Redis list.
        self._local_retry: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._flush_lock = asyncio.Lock()
        # Bumped on every invalidation: a read that raced one must not cache what it read.
        self._generation = 0
        caches.add_listener(self._on_invalidation)

    def _on_invalidation(self, name: str, key: str) -> None:
        if name in CHANGE_CACHES:
            self._generation += 1

    # ------------------------------------------------------------------ reading

    async def get(self, telegram_id: int) -> Subscriber | None:
        """The subscriber, or None if unknown. Raises StoreUnavailable when no store can say."""
        cached = self._cache.get(telegram_id)
        if cached is not None:
            return cached
        generation = self._generation
        sub = await self._from_redis(telegram_id)
        if sub is None:
            try:
                sub = await self._from_pg(telegram_id)
            except PG_FAILURES as exc:
                raise StoreUnavailable(f"cannot load subscriber {telegram_id}: {exc!r}") from exc
            if sub is None:
                return None
            # Redis lost it (restart of the embedded stand-in, eviction): put it back, with the
            # plan Redis still has when that is later (payments reach Redis before PostgreSQL).
            sub = await self._with_redis_plan(sub)
            await self._write_redis(sub)
        if generation == self._generation:
            self._cache.set(telegram_id, sub)
        return sub

    async def receiving(self) -> list[Subscriber]:
        """Everyone who receives alerts now, from PostgreSQL in one query (to build the match index)."""
        await self.flush_pending()  # so PostgreSQL has every change Redis already holds
        rows = await self.postgres.fetch(
            _SELECT
            + """
             WHERE u.status = 'active' AND NOT u.paused
               AND (u.telegram_id = ANY($1::bigint[])
                    OR EXISTS (SELECT 1 FROM subscriptions sub
                                WHERE sub.user_id = u.id AND sub.revoked_at IS NULL
                                  AND sub.expires_at > $2))
             ORDER BY u.telegram_id
            """,
            sorted(self.admin_ids),
            self.clock(),
        )
        return [self._from_row(row) for row in rows]

    def on_change(self, callback: Callable[[int], None]) -> None:
        """`callback(telegram_id)` whenever a subscriber changes in any process (may repeat)."""

        def listener(name: str, key: str) -> None:
            if name in CHANGE_CACHES and key.lstrip("-").isdigit():
                callback(int(key))

        self.caches.add_listener(listener)

    # ------------------------------------------------------------------ writing

    async def register(
        self, telegram_id: int, *, username: str | None, first_name: str | None, language_code: str | None
    ) -> Subscriber:
        """Create the subscriber, or refresh a returning one's name and role (their filters and
        chosen language stay). Raises StoreUnavailable when PostgreSQL is down."""
        role = "admin" if telegram_id in self.admin_ids else "user"
        try:
            async with self.postgres.transaction() as conn:
                user_id = await conn.fetchval(
                    """
                    INSERT INTO users (telegram_id, username, first_name, language, role, last_seen_at)
                    VALUES ($1, $2, $3, $4, $5, $6)
                    ON CONFLICT (telegram_id) DO UPDATE
                       SET username = EXCLUDED.username, first_name = EXCLUDED.first_name,
                           role = EXCLUDED.role, last_seen_at = EXCLUDED.last_seen_at
                    RETURNING id
                    """,
                    telegram_id,
                    username,
                    first_name,
                    language_of(language_code),
                    role,
                    self.clock(),
                )
                await conn.execute(
                    "INSERT INTO user_settings (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING", user_id
                )
            sub = await self._from_pg(telegram_id)
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot register subscriber {telegram_id}: {exc!r}") from exc
        assert sub is not None
        await self._merge_redis(sub, ("username", "first_name", "is_admin"))
        await self.redis.sadd(SUBSCRIBERS_KEY, telegram_id)
        # A new admin receives alerts at once: the matchers must hear of them.
        await self.caches.invalidate("user_settings", telegram_id)
        logger.info("registered subscriber %s (%s)", telegram_id, role)
        return await self._require(telegram_id)

    async def update_filters(self, telegram_id: int, new: Filters, *, name: str, source: str = "command") -> Subscriber:
        """Save `new` (a change of filter `name`): Redis, then PostgreSQL with a history row, then
        the settings log, then every process's cache. A PostgreSQL failure defers its part.

        A change the user made by hand (source 'command' or 'menu') ends following a preset, in
        the same write: the filters are their own now, and an admin's later change of the preset
        must not overwrite them."""
        current = await self._require(telegram_id)
        old_value = current.filters.to_dict().get(name)
        new_value = new.to_dict().get(name)
        unfollow = current.preset is not None and source in MANUAL_SOURCES
        fields: dict[str, str] = {"filters": _filters_json(new)}
        if unfollow:
            fields["preset"] = ""
        await self.redis.hset(subscriber_key(telegram_id), mapping=fields)
        changed_at = self.clock().isoformat()
        history = [{"name": name, "old": old_value, "new": new_value, "source": source, "changed_at": changed_at}]
        if unfollow:
            history.append(
                {"name": "preset", "old": current.preset, "new": None, "source": source, "changed_at": changed_at}
            )
        saved = await self._save_to_pg(telegram_id, filters=new, history=history, preset_changed=unfollow, preset=None)
        settings_log.info(
            "user %s %s: %s -> %s (source=%s%s%s)",
            telegram_id,
            name,
            json.dumps(old_value),
            json.dumps(new_value),
            source,
            f", stopped following preset {current.preset}" if unfollow else "",
            "" if saved else ", postgres deferred",
        )
        return await self._changed(replace(current, filters=new, preset=None if unfollow else current.preset))

    async def apply_filters(self, telegram_id: int, filters: Filters, *, source: str, preset: str | None) -> Subscriber:
        """Replace the whole filter set with `filters` and make `preset` the followed one (None:
        follow nothing), saved like update_filters: history rows 'filters' (old and new whole
        sets) and, when following changes, 'preset' (old and new codes). Nothing changing writes
        nothing. The preset is not checked here: PostgreSQL stores NULL for one that is gone."""
        current = await self._require(telegram_id)
        old_filters, new_filters = current.filters.to_dict(), filters.to_dict()
        changed_at = self.clock().isoformat()
        history: list[dict[str, Any]] = []
        if old_filters != new_filters:
            history.append(
                {"name": "filters", "old": old_filters, "new": new_filters, "source": source, "changed_at": changed_at}
            )
        if current.preset != preset:
            history.append(
                {"name": "preset", "old": current.preset, "new": preset, "source": source, "changed_at": changed_at}
            )
        if not history:
            return current
        await self.redis.hset(
            subscriber_key(telegram_id), mapping={"filters": _filters_json(filters), "preset": preset or ""}
        )
        saved = await self._save_to_pg(
            telegram_id, filters=filters, history=history, preset_changed=True, preset=preset
        )
        settings_log.info(
            "user %s filters: %s -> %s, preset %s -> %s (source=%s%s)",
            telegram_id,
            json.dumps(old_filters, sort_keys=True),
            json.dumps(new_filters, sort_keys=True),
            current.preset,
            preset,
            source,
            "" if saved else ", postgres deferred",
        )
        return await self._changed(replace(current, filters=filters, preset=preset))

    async def set_following(self, telegram_id: int, code: str | None, *, source: str = "menu") -> Subscriber:
        """Follow the preset `code` (None: follow nothing) without touching the filters; a
        'preset' history row records it. Use apply_filters to follow and take its filters."""
        current = await self._require(telegram_id)
        if current.preset == code:
            return current
        await self.redis.hset(subscriber_key(telegram_id), "preset", code or "")
        history = [
            {
                "name": "preset",
                "old": current.preset,
                "new": code,
                "source": source,
                "changed_at": self.clock().isoformat(),
            }
        ]
        saved = await self._save_to_pg(telegram_id, history=history, preset_changed=True, preset=code)
        settings_log.info(
            "user %s preset: %s -> %s (source=%s%s)",
            telegram_id,
            current.preset,
            code,
            source,
            "" if saved else ", postgres deferred",
        )
        return await self._changed(replace(current, preset=code))

    async def set_paused(self, telegram_id: int, paused: bool) -> Subscriber:
        current = await self._require(telegram_id)
        await self.redis.hset(subscriber_key(telegram_id), "paused", "1" if paused else "0")
        history = None
        if paused != current.paused:
            history = {
                "name": "paused",
                "old": current.paused,
                "new": paused,
                "source": "command",
                "changed_at": self.clock().isoformat(),
            }
        saved = await self._save_to_pg(telegram_id, paused=paused, history=history)
        settings_log.info(
            "user %s %s alerts%s",
            telegram_id,
            "paused" if paused else "resumed",
            "" if saved else " (postgres deferred)",
        )
        return await self._changed(replace(current, paused=paused))

    async def set_preferences(
        self, telegram_id: int, *, followup_min: int | None = None, reports: bool | None = None
    ) -> Subscriber:
        """Which messages after an alert the subscriber wants: follow-ups from `followup_min` on
        (0: none) and the reports; saved like the other settings."""
        current = await self._require(telegram_id)
        changed: dict[str, Any] = {}
        if followup_min is not None and followup_min != current.followup_min:
            changed["followup_min"] = followup_min
        if reports is not None and reports != current.reports:
            changed["reports"] = reports
        if not changed:
            return current
        await self.redis.hset(
            subscriber_key(telegram_id),
            mapping={k: (("1" if v else "0") if isinstance(v, bool) else str(v)) for k, v in changed.items()},
        )
        now = self.clock().isoformat()
        history = [
            {"name": name, "old": getattr(current, name), "new": value, "source": "menu", "changed_at": now}
            for name, value in changed.items()
        ]
        saved = await self._save_to_pg(telegram_id, preferences=changed, history=history)
        settings_log.info("user %s %s%s", telegram_id, changed, "" if saved else " (postgres deferred)")
        return await self._changed(replace(current, **changed))

    async def set_language(self, telegram_id: int, language: str, *, source: str = "menu") -> Subscriber:
        """The language the bot speaks to them, saved like a filter change (history row
        'language'; PostgreSQL deferred on failure)."""
        current = await self._require(telegram_id)
        if language == current.language:
            return current
        await self.redis.hset(subscriber_key(telegram_id), "language", language)
        history = {
            "name": "language",
            "old": current.language,
            "new": language,
            "source": source,
            "changed_at": self.clock().isoformat(),
        }
        saved = await self._save_to_pg(telegram_id, language=language, history=history)
        settings_log.info(
            "user %s language %s -> %s%s",
            telegram_id,
            current.language,
            language,
            "" if saved else " (postgres deferred)",
        )
        return await self._changed(replace(current, language=language))

    async def set_status(self, telegram_id: int, status: str) -> Subscriber:
        """'active', 'blocked' (the user blocked the bot) or 'banned' (an admin did); saved like
        a filter change: Redis first, PostgreSQL deferred on failure."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {sorted(STATUSES)}")
        current = await self._require(telegram_id)
        await self.redis.hset(subscriber_key(telegram_id), "status", status)
        saved = await self._save_to_pg(telegram_id, status=status)
        settings_log.info(
            "user %s status %s -> %s%s", telegram_id, current.status, status, "" if saved else " (postgres deferred)"
        )
        return await self._changed(replace(current, status=status))

    async def plan_changed(self, telegram_id: int) -> None:
        """The plan in the subscriber's Redis hash changed (the payments ledger wrote it): every
        process drops its copy, and the match index reads the new one."""
        await self.caches.invalidate("subscriptions", telegram_id)
        await self.caches.invalidate("user_settings", telegram_id)

    async def log_activity(
        self, actor: int | None, action: str, details: Mapping[str, Any] | None = None, *, subject: int | None = None
    ) -> bool:
        """A row in activity_log (user_id: `subject`'s row, else the actor's). Never raises:
        the audit trail must not break the command it records; a failure is logged."""
        try:
            await self.postgres.execute(
                """
                INSERT INTO activity_log (user_id, actor_telegram_id, action, details)
                VALUES ((SELECT id FROM users WHERE telegram_id = $1), $2, $3, $4)
                """,
                subject if subject is not None else actor,
                actor,
                action,
                dict(details or {}),
            )
        except PG_FAILURES as exc:
            logger.error("activity_log lost %s by %s %s: %r", action, actor, dict(details or {}), exc)
            return False
        return True

    # ------------------------------------------------------------------ the PostgreSQL retry queue

    async def flush_pending(self) -> int:
        """Write deferred changes to PostgreSQL; returns how many entries were written. Stops at
        the first outage (the entry goes back to the front); never raises."""
        written = 0
        async with self._flush_lock:
            while (entry := await self._pop_retry()) is not None:
                try:
                    await self._write_entry(entry)
                except _ENTRY_REJECTED as exc:
                    # Retrying cannot fix a malformed entry or one PostgreSQL rejects: drop it, loudly.
                    logger.error("dropping a deferred settings write that cannot be applied: %s (%r)", entry, exc)
                    continue
                except PG_FAILURES as exc:
                    await self._push_retry(entry, front=True)
                    logger.warning("PostgreSQL still failing (%r); deferred settings writes kept", exc)
                    break
                written += 1
        if written:
            logger.info("wrote %d deferred settings change(s) to PostgreSQL", written)
        return written

    async def pending_count(self) -> int:
        try:
            async with self.redis.guarded() as client:
                remote = int(await client.llen(RETRY_KEY))
        except REDIS_ERRORS:
            remote = 0
        return remote + len(self._local_retry)

    async def _save_to_pg(
        self,
        telegram_id: int,
        *,
        filters: Filters | None = None,
        paused: bool | None = None,
        status: str | None = None,
        language: str | None = None,
        history: dict[str, Any] | list[dict[str, Any]] | None = None,
        preset_changed: bool = False,
        preset: str | None = None,
        preferences: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write the fields given (None = not changed; the preset only with `preset_changed`,
        since None is a value it can take) to PostgreSQL, or queue them for retry."""
        entry = {
            "telegram_id": telegram_id,
            "filters": None if filters is None else filters.to_dict(),
            "paused": paused,
            "status": status,
            "language": language,
            "history": history,
            # Wrapped so that "now follows nothing" differs from "following not changed".
            "preset": {"code": preset} if preset_changed else None,
            "preferences": dict(preferences) if preferences else None,
        }
        try:
            await self._write_entry(entry)
        except PG_FAILURES as exc:
            logger.error(
                "PostgreSQL write of %s's settings failed (%r); kept in Redis, queued for retry", telegram_id, exc
            )
            await self._push_retry(entry)
            return False
        await self.flush_pending()  # PostgreSQL answers again: catch up on older deferred writes
        return True

    async def _write_entry(self, entry: Mapping[str, Any]) -> None:
        """Write the entry's fields to PostgreSQL, with the values Redis holds now (the latest;
        the entry's own only if Redis lost them), and its history row stamped with when the
        change really happened. Fields the entry did not change are left alone."""
        telegram_id = int(entry["telegram_id"])
        stored = await self.redis.hgetall(subscriber_key(telegram_id))
        filters = paused = status = None
        if entry.get("filters") is not None:
            filters = json.loads(stored["filters"]) if "filters" in stored else entry["filters"]
        if entry.get("paused") is not None:
            paused = stored["paused"] == "1" if "paused" in stored else bool(entry["paused"])
        if entry.get("status") is not None:
            status = stored["status"] if stored.get("status") in STATUSES else entry["status"]
        language = None
        if entry.get("language") is not None:
            language = stored.get("language") or entry["language"]
        preset_change = entry.get("preset")
        preset = None
        if preset_change is not None:
            preset = (stored["preset"] or None) if "preset" in stored else preset_change["code"]
        preferences = entry.get("preferences")
        if preferences:
            # The values Redis holds now: a later change may have overtaken this one.
            for name in list(preferences):
                if name in stored:
                    preferences[name] = int(stored[name]) if name == "followup_min" else stored[name] == "1"
        # One history row (entries queued before several were possible) or a list of them.
        history = entry.get("history")
        history_rows = [] if history is None else [history] if isinstance(history, Mapping) else list(history)
        async with self.postgres.transaction() as conn:
            user_id = await conn.fetchval(
                """
                UPDATE users SET paused = COALESCE($2, paused), status = COALESCE($3, status),
                                 language = COALESCE($4, language)
                 WHERE telegram_id = $1 RETURNING id
                """,
                telegram_id,
                paused,
                status,
                language,
            )
            if user_id is None:
                logger.warning("settings of unknown user %s not written to PostgreSQL", telegram_id)
                return
            if filters is not None:
                await conn.execute(
                    """
                    INSERT INTO user_settings (user_id, filters) VALUES ($1, $2)
                    ON CONFLICT (user_id) DO UPDATE SET filters = EXCLUDED.filters
                    """,
                    user_id,
                    filters,
                )
            if preset_change is not None:
                # A preset deleted since the user followed it is followed by nobody: NULL, not
                # a foreign-key error that would make the whole write (filters too) fail for good.
                await conn.execute(
                    """
                    INSERT INTO user_settings (user_id, preset_code)
                    VALUES ($1, (SELECT code FROM presets WHERE code = $2))
                    ON CONFLICT (user_id) DO UPDATE SET preset_code = EXCLUDED.preset_code
                    """,
                    user_id,
                    preset,
                )
            if preferences:
                await conn.execute(
                    """
                    INSERT INTO user_settings (user_id, followup_min, reports)
                    VALUES ($1, COALESCE($2, 2), COALESCE($3, true))
                    ON CONFLICT (user_id) DO UPDATE
                       SET followup_min = COALESCE($2, user_settings.followup_min),
                           reports = COALESCE($3, user_settings.reports)
                    """,
                    user_id,
                    preferences.get("followup_min"),
                    preferences.get("reports"),
                )
            for row in history_rows:
                await conn.execute(
                    """
                    INSERT INTO settings_history (user_id, name, old_value, new_value, source, changed_at)
                    VALUES ($1, $2, $3, $4, $5, $6)
                    """,
                    user_id,
                    row["name"],
                    _jsonb(row["old"]),
                    _jsonb(row["new"]),
                    row["source"],
                    datetime.fromisoformat(row["changed_at"]),
                )

    async def _push_retry(self, entry: Mapping[str, Any], *, front: bool = False) -> None:
        payload = json.dumps(entry, ensure_ascii=False)
        try:
            async with self.redis.guarded() as client:
                await (client.lpush(RETRY_KEY, payload) if front else client.rpush(RETRY_KEY, payload))
        except REDIS_ERRORS:
            # Both stores down: this process remembers it (lost only if it also restarts).
            (self._local_retry.appendleft if front else self._local_retry.append)(dict(entry))

    async def _pop_retry(self) -> dict[str, Any] | None:
        if self._local_retry:
            return self._local_retry.popleft()
        try:
            async with self.redis.guarded() as client:
                raw = cast(str | None, await client.lpop(RETRY_KEY))  # one element, as text (decode_responses)
        except REDIS_ERRORS:
            return None
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------------ helpers

    async def _require(self, telegram_id: int) -> Subscriber:
        sub = await self.get(telegram_id)
        if sub is None:
            raise UnknownSubscriber(telegram_id)
        return sub

    async def _changed(self, sub: Subscriber) -> Subscriber:
        await self.caches.invalidate("user_settings", sub.telegram_id)
        self._cache.set(sub.telegram_id, sub)
        return sub

    async def _merge_redis(self, sub: Subscriber, fields: tuple[str, ...]) -> None:
        """Write only `fields` of `sub` when Redis has the subscriber (it may hold changes
        PostgreSQL has not caught up with), else all of it."""
        if await self.redis.hget(subscriber_key(sub.telegram_id), "status") is None:
            await self._write_redis(await self._with_redis_plan(sub))
            return
        whole = _to_hash(sub)
        await self.redis.hset(subscriber_key(sub.telegram_id), mapping={name: whole[name] for name in fields})

    async def _write_redis(self, sub: Subscriber) -> None:
        await self.redis.hset(subscriber_key(sub.telegram_id), mapping=_to_hash(sub))
        await self.redis.sadd(SUBSCRIBERS_KEY, sub.telegram_id)

    async def _from_redis(self, telegram_id: int) -> Subscriber | None:
        try:
            stored = await self.redis.hgetall(subscriber_key(telegram_id))
        except REDIS_ERRORS as exc:
            logger.warning("Redis read of subscriber %s failed (%r); reading PostgreSQL", telegram_id, exc)
            return None
        if "status" not in stored or "filters" not in stored:
            return None  # absent, or a partial hash: PostgreSQL has the whole subscriber
        try:
            return Subscriber(
                telegram_id=telegram_id,
                filters=Filters.from_dict(json.loads(stored["filters"])),
                paused=stored.get("paused") == "1",
                followup_min=int(stored.get("followup_min") or 2),
                reports=stored.get("reports", "1") == "1",
                status=stored["status"],
                # ADMIN_IDS decides, so a changed setting takes effect without touching the stores.
                is_admin=telegram_id in self.admin_ids,
                plan_expires_at=from_epoch_text(stored.get("plan_expires_at")),
                language=stored.get("language") or "en",
                username=stored.get("username") or None,
                first_name=stored.get("first_name") or None,
                preset=stored.get("preset") or None,
            )
        except (ValueError, TypeError) as exc:
            logger.error("unreadable Redis hash for subscriber %s (%r); reading PostgreSQL", telegram_id, exc)
            return None

    async def _with_redis_plan(self, sub: Subscriber) -> Subscriber:
        try:
            raw = await self.redis.hget(subscriber_key(sub.telegram_id), "plan_expires_at")
        except REDIS_ERRORS:
            return sub
        try:
            redis_plan = from_epoch_text(raw)
        except ValueError:
            return sub
        if redis_plan is not None and (sub.plan_expires_at is None or redis_plan > sub.plan_expires_at):
            return replace(sub, plan_expires_at=redis_plan)
        return sub

    async def _from_pg(self, telegram_id: int) -> Subscriber | None:
        row = await self.postgres.fetchrow(_SELECT + " WHERE u.telegram_id = $1", telegram_id)
        return None if row is None else self._from_row(row)

    def _from_row(self, row: Mapping[str, Any]) -> Subscriber:
        return Subscriber(
            telegram_id=int(row["telegram_id"]),
            filters=Filters.from_dict(row["filters"] or {}),
            paused=bool(row["paused"]),
            followup_min=int(row["followup_min"]),
            reports=bool(row["reports"]),
            status=row["status"],
            is_admin=int(row["telegram_id"]) in self.admin_ids,
            plan_expires_at=row["plan_expires_at"],
            language=row["language"],
            username=row["username"],
            first_name=row["first_name"],
            preset=row["preset"],
        )
