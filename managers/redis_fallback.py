"""The in-memory store that answers for Redis while it is down.

RedisManager copies into it what it reads and writes while Redis answers (the keys it has seen,
LRU-bounded) and serves the same operations from it during an outage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import redis.exceptions
from cachetools import LRUCache

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"

# What a key holds: a string, a hash or a set (named here because the class's own `set` method
# would shadow the builtin in its signatures).
Value: TypeAlias = str | dict[str, str] | set[str]
_Kind = TypeVar("_Kind")


@dataclass
class _Entry:
    value: Value
    expires_at: float | None  # on the store's clock; None = no TTL


class FallbackStore:
    """Strings, hashes and sets with per-key TTLs, bounded by an LRU, on an injectable clock.

    Follows Redis semantics where the bot can tell (empty hashes/sets disappear, INCR keeps the
    TTL, SET clears it, WRONGTYPE on type clashes). Expired keys are dropped when touched and by
    `purge_expired()`, which the health loop calls.
    """

    def __init__(self, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: LRUCache[str, _Entry] = LRUCache(maxsize=max_keys)
        self._clock = clock

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._live(key) is not None

    def purge_expired(self) -> int:
        now = self._clock()
        dead = [k for k, e in list(self._data.items()) if e.expires_at is not None and e.expires_at <= now]
        for key in dead:
            self._data.pop(key, None)
        return len(dead)

    def clear(self) -> None:
        self._data.clear()

    def forget(self, key: str) -> None:
        self._data.pop(key, None)

    def deadline(self, key: str) -> float | None:
        entry = self._live(key)
        return entry.expires_at if entry else None

    # -- keys ----------------------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        existed = self._live(key) is not None
        self._data.pop(key, None)
        return existed

    def ttl(self, key: str) -> int:
        entry = self._live(key)
        if entry is None:
            return -2
        if entry.expires_at is None:
            return -1
        remaining_ms = max(0, int((entry.expires_at - self._clock()) * 1000))
        return (remaining_ms + 500) // 1000  # Redis rounds TTL to the nearest second

    # -- strings -------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        found = self._typed(key, str)
        return found[1] if found else None

    def set(self, key: str, value: str, ttl: float | None = None, nx: bool = False, keepttl: bool = False) -> bool:
        existing = self._live(key)
        if nx and existing is not None:
            return False
        if ttl is not None and ttl <= 0:
            raise redis.exceptions.ResponseError("invalid expire time in 'set' command")
        expires_at = self._clock() + ttl if ttl is not None else None
        if keepttl and existing is not None:
            expires_at = existing.expires_at
        self._data[key] = _Entry(value, expires_at)
        return True

    def incrby(self, key: str, amount: int) -> int:
        found = self._typed(key, str)
        try:
            current = int(found[1]) if found else 0
        except ValueError:
            raise redis.exceptions.ResponseError("value is not an integer or out of range") from None
        result = current + amount
        self._data[key] = _Entry(str(result), found[0].expires_at if found else None)
        return result

    # -- hashes --------------------------------------------------------------------------------

    def hget(self, key: str, field: str) -> str | None:
        found = self._typed(key, dict)
        return found[1].get(field) if found else None

    def hgetall(self, key: str) -> dict[str, str]:
        found = self._typed(key, dict)
        return dict(found[1]) if found else {}

    def hset(self, key: str, mapping: Mapping[str, str]) -> int:
        found = self._typed(key, dict)
        fields: dict[str, str]
        if found is None:
            fields = {}
            self._data[key] = _Entry(fields, None)
        else:
            fields = found[1]
        added = sum(1 for name in mapping if name not in fields)
        fields.update(mapping)
        return added

    # -- sets ----------------------------------------------------------------------------------

    def sadd(self, key: str, members: Iterable[str]) -> int:
        found = self._typed(key, set)
        current: set[str]
        if found is None:
            current = set()
            self._data[key] = _Entry(current, None)
        else:
            current = found[1]
        new = set(members) - current
        current |= new
        return len(new)

    def srem(self, key: str, members: Iterable[str]) -> int:
        found = self._typed(key, set)
        if found is None:
            return 0
        current: set[str] = found[1]
        gone = current & set(members)
        current -= gone
        if not current:
            self.forget(key)
        return len(gone)

    # -- copying what Redis answered -----------------------------------------------------------

    def mirror(self, key: str, value: Value | None, pttl: int) -> None:
        """Keep a copy of a whole key read from Redis, with its remaining TTL (PTTL reply)."""
        if value is None or pttl == -2 or (isinstance(value, (dict, set)) and not value):
            self.forget(key)
            return
        copy: Value = value if isinstance(value, str) else value.copy()
        self._data[key] = _Entry(copy, self._deadline_from_pttl(pttl))

    def mirror_field(self, key: str, name: str, value: str | None, pttl: int) -> None:
        """Keep a copy of one hash field read from Redis (the rest of the hash stays as known)."""
        if pttl == -2:
            self.forget(key)
            return
        entry = self._live(key)
        fields: dict[str, str]
        if entry is not None and isinstance(entry.value, dict):
            fields = entry.value
        else:
            if value is None:
                return
            fields = {}
            entry = _Entry(fields, None)
            self._data[key] = entry
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
        entry.expires_at = self._deadline_from_pttl(pttl)
        if not fields:
            self.forget(key)

    # -- internals -----------------------------------------------------------------------------

    def _deadline_from_pttl(self, pttl: int) -> float | None:
        return None if pttl is None or pttl < 0 else self._clock() + pttl / 1000.0

    def _live(self, key: str) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self._clock():
            self._data.pop(key, None)
            return None
        return entry

    def _typed(self, key: str, kind: type[_Kind]) -> tuple[_Entry, _Kind] | None:
        """The live entry and its value, or None; WRONGTYPE when the key holds another kind."""
        entry = self._live(key)
        if entry is None:
            return None
        if not isinstance(entry.value, kind):
            raise redis.exceptions.ResponseError(WRONGTYPE)
        return entry, entry.value
