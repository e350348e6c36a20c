"""SmartCache: TTL and LRU with counts; invalidation reaches every process through Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from managers.redis_manager import RedisManager
from services.cache import CHANNELS, USER_SETTINGS, CacheRegistry, CacheSpec, SmartCache


def test_ttl_lru_and_counts() -> None:
    now = [0.0]
    cache: SmartCache[str] = SmartCache(CacheSpec("t", ttl=10, maxsize=2), timer=lambda: now[0])
    cache.set("a", "1")
    cache.set("b", "2")
    assert cache.get("a") == "1"
    cache.set("c", "3")  # full: the least recently used ("b") goes
    assert cache.get("b") is None and cache.get("c") == "3"
    now[0] = 11
    assert cache.get("a") is None  # expired
    assert cache.stats()["hits"] == 2 and cache.stats()["misses"] == 2


def test_the_product_layers_have_their_sizes() -> None:
    registry = CacheRegistry(None)
    assert registry[CHANNELS.name].spec == CacheSpec("channels", 1800, 1000)
    assert registry[USER_SETTINGS.name].spec == CacheSpec("user_settings", 300, 5000)
    assert set(registry.caches) == {"channels", "user_settings", "subscriptions", "telegram_permissions", "wallet_info"}


@pytest.fixture
async def two_processes(redis_url: str) -> AsyncIterator[tuple[CacheRegistry, CacheRegistry]]:
    managers = [RedisManager.from_url(redis_url) for _ in range(2)]
    registries = []
    for manager in managers:
        await manager.start()
        registry = CacheRegistry(manager)
        await registry.start()
        registries.append(registry)
    yield registries[0], registries[1]
    for registry, manager in zip(registries, managers):
        await registry.stop()
        await manager.close()


async def test_a_changed_value_is_dropped_in_every_process(two_processes: tuple[CacheRegistry, CacheRegistry]) -> None:
    here, there = two_processes
    heard: list[tuple[str, str]] = []
    there.add_listener(lambda name, key: heard.append((name, key)))
    for registry in (here, there):
        registry["user_settings"].set(42, "old filters")
    await here.invalidate("user_settings", 42)
    assert here["user_settings"].get(42) is None
    for _ in range(200):
        if there["user_settings"].get(42) is None:
            break
        await asyncio.sleep(0.01)
    assert there["user_settings"].get(42) is None and ("user_settings", "42") in heard
