"""Calling channels and their latest statistics, from the fastest place that has them.

In-process SmartCache (30 min) -> Redis (30 min, one MGET for all misses) -> PostgreSQL (one
query for what is left). Each channel has two Redis records: `channel:{id}:info`, as the feed
describes it (names, and the figures of its `channel` frames), and `channel:{id}:figures`, the
bot's own figures (services.channel_stats; "null" when it has none). Filters see the two merged
by domain.channel_stats.effective_channel: the feed's figures where it gives them, the bot's
elsewhere. A `channel` frame or a change of the bot's figures updates the record and drops the
cached copy in every process, so per-channel filters always see the latest statistics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import cast

from domain.channel_stats import ChannelFigures, RatedChannel
from domain.events import Channel, ChannelStatsEvent
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager, RedisUnavailable
from services.cache import CHANNELS, CacheRegistry
from services.channel_stats import feed_channel_of_row, figures_of_row
from services.persistence import PersistenceWriter

logger = logging.getLogger("alertbot.channels")

CHANNEL_INFO_TTL_SECONDS = 30 * 60


def channel_info_key(channel_id: str) -> str:
    return f"channel:{channel_id}:info"


def channel_figures_key(channel_id: str) -> str:
    return f"channel:{channel_id}:figures"


_FIELDS = ("id", "name", "username", "win_rate", "avg_gain", "calls")
_CHANNELS_SQL = """
SELECT id, name, username, win_rate, avg_gain, calls, computed_win_rate, computed_avg_gain, computed_median_gain,
       computed_calls, computed_resolved, computed_wins, computed_unresolved, computed_unpriced
FROM channels WHERE id = ANY($1::text[])
"""


def channel_to_json(channel: Channel) -> str:
    return json.dumps({name: getattr(channel, name) for name in _FIELDS})


def channel_from_json(text: str) -> Channel:
    data = json.loads(text)
    return Channel(**{name: data.get(name) for name in _FIELDS})


def figures_to_json(figures: ChannelFigures | None) -> str:
    return json.dumps(None if figures is None else asdict(figures))


def figures_from_json(text: str) -> ChannelFigures | None:
    data = json.loads(text)
    return None if data is None else ChannelFigures(**data)


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
        """Each known channel as filters see it (the feed's figures, else the bot's)."""
        return {channel_id: rated.effective for channel_id, rated in (await self.records(channel_ids)).items()}

    async def records(self, channel_ids: Sequence[str]) -> dict[str, RatedChannel]:
        """Each known channel as the feed describes it, with the bot's figures beside it."""
        found: dict[str, RatedChannel] = {}
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

    async def _load(self, missing: list[str], found: dict[str, RatedChannel]) -> None:
        described: dict[str, Channel] = {}  # in Redis without the bot's figures
        try:
            keys = [key for c in missing for key in (channel_info_key(c), channel_figures_key(c))]
            async with self.redis.guarded() as client:
                # decode_responses=True: text, or None for a missing key
                values = cast(list[str | None], await client.mget(keys))
            for position, channel_id in enumerate(missing):
                info, figures = values[2 * position], values[2 * position + 1]
                if info and figures:
                    found[channel_id] = RatedChannel(channel_from_json(info), figures_from_json(figures))
                    self.cache.set(channel_id, found[channel_id])
                elif info:
                    described[channel_id] = channel_from_json(info)
        except RedisUnavailable:
            pass
        still = [c for c in missing if c not in found]
        if still and self.postgres is not None:
            try:
                rows = await self.postgres.fetch(_CHANNELS_SQL, still)
            except Exception as exc:  # noqa: BLE001 - matching goes on with what is known
                logger.warning("could not read channels from PostgreSQL: %s", exc)
                rows = []
            for row in rows:
                # Redis's description is the newer one: PostgreSQL is written behind it.
                feed = described.pop(row["id"], None)
                if feed is None:
                    feed = feed_channel_of_row(row)
                    await self._store_info(feed)
                rated = RatedChannel(feed, figures_of_row(row))
                await self._store_figures(rated.channel.id, rated.figures)
                found[feed.id] = rated
                self.cache.set(feed.id, rated)
        for channel_id, feed in described.items():
            found[channel_id] = RatedChannel(feed)
            if self.postgres is None:  # nowhere else to find figures; with PostgreSQL, asked again
                self.cache.set(channel_id, found[channel_id])

    async def callers(self, channel_ids: Iterable[str], named: dict[str, Channel]) -> list[Channel]:
        """Every calling channel as known now; one never described is known as `named` (by its call)
        or by its id only."""
        ids = list(dict.fromkeys(channel_ids))
        known = await self.info(ids)
        return [known.get(channel_id) or named.get(channel_id) or Channel(channel_id) for channel_id in ids]

    async def note_caller(self, called: Channel) -> Channel:
        """A call names its channel: remember a new channel, or a changed name or username."""
        known = (await self.records([called.id])).get(called.id)
        if (
            known is None
            or (called.name and called.name != known.channel.name)
            or (called.username and called.username != known.channel.username)
        ):
            merged = RatedChannel(known.channel.merged(called), known.figures) if known else RatedChannel(called)
            await self._save(merged)
            if self.persistence is not None:
                self.persistence.channel(called)
            return merged.effective
        return known.effective

    async def update_stats(self, event: ChannelStatsEvent) -> Channel:
        known = (await self.records([event.channel.id])).get(event.channel.id)
        merged = (
            RatedChannel(known.channel.merged(event.channel), known.figures) if known else RatedChannel(event.channel)
        )
        await self._save(merged)
        if self.persistence is not None:
            self.persistence.channel(event.channel, stats_at=datetime.now(UTC))
        return merged.effective

    async def figures_changed(self, figures: Mapping[str, ChannelFigures]) -> None:
        """The bot's figures of these channels changed (services.channel_stats): stored in Redis,
        and dropped from every process's cache."""
        items = list(figures.items())
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            try:
                async with self.redis.guarded() as client:
                    pipe = client.pipeline(transaction=False)
                    for channel_id, value in chunk:
                        pipe.set(channel_figures_key(channel_id), figures_to_json(value), ex=CHANNEL_INFO_TTL_SECONDS)
                    await pipe.execute()
            except RedisUnavailable:
                # One by one through the manager, which keeps them until Redis is back.
                for channel_id, value in chunk:
                    await self._store_figures(channel_id, value)
            for channel_id, _ in chunk:
                await self.caches.invalidate(CHANNELS.name, channel_id)

    async def _save(self, rated: RatedChannel) -> None:
        await self._store_info(rated.channel)
        # Drop every process's copy first, then keep ours: others reload from Redis.
        await self.caches.invalidate(CHANNELS.name, rated.channel.id)
        self.cache.set(rated.channel.id, rated)

    async def _store_info(self, info: Channel) -> None:
        await self.redis.set(channel_info_key(info.id), channel_to_json(info), ex=CHANNEL_INFO_TTL_SECONDS)

    async def _store_figures(self, channel_id: str, figures: ChannelFigures | None) -> None:
        await self.redis.set(channel_figures_key(channel_id), figures_to_json(figures), ex=CHANNEL_INFO_TTL_SECONDS)
