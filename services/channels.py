"""Calling channels and their latest statistics, from the fastest place that has them.

In-process SmartCache (30 min) -> Redis `channel:{id}:info` (30 min, one MGET for all misses)
-> PostgreSQL (one query for what is left). A `channel` frame updates all three and drops the
cached copy in every process, so per-channel filters always see the latest statistics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import cast

from domain.events import Channel, ChannelStatsEvent
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager, RedisUnavailable
from services.cache import CHANNELS, CacheRegistry
from services.persistence import PersistenceWriter

logger = logging.getLogger("alertbot.channels")

CHANNEL_INFO_TTL_SECONDS = 30 * 60


def channel_info_key(channel_id: str) -> str:
    return f"channel:{channel_id}:info"


_FIELDS = ("id", "name", "username", "win_rate", "avg_gain", "calls")


def channel_to_json(channel: Channel) -> str:
    return json.dumps({name: getattr(channel, name) for name in _FIELDS})


def channel_from_json(text: str) -> Channel:
    data = json.loads(text)
    return Channel(**{name: data.get(name) for name in _FIELDS})


class ChannelDirectory:
    def __init__(
        self,
        redis: RedisManager,
        postgres: PostgresManager | None,
        caches: CacheRegistry,
        persistence: PersistenceWriter | None = None,
    ) -> None:
        self.redis = redis
        self.postgres = postgres
        self.cache = caches[CHANNELS.name]
        self.caches = caches
        self.persistence = persistence

    async def info(self, channel_ids: Sequence[str]) -> dict[str, Channel]:
        found: dict[str, Channel] = {}
        missing: list[str] = []
        for channel_id in channel_ids:
            cached = self.cache.get(channel_id)
            if cached is None:
                missing.append(channel_id)
            else:
                found[channel_id] = cached
        if missing:
            await self._load(missing, found)
        return found

    async def _load(self, missing: list[str], found: dict[str, Channel]) -> None:
        try:
            async with self.redis.guarded() as client:
                # decode_responses=True: text, or None for a missing key
                values = cast(list[str | None], await client.mget([channel_info_key(c) for c in missing]))
            for channel_id, value in zip(missing, values):
                if value:
                    found[channel_id] = channel_from_json(value)
                    self.cache.set(channel_id, found[channel_id])
        except RedisUnavailable:
            pass
        still = [c for c in missing if c not in found]
        if still and self.postgres is not None:
            try:
                rows = await self.postgres.fetch(
                    "SELECT id, name, username, win_rate, avg_gain, calls FROM channels WHERE id = ANY($1::text[])",
                    still,
                )
            except Exception as exc:  # noqa: BLE001 - matching goes on with what is known
                logger.warning("could not read channels from PostgreSQL: %s", exc)
                return
            for row in rows:
                info = Channel(
                    id=row["id"],
                    name=row["name"],
                    username=row["username"],
                    win_rate=None if row["win_rate"] is None else float(row["win_rate"]),
                    avg_gain=None if row["avg_gain"] is None else float(row["avg_gain"]),
                    calls=row["calls"],
                )
                found[info.id] = info
                self.cache.set(info.id, info)
                await self._store_redis(info)

    async def callers(self, channel_ids: Iterable[str], named: dict[str, Channel]) -> list[Channel]:
        """Every calling channel as known now; one never described is known as `named` (by its call)
        or by its id only."""
        ids = list(dict.fromkeys(channel_ids))
        known = await self.info(ids)
        return [known.get(channel_id) or named.get(channel_id) or Channel(channel_id) for channel_id in ids]

    async def note_caller(self, called: Channel) -> Channel:
        """A call names its channel: remember a new channel, or a changed name or username."""
        known = (await self.info([called.id])).get(called.id)
        if (
            known is None
            or (called.name and called.name != known.name)
            or (called.username and called.username != known.username)
        ):
            merged = known.merged(called) if known else called
            await self._save(merged)
            if self.persistence is not None:
                self.persistence.channel(called)
            return merged
        return known

    async def update_stats(self, event: ChannelStatsEvent) -> Channel:
        known = (await self.info([event.channel.id])).get(event.channel.id)
        merged = known.merged(event.channel) if known else event.channel
        await self._save(merged)
        if self.persistence is not None:
            self.persistence.channel(event.channel, stats_at=datetime.now(UTC))
        return merged

    async def _save(self, info: Channel) -> None:
        await self._store_redis(info)
        # Drop every process's copy first, then keep ours: others reload from Redis.
        await self.caches.invalidate(CHANNELS.name, info.id)
        self.cache.set(info.id, info)

    async def _store_redis(self, info: Channel) -> None:
        await self.redis.set(channel_info_key(info.id), channel_to_json(info), ex=CHANNEL_INFO_TTL_SECONDS)
