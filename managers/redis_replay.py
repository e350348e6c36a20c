"""Writes made while Redis was down, and their replay into Redis once it is back.

Replayed: the writes made through RedisManager's wrapped operations (SET, DELETE, INCRBY, HSET,
SADD, SREM) while Redis failed; never raw client access, pipelines, Lua or streams.

How, key by key, oldest first:
  * A SET without NX or a DELETE replaces the key's earlier pending writes; the others follow it
    as deltas, so an INCRBY adds to what Redis holds. TTLs go in as what is left of them.
  * A key whose TTL ran out before Redis came back is deleted instead, as the expiry would have
    (unless its writes began with SET NX, which never touched Redis' value). A write made after
    the TTL ran out starts the key afresh.
  * A leading SET NX goes in only if Redis still has no value; otherwise Redis' value wins and
    the key's other writes are dropped.
  * A key's writes go in one MULTI/EXEC with a marker saying how many of them went in, read under
    WATCH first: a replay retried after a lost answer applies only what the marker does not cover.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import Pipeline

Command = Literal["set", "delete", "incrby", "hset", "sadd", "srem"]


@dataclass
class PendingOp:
    command: Command
    args: tuple[Any, ...] = ()
    expires_at: float | None = None  # set: absolute deadline on the manager's clock
    nx: bool = False

    @property
    def overwrites(self) -> bool:
        """After this op the key's earlier history does not matter any more."""
        return self.command == "delete" or (self.command == "set" and not self.nx)


@dataclass
class PendingKey:
    ops: list[PendingOp] = field(default_factory=list)
    # Names this entry's marker in Redis; kept when writes made during a failed replay are appended.
    replay_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def deadline(self) -> float | None:
        """The key's TTL after these ops: SET sets it, DELETE clears it, the rest keep it."""
        deadline: float | None = None
        for op in self.ops:
            if op.command == "set":
                deadline = op.expires_at
            elif op.command == "delete":
                deadline = None
        return deadline


class PendingWrites:
    """Per-key write log, oldest key first, bounded (the oldest key's writes are dropped first)."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self._keys: OrderedDict[str, PendingKey] = OrderedDict()
        self._max_keys = max_keys

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def op_count(self) -> int:
        return sum(len(entry.ops) for entry in self._keys.values())

    def keys(self) -> list[str]:
        return list(self._keys)

    def record(self, key: str, op: PendingOp, now: float) -> int:
        """Log a write made at `now`; returns how many keys' writes were dropped to stay within the bound."""
        entry = self._keys.get(key)
        expired = entry is not None and entry.deadline is not None and entry.deadline <= now
        if entry is None or op.overwrites or expired:
            # Last write wins: drop the key's history and move it to the end of the replay order.
            self._keys.pop(key, None)
            # A write to a key whose TTL ran out made it anew: what Redis still holds must go first.
            entry = PendingKey([PendingOp("delete")] if expired and not op.overwrites else [])
            self._keys[key] = entry
        entry.ops.append(op)
        dropped = 0
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)
            dropped += 1
        return dropped

    def pop_first(self) -> tuple[str, PendingKey] | None:
        if not self._keys:
            return None
        return self._keys.popitem(last=False)

    def restore(self, key: str, entry: PendingKey) -> None:
        """Put back a key whose replay failed, ahead of writes recorded for it in the meantime."""
        newer = self._keys.pop(key, None)
        if newer is not None:
            if newer.ops and newer.ops[0].overwrites:
                entry = newer
            else:
                entry = PendingKey(entry.ops + newer.ops, entry.replay_id)
        self._keys[key] = entry
        self._keys.move_to_end(key, last=False)

    def clear(self) -> None:
        self._keys.clear()


MARKER_PREFIX = "replayed:"
# A marker must outlive the outage that may follow a lost answer, until the retry: a day, one small
# key per replayed key.
MARKER_TTL_MS = 86_400_000


@dataclass(frozen=True)
class Replayed:
    """What replaying one key did; `rejected` is the first command Redis refused (the rest went in)."""

    outcome: Literal["applied", "skipped", "conflict", "already_applied"]
    rejected: Exception | None = None


async def replay(
    client: aioredis.Redis, key: str, entry: PendingKey, now: float, *, marker_ttl_ms: int = MARKER_TTL_MS
) -> Replayed:
    """Apply one key's pending writes to Redis, each at most once; `now` is on the deadlines' clock."""
    async with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                return await _replay_watched(pipe, key, entry, now, marker_ttl_ms)
            except redis.exceptions.WatchError:
                # The key changed, or the connection died while watched (the EXEC may have gone in):
                # read the marker again. If Redis cannot be reached the next WATCH raises.
                await pipe.reset()


async def _replay_watched(pipe: Pipeline, key: str, entry: PendingKey, now: float, marker_ttl_ms: int) -> Replayed:
    marker = MARKER_PREFIX + entry.replay_id
    nx_first = entry.ops[0].command == "set" and entry.ops[0].nx
    await (pipe.watch(marker, key) if nx_first else pipe.watch(marker))
    done = int(await pipe.get(marker) or 0)  # ops of this entry that went in on an earlier try
    ops = entry.ops[done:]
    if not ops:
        return Replayed("already_applied")
    expired = entry.deadline is not None and entry.deadline <= now
    if expired and nx_first:
        return Replayed("skipped")  # a SET NX never touched what Redis holds: nothing to undo
    if not expired and nx_first and done == 0 and await pipe.exists(key):
        return Replayed("conflict")  # a value appeared in Redis meanwhile: it wins
    pipe.multi()
    if expired:
        pipe.delete(key)  # without the outage the key would be gone by now
    else:
        for op in ops:
            _queue(pipe, key, op, now)
    pipe.set(marker, len(entry.ops), px=marker_ttl_ms)
    results = await pipe.execute(raise_on_error=False)
    failed = [r for r in results if isinstance(r, Exception)]
    return Replayed("skipped" if expired else "applied", failed[0] if failed else None)


def _queue(pipe: Pipeline, key: str, op: PendingOp, now: float) -> None:
    if op.command == "set":
        pipe.set(key, op.args[0], px=_left_ms(op.expires_at, now), nx=op.nx)
    elif op.command == "delete":
        pipe.delete(key)
    elif op.command == "incrby":
        pipe.incrby(key, op.args[0])
    elif op.command == "hset":
        pipe.hset(key, mapping=op.args[0])
    elif op.command == "sadd":
        pipe.sadd(key, *op.args)
    elif op.command == "srem":
        pipe.srem(key, *op.args)


def _left_ms(deadline: float | None, now: float) -> int | None:
    """Milliseconds left until `deadline`, None if there is none or it has passed."""
    if deadline is None:
        return None
    left = math.ceil((deadline - now) * 1000)
    return left if left > 0 else None
