"""SmartCache: in-process TTL + LRU caches with hit/miss counts, invalidated in every process.

A value that changes is dropped from the cache of every process at once (Redis pub/sub), so a
subscriber who changes a filter is matched with the new one right away, not after the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cachetools import TTLCache

from managers.redis_manager import RedisManager

logger = logging.getLogger("alertbot.cache")

V = TypeVar("V")
INVALIDATION_CHANNEL = "alertbot:cache:invalidate"
_MISSING = object()


@dataclass(frozen=True)
class CacheSpec:
    name: str
    ttl: float  # seconds
    maxsize: int


# The layers the product has always had (name, TTL, size).
CHANNELS = CacheSpec("channels", 30 * 60, 1_000)
USER_SETTINGS = CacheSpec("user_settings", 5 * 60, 5_000)
SUBSCRIPTIONS = CacheSpec("subscriptions", 5 * 60, 5_000)
TELEGRAM_PERMISSIONS = CacheSpec("telegram_permissions", 5 * 60, 1_000)
WALLET_INFO = CacheSpec("wallet_info", 30, 5_000)
ALL_SPECS = (CHANNELS, USER_SETTINGS, SUBSCRIPTIONS, TELEGRAM_PERMISSIONS, WALLET_INFO)


class SmartCache(Generic[V]):
    def __init__(self, spec: CacheSpec, timer: Callable[[], float] | None = None) -> None:
        self.spec = spec
        self._data: TTLCache[Hashable, V] = (
            TTLCache(spec.maxsize, spec.ttl, timer=timer) if timer else TTLCache(spec.maxsize, spec.ttl)
        )
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def get(self, key: Hashable, default: Any = None) -> V | Any:
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            self.misses += 1
            return default
        self.hits += 1
        return value

    def set(self, key: Hashable, value: V) -> None:
        self._data[key] = value

    def pop(self, key: Hashable) -> None:
        if self._data.pop(key, _MISSING) is not _MISSING:
            self.invalidations += 1

    def clear(self) -> None:
        self._data.clear()

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = await load()
            self.set(key, value)
        return value

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, float]:
        lookups = self.hits + self.misses
        return {
            "size": len(self._data),
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": (self.hits / lookups) if lookups else 0.0,
            "invalidations": self.invalidations,
        }


class CacheRegistry:
    """The named caches of one process, and the pub/sub link that keeps every process's copy honest."""

    def __init__(self, redis: RedisManager | None = None, specs: tuple[CacheSpec, ...] = ALL_SPECS) -> None:
        self.redis = redis
        self.caches: dict[str, SmartCache[Any]] = {spec.name: SmartCache(spec) for spec in specs}
        # Our own messages come back to us; the origin id lets us skip the second, useless pop.
        self.origin = f"{os.getpid()}-{id(self):x}"
        self._listener: asyncio.Task[None] | None = None
        self.received = 0
        self._subscribed = asyncio.Event()
        self._listeners: list[Callable[[str, str], None]] = []

    def add_listener(self, callback: Callable[[str, str], None]) -> None:
        """`callback(cache_name, key)` after every invalidation, ours or another process's."""
        self._listeners.append(callback)

    def _notify(self, name: str, key: str) -> None:
        for callback in self._listeners:
            try:
                callback(name, key)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others
                logger.exception("cache invalidation listener failed for %s[%s]", name, key)

    def __getitem__(self, name: str) -> SmartCache[Any]:
        return self.caches[name]

    async def invalidate(self, name: str, key: Hashable) -> None:
        """Drop `key` here now, and in every other process as soon as Redis delivers the message."""
        self.caches[name].pop(key)
        self._notify(name, str(key))
        if self.redis is None:
            return
        try:
            async with self.redis.guarded() as client:
                await client.publish(INVALIDATION_CHANNEL, f"{self.origin}|{name}|{key}")
        except ConnectionError:
            # Redis is down: other processes fall back on the TTL, which bounds staleness.
            logger.warning("could not publish the invalidation of %s[%s]", name, key)

    def _apply(self, message: str) -> None:
        origin, _, rest = message.partition("|")
        name, _, key = rest.partition("|")
        if origin == self.origin or name not in self.caches:
            return
        self.received += 1
        cache = self.caches[name]
        cache.pop(key)
        # Keys may be ints (user ids) in the cache but always arrive as text.
        if key.lstrip("-").isdigit():
            cache.pop(int(key))
        self._notify(name, key)

    async def start(self) -> None:
        if self.redis is None or self._listener is not None:
            return
        self._listener = asyncio.create_task(self._listen(), name="cache-invalidation")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None

    async def _listen(self) -> None:
        assert self.redis is not None
        delay = 0.5
        while True:
            try:
                pubsub = self.redis.client.pubsub()
                try:
                    await pubsub.subscribe(INVALIDATION_CHANNEL)
                    self._subscribed.set()
                    delay = 0.5
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            self._apply(data.decode() if isinstance(data, bytes) else str(data))
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any Redis failure: clear, wait, resubscribe
                # Messages may have been missed while disconnected: forget everything rather than
                # serve a value another process has since changed.
                for cache in self.caches.values():
                    cache.clear()
                logger.warning("cache invalidation listener lost Redis (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, cache in self.caches.items():
            for key, value in cache.stats().items():
                out[f"{name}_{key}"] = value
        return out
