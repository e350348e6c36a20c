"""Calling channels and their latest statistics, from the fastest place that has them.

In-process SmartCache (30 min) -> Redis `channel:{id}:info` (30 min, one MGET for all misses)
-> PostgreSQL (one query for what is left). A `channel` frame updates all three and drops the
cached copy in every process, so per-channel filters always see the latest statistics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from domain.events import ChannelRef, ChannelStatsEvent
from domain.filters import ChannelFacts
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager, RedisUnavailable
from services.cache import CHANNELS, CacheRegistry
from services.persistence import PersistenceWriter

logger = logging.getLogger("alertbot.channels")

CHANNEL_INFO_TTL_SECONDS = 30 * 60


def channel_info_key(channel_id: str) -> str:
    return f"channel:{channel_id}:info"


@dataclass(frozen=True)
class ChannelInfo:
    id: str
    name: str | None = None
    username: str | None = None
    win_rate: float | None = None
    avg_gain: float | None = None
    calls: int | None = None

    def facts(self) -> ChannelFacts:
        return ChannelFacts.build(self.id, self.username, self.win_rate, self.avg_gain)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ChannelInfo:
        data = json.loads(text)
        return cls(**{k: data.get(k) for k in ("id", "name", "username", "win_rate", "avg_gain", "calls")})

    def merged(self, newer: ChannelInfo) -> ChannelInfo:
        """`newer`'s values where it has them, ours elsewhere."""
        return ChannelInfo(
            id=self.id,
            name=newer.name or self.name,
            username=newer.username or self.username,
            win_rate=newer.win_rate if newer.win_rate is not None else self.win_rate,
            avg_gain=newer.avg_gain if newer.avg_gain is not None else self.avg_gain,
            calls=newer.calls if newer.calls is not None else self.calls,
        )


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

    async def info(self, channel_ids: Sequence[str]) -> dict[str, ChannelInfo]:
        found: dict[str, ChannelInfo] = {}
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

    async def _load(self, missing: list[str], found: dict[str, ChannelInfo]) -> None:
        try:
            async with self.redis.guarded() as client:
                # decode_responses=True: text, or None for a missing key
                values = cast(list[str | None], await client.mget([channel_info_key(c) for c in missing]))
            for channel_id, value in zip(missing, values):
                if value:
                    found[channel_id] = ChannelInfo.from_json(value)
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
                info = ChannelInfo(
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

    async def callers(self, channel_ids: Iterable[str], refs: dict[str, ChannelRef]) -> list[ChannelInfo]:
        """Every calling channel as known now; one never described is known by its id and name only."""
        ids = list(dict.fromkeys(channel_ids))
        known = await self.info(ids)
        found: list[ChannelInfo] = []
        for channel_id in ids:
            info = known.get(channel_id)
            if info is None:
                ref = refs.get(channel_id)
                info = ChannelInfo(channel_id, ref.name if ref else None, ref.username if ref else None)
            found.append(info)
        return found

    async def note_caller(self, ref: ChannelRef) -> ChannelInfo:
        """A call names its channel: remember a new channel, or a changed name or username."""
        known = (await self.info([ref.id])).get(ref.id)
        incoming = ChannelInfo(ref.id, ref.name, ref.username)
        if known is None or (ref.name and ref.name != known.name) or (ref.username and ref.username != known.username):
            merged = known.merged(incoming) if known else incoming
            await self._save(merged)
            if self.persistence is not None:
                self.persistence.channel(id=ref.id, name=ref.name, username=ref.username)
            return merged
        return known

    async def update_stats(self, event: ChannelStatsEvent) -> ChannelInfo:
        known = (await self.info([event.id])).get(event.id)
        incoming = ChannelInfo(event.id, event.name, event.username, event.win_rate, event.avg_gain, event.calls)
        merged = known.merged(incoming) if known else incoming
        await self._save(merged)
        if self.persistence is not None:
            self.persistence.channel(event, at=datetime.now(UTC))
        return merged

    async def _save(self, info: ChannelInfo) -> None:
        await self._store_redis(info)
        # Drop every process's copy first, then keep ours: others reload from Redis.
        await self.caches.invalidate(CHANNELS.name, info.id)
        self.cache.set(info.id, info)

    async def _store_redis(self, info: ChannelInfo) -> None:
        await self.redis.set(channel_info_key(info.id), info.to_json(), ex=CHANNEL_INFO_TTL_SECONDS)
