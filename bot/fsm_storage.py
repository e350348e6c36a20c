"""aiogram FSM storage (multi-step settings flows) in Redis, through our RedisManager.

aiogram's own RedisStorage talks to a raw client; going through RedisManager instead means a
flow survives a Redis outage (the manager's fallback answers and replays the writes later) and
works on the embedded stand-in. Every write refreshes a 30-day TTL: an abandoned flow is
forgotten after that, an active one never is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, DefaultKeyBuilder, KeyBuilder, StateType, StorageKey

from managers.redis_manager import RedisManager

SESSION_TTL_SECONDS = 30 * 24 * 3600
FSM_PREFIX = "fsm"


class ManagedRedisStorage(BaseStorage):
    def __init__(
        self, redis: RedisManager, *, ttl: int = SESSION_TTL_SECONDS, key_builder: KeyBuilder | None = None
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.key_builder = key_builder or DefaultKeyBuilder(prefix=FSM_PREFIX)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        redis_key = self.key_builder.build(key, "state")
        name = state.state if isinstance(state, State) else state
        if name is None:  # no state, or default_state (a State without a name), as aiogram's own storages
            await self.redis.delete(redis_key)
        else:
            await self.redis.set(redis_key, name, ex=self.ttl)

    async def get_state(self, key: StorageKey) -> str | None:
        return await self.redis.get(self.key_builder.build(key, "state"))

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        redis_key = self.key_builder.build(key, "data")
        if not data:
            await self.redis.delete(redis_key)
        else:
            await self.redis.set(redis_key, json.dumps(dict(data), ensure_ascii=False), ex=self.ttl)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        raw = await self.redis.get(self.key_builder.build(key, "data"))
        return json.loads(raw) if raw else {}

    async def close(self) -> None:
        """The RedisManager belongs to the runtime, which closes it."""


def fsm_keys(chat_id: int, user_id: int) -> list[str]:
    """The Redis keys of a user's private-chat flow, for deleting their data."""
    builder = DefaultKeyBuilder(prefix=FSM_PREFIX)
    key = StorageKey(bot_id=0, chat_id=chat_id, user_id=user_id)
    return [builder.build(key, "state"), builder.build(key, "data")]
