"""Redis access that keeps the bot answering while Redis is away.

`RedisManager` wraps a `redis.asyncio` client (with no URL, an in-process fakeredis) and puts every
operation behind a circuit breaker. Its wrapped operations mirror what they read and write into a
`FallbackStore`, which serves them while Redis is down; writes made meanwhile are replayed into
Redis when a probe finds it back, before anything else reaches it (managers/redis_replay.py).
A key the fallback never saw reads as missing: code that writes a default on a miss should use NX.

Raw access (`client`, `guarded()`: pipelines, Lua, streams, pub/sub) is neither mirrored nor
replayed; while the circuit is not closed it raises `RedisUnavailable` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from managers.circuit_breaker import CircuitBreaker, CircuitState
from managers.redis_fallback import FallbackStore
from managers.redis_replay import MARKER_TTL_MS, PendingOp, PendingWrites, replay
from managers.urls import redact_url

T = TypeVar("T")

errors_log = logging.getLogger("alertbot.redis.errors")
performance_log = logging.getLogger("alertbot.redis.performance")

# What counts as "Redis is not there" (as opposed to "Redis answered with an error").
# redis' ConnectionError covers refused/reset/closed connections, auth and BusyLoading;
# OSError covers socket errors that escape unwrapped and the builtin TimeoutError.
FAILURES: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)
# What a caller of raw Redis commands (`guarded()`, scripts, streams) treats as "that did not
# happen": Redis not there, or a command it refused. Such callers fall back or retry.
REDIS_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, redis.exceptions.RedisError)


Value = str | bytes | int | float

# The oldest Redis the bot works with: the alert queue takes over abandoned entries with
# XAUTOCLAIM, which Redis 6.2 introduced.
MIN_REDIS_VERSION = (6, 2)


class RedisUnavailable(redis.exceptions.ConnectionError, ConnectionError):
    """Redis cannot be used right now (circuit open or manager closed); raised instead of waiting."""


class RedisTooOld(RuntimeError):
    """The server is older than MIN_REDIS_VERSION; `str()` is the one line shown to the operator."""


def version_tuple(text: str) -> tuple[int, ...]:
    """'6.2.14' -> (6, 2, 14); what is not a number ends it ('7.2.4-rc1' -> (7, 2))."""
    parts: list[int] = []
    for piece in text.strip().split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def _url_password(url: str | None) -> str | None:
    if url is None:
        return None
    with contextlib.suppress(ValueError):
        return urlsplit(url).password
    return None


def _encode(value: Value) -> str:
    """Store what Redis would store, as text (the client uses decode_responses=True)."""
    if isinstance(value, bool):
        # redis-py refuses bools too; accepting them here would make the fallback disagree.
        raise redis.exceptions.DataError("Invalid input of type: 'bool'")
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return repr(value)


def _seconds(ex: int | float | timedelta | None, px: int | timedelta | None) -> float | None:
    if ex is not None:
        return ex.total_seconds() if isinstance(ex, timedelta) else float(ex)
    if px is not None:
        return px.total_seconds() if isinstance(px, timedelta) else px / 1000.0
    return None


@dataclass(frozen=True)
class RedisOptions:
    max_connections: int = 50
    socket_timeout: float = 2.0  # read/write; also how long a caller waits for a free pooled connection
    socket_connect_timeout: float = 2.0
    # One immediate retry on a connection error, so a pooled socket that died while idle is
    # replaced transparently. Timeouts are not retried: the command may have run already.
    retries: int = 1
    health_interval: float = 30.0  # seconds between pings while the circuit is closed
    reconnect_base: float = 0.5  # backoff between reconnect attempts while the circuit is open
    reconnect_max: float = 30.0
    slow_ms: float = 50.0  # operations slower than this are logged to the performance log
    failure_threshold: int = 5
    cooldown: float = 5.0  # circuit breaker: wait before the first probe, doubled per failed probe
    max_cooldown: float = 60.0
    fallback_max_keys: int = 10_000
    pending_max_keys: int = 10_000
    mirror_reads: bool = True  # copy read keys (with their PTTL, same round trip) into the fallback
    # How long Redis remembers that a key's pending writes went in, so a replay retried after a lost
    # answer does not apply them twice.
    replay_marker_ttl: float = MARKER_TTL_MS / 1000


@dataclass
class RedisCounters:
    operations: int = 0
    errors: int = 0
    fallback_reads: int = 0
    fallback_writes: int = 0
    reconciled: int = 0  # keys whose pending writes were applied to Redis
    reconcile_conflicts: int = 0  # SET NX replays where Redis' value won
    reconcile_skipped: int = 0  # keys whose TTL ran out before Redis came back
    reconcile_errors: int = 0  # replays Redis rejected (e.g. WRONGTYPE); dropped
    reconcile_already_applied: int = 0  # retried replays an earlier try had applied (its answer lost)
    pending_dropped: int = 0  # pending keys dropped because the log was full
    slow_operations: int = 0


class RedisManager:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        url: str | None,
        options: RedisOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """Prefer `from_url`. `clock` drives fallback TTLs and the breaker's cool-downs."""
        self.options = options or RedisOptions()
        self._client = client
        self._url = url
        self.safe_url = "embedded" if url is None else redact_url(url)
        self._password = _url_password(url)
        self._clock = clock
        self.breaker = breaker or CircuitBreaker(
            failure_threshold=self.options.failure_threshold,
            cooldown=self.options.cooldown,
            max_cooldown=self.options.max_cooldown,
            clock=clock,
        )
        self.fallback = FallbackStore(self.options.fallback_max_keys, clock)
        self.pending = PendingWrites(self.options.pending_max_keys)
        self.counters = RedisCounters()
        self._reconcile_lock = asyncio.Lock()
        self._marker_ttl_ms = math.ceil(self.options.replay_marker_ttl * 1000)
        self._health_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # set on close, so the health loop's sleep ends at once
        self._started = False
        self._closed = False
        self.last_latency_ms: float | None = None
        self.last_error: str | None = None
        self.server_version: str | None = None  # once read from INFO

    @classmethod
    def from_url(
        cls,
        url: str | None,
        options: RedisOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        breaker: CircuitBreaker | None = None,
    ) -> RedisManager:
        """A manager on `url`, or on a private embedded fakeredis server when `url` is None."""
        options = options or RedisOptions()
        client: aioredis.Redis
        if url is None:
            import fakeredis

            # A server of its own: fakeredis would otherwise share one per host:port in-process.
            client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
        else:
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=options.max_connections,
                timeout=options.socket_timeout,
                socket_timeout=options.socket_timeout,
                socket_connect_timeout=options.socket_connect_timeout,
                retry=Retry(NoBackoff(), options.retries, supported_errors=(redis.exceptions.ConnectionError,)),
                decode_responses=True,
                client_name="alertbot",
            )
            client = aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it
        return cls(client, url=url, options=options, clock=clock, breaker=breaker)

    @property
    def embedded(self) -> bool:
        return self._url is None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and ping; if Redis is down, start degraded (fallback) and keep trying."""
        if self._started:
            return
        self._started = True
        self._closed = False
        self._wake.clear()
        try:
            try:
                latency = await self._timed_ping()
            except redis.exceptions.ResponseError as exc:
                if "HELLO" not in str(exc).upper():
                    raise
                # The client speaks RESP3 (HELLO 3), which Redis has understood since 6.0.
                raise RedisTooOld(self._too_old(await self._version_over_resp2())) from None
            await self._check_version()
        except RedisTooOld:
            self._started = False
            self._closed = True
            with contextlib.suppress(Exception):
                await self._client.aclose()
            raise
        except FAILURES as exc:
            self._note_error("start", exc)
            self.breaker.trip()
            self._log(
                errors_log,
                logging.ERROR,
                "Redis at %s unreachable at start (%s); serving from the in-memory fallback until it answers",
                self.safe_url,
                exc,
            )
        else:
            self.breaker.record_success()
            self._log(performance_log, logging.INFO, "connected to Redis at %s in %.2f ms", self.safe_url, latency)
        self._health_task = asyncio.create_task(self._health_loop(), name="redis-health")

    async def close(self) -> None:
        if self._closed:
            return
        self._wake.set()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        if self.pending and self.breaker.state is CircuitState.CLOSED:
            with contextlib.suppress(*FAILURES):
                await self._reconcile()
        if self.pending:
            self._log(
                errors_log,
                logging.ERROR,
                "closing with %d keys of writes never applied to Redis at %s: %s",
                len(self.pending),
                self.safe_url,
                ", ".join(self.pending.keys()[:20]),
            )
        self._closed = True
        self._started = False
        with contextlib.suppress(Exception):
            await self._client.aclose()

    async def __aenter__(self) -> RedisManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- health ----------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Would an operation go to Redis now (circuit closed, not closed down)?"""
        return not self._closed and self.breaker.state is CircuitState.CLOSED

    async def ping(self) -> float | None:
        """Round trip to Redis in ms, through the breaker; None when Redis is not reachable."""
        if not await self._redis_ready():
            return None
        try:
            latency = await self._timed_ping()
        except FAILURES as exc:
            self._on_failure("ping", exc)
            return None
        self.breaker.record_success()
        return latency

    def health(self) -> dict[str, Any]:
        if not self._started or self._closed:
            status = "down"
        elif self.breaker.state is not CircuitState.CLOSED or self.pending or self.breaker.consecutive_failures:
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "mode": "embedded" if self.embedded else "redis",
            "url": self.safe_url,
            "latency_ms": None if self.last_latency_ms is None else round(self.last_latency_ms, 3),
            "circuit": self.breaker.state.value,
            "retry_in": round(self.breaker.retry_in(), 3),
            "fallback_keys": len(self.fallback),
            "pending_writes": len(self.pending),
            "pending_ops": self.pending.op_count(),
            "errors": self.counters.errors,
            "last_error": self.last_error,
        }

    def metrics(self) -> dict[str, int]:
        """Monotonic counters for the metrics endpoint."""
        return {
            **asdict(self.counters),
            "circuit_opens": self.breaker.opens,
            "failed_probes": self.breaker.failed_probes,
        }

    # -- raw access ------------------------------------------------------------------------------

    @property
    def client(self) -> aioredis.Redis:
        """The redis.asyncio client, for pipelines, Lua, streams and pub/sub (not mirrored).

        Raises RedisUnavailable while the circuit is not closed, so callers fail fast.
        """
        self._check_usable()
        return self._client

    @contextlib.asynccontextmanager
    async def guarded(self) -> AsyncIterator[aioredis.Redis]:
        """`async with manager.guarded() as r:` raw access whose connection failures feed the breaker
        and come out as RedisUnavailable."""
        client = self.client
        try:
            yield client
        except FAILURES as exc:
            if isinstance(exc, RedisUnavailable):
                raise
            self._on_failure("raw", exc)
            raise RedisUnavailable(f"Redis at {self.safe_url} failed: {self._redact(str(exc))}") from exc
        else:
            self.breaker.record_success()

    # -- keys and strings ------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        async def remote(client: aioredis.Redis) -> str | None:
            if not self.options.mirror_reads:
                return cast(str | None, await client.get(key))  # decode_responses=True: text
            pipe = client.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
            self.fallback.mirror(key, value, pttl)
            return value

        return await self._run("get", remote, lambda: self.fallback.get(key))

    async def set(
        self,
        key: str,
        value: Value,
        ex: int | float | timedelta | None = None,
        px: int | timedelta | None = None,
        nx: bool = False,
    ) -> bool:
        """SET; True if stored (False when `nx` and the key exists). `ex` in seconds, `px` in ms."""
        text = _encode(value)
        ttl = _seconds(ex, px)
        if ex is not None and isinstance(ex, float):
            px = int(ex * 1000)  # Redis' EX takes whole seconds only
            ex = None

        async def remote(client: aioredis.Redis) -> bool:
            stored = bool(await client.set(key, text, ex=ex, px=px, nx=nx))
            if stored:
                self.fallback.set(key, text, ttl)
            return stored

        def local() -> bool:
            stored = self.fallback.set(key, text, ttl, nx=nx)
            if stored:
                self._pend(key, PendingOp("set", (text,), self.fallback.deadline(key), nx=nx))
            return stored

        return await self._run("set", remote, local, write=True)

    async def delete(self, *keys: str) -> int:
        async def remote(client: aioredis.Redis) -> int:
            removed = int(await client.delete(*keys))
            for key in keys:
                self.fallback.forget(key)
            return removed

        def local() -> int:
            removed = 0
            for key in keys:
                removed += self.fallback.delete(key)
                self._pend(key, PendingOp("delete"))  # Redis may hold keys we never saw
            return removed

        return await self._run("delete", remote, local, write=True)

    async def ttl(self, key: str) -> int:
        """Seconds left; -1 without TTL, -2 when missing (in the fallback: as far as it knows)."""

        async def remote(client: aioredis.Redis) -> int:
            left = int(await client.ttl(key))
            if left == -2:
                self.fallback.forget(key)
            return left

        return await self._run("ttl", remote, lambda: self.fallback.ttl(key))

    async def incrby(self, key: str, amount: int = 1) -> int:
        async def remote(client: aioredis.Redis) -> int:
            result = int(await client.incrby(key, amount))
            self.fallback.set(key, str(result), keepttl=True)
            return result

        def local() -> int:
            result = self.fallback.incrby(key, amount)
            self._pend(key, PendingOp("incrby", (amount,)))
            return result

        return await self._run("incrby", remote, local, write=True)

    # -- hashes ----------------------------------------------------------------------------------

    async def hget(self, key: str, name: str) -> str | None:
        async def remote(client: aioredis.Redis) -> str | None:
            if not self.options.mirror_reads:
                return cast(str | None, await client.hget(key, name))  # decode_responses=True: text
            pipe = client.pipeline(transaction=False)
            pipe.hget(key, name)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
            self.fallback.mirror_field(key, name, value, pttl)
            return value

        return await self._run("hget", remote, lambda: self.fallback.hget(key, name))

    async def hset(
        self, key: str, name: str | None = None, value: Value | None = None, mapping: Mapping[str, Value] | None = None
    ) -> int:
        """HSET one field and/or a mapping; returns the number of fields added."""
        fields = {k: _encode(v) for k, v in (mapping or {}).items()}
        if name is not None:
            if value is None:
                raise redis.exceptions.DataError("hset needs a value for the field")
            fields[name] = _encode(value)
        if not fields:
            raise redis.exceptions.DataError("'hset' with no key value pairs")

        async def remote(client: aioredis.Redis) -> int:
            # redis-py types `mapping` with an invariant key type that no dict[str, str] matches.
            added = int(await client.hset(key, mapping=fields))  # type: ignore[arg-type]
            self._mirror(key, lambda: self.fallback.hset(key, fields))
            return added

        def local() -> int:
            added = self.fallback.hset(key, fields)
            self._pend(key, PendingOp("hset", (fields,)))
            return added

        return await self._run("hset", remote, local, write=True)

    async def hgetall(self, key: str) -> dict[str, str]:
        async def remote(client: aioredis.Redis) -> dict[str, str]:
            if not self.options.mirror_reads:
                return dict(cast(dict[str, str], await client.hgetall(key)))  # decode_responses=True: text
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(key)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
            self.fallback.mirror(key, dict(value), pttl)
            return dict(value)

        return await self._run("hgetall", remote, lambda: self.fallback.hgetall(key))

    # -- sets ------------------------------------------------------------------------------------

    async def sadd(self, key: str, *members: Value) -> int:
        items = tuple(_encode(m) for m in members)

        async def remote(client: aioredis.Redis) -> int:
            added = int(await client.sadd(key, *items))
            self._mirror(key, lambda: self.fallback.sadd(key, items))
            return added

        def local() -> int:
            added = self.fallback.sadd(key, items)
            self._pend(key, PendingOp("sadd", items))
            return added

        return await self._run("sadd", remote, local, write=True)

    async def srem(self, key: str, *members: Value) -> int:
        items = tuple(_encode(m) for m in members)

        async def remote(client: aioredis.Redis) -> int:
            removed = int(await client.srem(key, *items))
            self._mirror(key, lambda: self.fallback.srem(key, items))
            return removed

        def local() -> int:
            removed = self.fallback.srem(key, items)
            self._pend(key, PendingOp("srem", items))
            return removed

        return await self._run("srem", remote, local, write=True)

    # -- the breaker around every operation ------------------------------------------------------

    async def _run(
        self,
        name: str,
        remote: Callable[[aioredis.Redis], Awaitable[T]],
        local: Callable[[], T],
        *,
        write: bool = False,
    ) -> T:
        """Run `remote` on Redis if the breaker allows, else (or on failure) `local` on the fallback."""
        self._check_open()
        self.counters.operations += 1
        if await self._redis_ready():
            started = time.perf_counter()
            try:
                result = await remote(self._client)
            except FAILURES as exc:
                self._on_failure(name, exc)
            except redis.exceptions.RedisError:
                # Redis answered (WRONGTYPE, …): it is up; the error is the caller's.
                self.breaker.record_success()
                raise
            else:
                self.breaker.record_success()
                self._observe(name, started)
                return result
        if write:
            self.counters.fallback_writes += 1
        else:
            self.counters.fallback_reads += 1
        return local()

    async def _redis_ready(self) -> bool:
        """May this call use Redis? Takes the half-open probe if it is due; replays pending writes first."""
        if not self.breaker.allow():
            return False
        if self.breaker.state is CircuitState.HALF_OPEN:
            return await self._probe()
        if self.pending:
            # Writes made while Redis failed must land before anything reads or writes Redis again.
            try:
                await self._reconcile()
            except FAILURES as exc:
                self._on_failure("reconcile", exc)
                return False
        return True

    async def _probe(self) -> bool:
        """The one half-open call: ping, replay pending writes, then close the circuit."""
        ok = False
        latency = 0.0
        try:
            # Connections pooled before the outage are dead; start the probe on fresh ones.
            with contextlib.suppress(Exception):
                await self._client.connection_pool.disconnect(inuse_connections=False)
            latency = await self._timed_ping()
            if self.server_version is None:
                try:
                    await self._check_version()
                except RedisTooOld as exc:  # found when it first answered, after the start
                    self._log(errors_log, logging.ERROR, "%s", exc)
            await self._reconcile()
            ok = True
        except FAILURES as exc:
            self._note_error("probe", exc)
        finally:
            # Also on cancellation: a probe that never reports would leave the circuit half-open.
            if ok:
                self.breaker.record_success()
                self._log(
                    errors_log,
                    logging.WARNING,
                    "Redis at %s is back (ping %.2f ms); circuit closed",
                    self.safe_url,
                    latency,
                )
            else:
                self.breaker.record_failure()
        return ok

    async def _reconcile(self) -> None:
        """Replay the pending writes into Redis (the rule is in managers/redis_replay.py)."""
        async with self._reconcile_lock:
            outcomes: Counter[str] = Counter()
            while (item := self.pending.pop_first()) is not None:
                key, entry = item
                try:
                    result = await replay(self._client, key, entry, self._clock(), marker_ttl_ms=self._marker_ttl_ms)
                except FAILURES:
                    self.pending.restore(key, entry)  # the marker keeps a retry from applying it twice
                    raise
                except redis.exceptions.RedisError as exc:
                    self.counters.reconcile_errors += 1
                    self.fallback.forget(key)
                    self._log(errors_log, logging.ERROR, "Redis rejected the pending writes of %r: %s", key, exc)
                    continue
                outcomes[result.outcome] += 1
                if result.outcome in ("skipped", "conflict") or result.rejected is not None:
                    # Our copy may now differ from what Redis holds: reads take Redis' value.
                    self.fallback.forget(key)
                if result.rejected is not None:
                    self.counters.reconcile_errors += 1
                    self._log(
                        errors_log,
                        logging.ERROR,
                        "Redis rejected part of the pending writes of %r: %s",
                        key,
                        result.rejected,
                    )
                if result.outcome == "conflict":
                    self._log(
                        errors_log, logging.WARNING, "SET NX of %r made during the outage lost to Redis' value", key
                    )
            self.counters.reconciled += outcomes["applied"]
            self.counters.reconcile_skipped += outcomes["skipped"]
            self.counters.reconcile_conflicts += outcomes["conflict"]
            self.counters.reconcile_already_applied += outcomes["already_applied"]
            if outcomes:
                self._log(
                    errors_log,
                    logging.WARNING,
                    "reconciled writes made while Redis was down: %d keys applied, %d expired, %d NX conflicts, "
                    "%d found applied by an earlier try",
                    outcomes["applied"],
                    outcomes["skipped"],
                    outcomes["conflict"],
                    outcomes["already_applied"],
                )

    # -- health loop -----------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        attempt = 0
        while not self._closed:
            if self.breaker.state is CircuitState.CLOSED:
                attempt = 0
                delay = self.options.health_interval
            else:
                backoff = min(self.options.reconnect_base * 2**attempt, self.options.reconnect_max)
                delay = max(backoff, self.breaker.retry_in())
                attempt += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            if self._wake.is_set():
                return
            try:
                await self._health_tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any surprise
                self._log(errors_log, logging.ERROR, "Redis health check crashed: %r", exc)

    async def _health_tick(self) -> None:
        self.fallback.purge_expired()
        latency = await self.ping()
        if latency is not None:
            self._log(performance_log, logging.INFO, "redis ping %.2f ms (%s)", latency, self.safe_url)

    # -- helpers ---------------------------------------------------------------------------------

    async def _check_version(self) -> None:
        """Refuse a server older than MIN_REDIS_VERSION (RedisTooOld), in one line that says why."""
        if self.embedded:
            return  # the in-process stand-in implements what the bot uses
        try:
            info = await self._client.info("server")
        except redis.exceptions.ResponseError as exc:  # INFO renamed or refused by a proxy
            self._log(errors_log, logging.WARNING, "could not read the Redis version (%s); not checked", exc)
            self.server_version = ""
            return
        self.server_version = version = str(info.get("redis_version", ""))
        if version_tuple(version) < MIN_REDIS_VERSION:
            raise RedisTooOld(self._too_old(version))

    def _too_old(self, version: str) -> str:
        needed = ".".join(map(str, MIN_REDIS_VERSION))
        return (
            f"Redis at {self.safe_url} is version {version or 'unknown'}; the bot needs Redis {needed} or newer "
            "(its alert queue uses XAUTOCLAIM)"
        )

    async def _version_over_resp2(self) -> str:
        """The version of a server too old for RESP3, asked on a connection of its own in RESP2."""
        client = aioredis.Redis.from_url(
            self._url or "",
            protocol=2,
            decode_responses=True,
            socket_timeout=self.options.socket_timeout,
            socket_connect_timeout=self.options.socket_connect_timeout,
        )
        try:
            info = await client.info("server")
            return str(info.get("redis_version", "")) or "older than 6.0"
        except (redis.exceptions.RedisError, OSError):
            return "older than 6.0"
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _timed_ping(self) -> float:
        started = time.perf_counter()
        await self._client.ping()
        latency = (time.perf_counter() - started) * 1000
        self.last_latency_ms = latency
        return latency

    def _observe(self, name: str, started: float) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if elapsed_ms > self.options.slow_ms:
            self.counters.slow_operations += 1
            self._log(performance_log, logging.WARNING, "slow redis %s: %.1f ms", name, elapsed_ms)

    def _on_failure(self, name: str, exc: BaseException) -> None:
        before = self.breaker.state
        self.breaker.record_failure()
        self._note_error(name, exc)
        if before is CircuitState.CLOSED and self.breaker.state is CircuitState.OPEN:
            self._log(
                errors_log,
                logging.ERROR,
                "circuit opened after %d failures: Redis at %s is down; serving from the in-memory fallback",
                self.breaker.failure_threshold,
                self.safe_url,
            )

    def _note_error(self, name: str, exc: BaseException) -> None:
        self.counters.errors += 1
        self.last_error = self._redact(f"{name}: {type(exc).__name__}: {exc}")
        self._log(
            errors_log, logging.WARNING, "redis %s failed (%s): %s: %s", name, self.safe_url, type(exc).__name__, exc
        )

    def _pend(self, key: str, op: PendingOp) -> None:
        """Record a write made to the fallback, to be replayed into Redis when it is back."""
        dropped = self.pending.record(key, op, self._clock())
        if dropped:
            before = self.counters.pending_dropped
            self.counters.pending_dropped += dropped
            # Logged at the first loss and then once per thousand, so a long outage cannot flood the log.
            if before == 0 or before // 1000 != self.counters.pending_dropped // 1000:
                self._log(
                    errors_log,
                    logging.ERROR,
                    "pending-write log full (%d keys): the oldest keys' writes are lost (%d so far)",
                    self.options.pending_max_keys,
                    self.counters.pending_dropped,
                )

    def _mirror(self, key: str, update: Callable[[], object]) -> None:
        """Apply a successful write to the fallback copy; a stale copy of another type is dropped."""
        try:
            update()
        except redis.exceptions.ResponseError:
            self.fallback.forget(key)

    def _check_open(self) -> None:
        if self._closed:
            raise RedisUnavailable(f"RedisManager for {self.safe_url} is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self.breaker.state is not CircuitState.CLOSED:
            raise RedisUnavailable(
                f"Redis at {self.safe_url} is unavailable (circuit {self.breaker.state.value}, "
                f"next probe in {self.breaker.retry_in():.1f}s)"
            )

    def _redact(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _log(self, logger: logging.Logger, level: int, msg: str, *args: object) -> None:
        # Format here so the password can be scrubbed from whatever ended up in the message.
        if logger.isEnabledFor(level):
            logger.log(level, self._redact(msg % args if args else msg), stacklevel=2)
