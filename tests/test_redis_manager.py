"""RedisManager: circuit breaker, fallback store, and real-Redis outages simulated with a TCP proxy.

The outage tests run against the real Redis (fixture `redis_url`, logical db 13) through
`TcpProxy`: stopping the proxy is "Redis is down" for the manager while the server keeps running.
Nothing here asserts on wall-clock durations: waits are polls bounded by the test timeout, and
TTLs run on a fake clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from managers.circuit_breaker import CircuitBreaker, CircuitState
from managers.redis_fallback import FallbackStore
from managers.redis_manager import RedisManager, RedisOptions, RedisUnavailable
from managers.redis_replay import PendingKey, PendingOp, PendingWrites, replay
from managers.urls import redact_url
from standins.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(30)

# Small intervals so outages are noticed and recoveries probed quickly; failures come from refused
# or reset connections, which are immediate, so the socket timeouts are only a safety net.
FAST = RedisOptions(
    health_interval=0.05,
    reconnect_base=0.01,
    reconnect_max=0.05,
    failure_threshold=2,
    cooldown=0.02,
    max_cooldown=0.1,
    socket_timeout=1.0,
    socket_connect_timeout=1.0,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(condition: Callable[[], bool | Awaitable[bool]], step: float = 0.01) -> None:
    """Poll until `condition` holds; the test timeout bounds the wait."""
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(step)


class AnswerLosingProxy:
    """Forwards TCP to a server; armed with `lose_answer_after(request)`, the next connection that
    sends `request` loses every later answer: the server did the work, and the client either times
    out ("swallow") or sees its connection reset when the answer comes ("reset")."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._armed: bytes | None = None
        self._how: Literal["swallow", "reset"] = "swallow"
        self._tasks: set[asyncio.Task[None]] = set()
        self.lost_bytes = 0  # bytes of answers swallowed: > 0 means the server did answer

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def lose_answer_after(self, request: bytes, how: Literal["swallow", "reset"] = "swallow") -> None:
        self._armed, self._how = request, how

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        swallowing = False

        async def upstream(up_writer: asyncio.StreamWriter) -> None:
            nonlocal swallowing
            while data := await reader.read(65536):
                if self._armed is not None and self._armed in data:
                    self._armed, swallowing = None, True
                up_writer.write(data)
                await up_writer.drain()

        async def downstream(up_reader: asyncio.StreamReader) -> None:
            while data := await up_reader.read(65536):
                if swallowing:
                    self.lost_bytes += len(data)
                    if self._how == "reset":
                        writer.transport.abort()
                        return
                    continue
                writer.write(data)
                await writer.drain()

        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(upstream(up_writer)), asyncio.ensure_future(downstream(up_reader))],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for other in pending:
                other.cancel()
            await asyncio.gather(*done, *pending, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Circuit breaker (pure, fake clock)
# --------------------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown=5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the run of failures
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert breaker.opens == 1
    assert not breaker.allow()


def test_breaker_lets_exactly_one_probe_after_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.advance(4.9)
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.allow()  # the probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow()  # everyone else waits for its verdict
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow() and breaker.allow()


def test_breaker_cooldown_grows_on_failed_probes_up_to_max_and_resets_on_success() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=5, max_cooldown=60, clock=clock)
    breaker.record_failure()
    seen = []
    for _ in range(6):
        seen.append(breaker.current_cooldown)
        clock.advance(breaker.current_cooldown)
        assert breaker.allow()
        breaker.record_failure()  # the probe fails: re-open with a longer cool-down
        assert breaker.state is CircuitState.OPEN
    assert seen == [5, 10, 20, 40, 60, 60]
    assert breaker.failed_probes == 6 and breaker.opens == 1
    clock.advance(60)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.current_cooldown == 5 and breaker.consecutive_failures == 0


def test_breaker_ignores_late_results_while_open_and_trip_forces_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=5, clock=clock)
    breaker.trip()
    assert breaker.state is CircuitState.OPEN and breaker.opens == 1
    clock.advance(3)
    breaker.record_failure()  # a call that was already in flight: must not push the probe back
    breaker.record_success()  # nor close the circuit without a probe
    assert breaker.state is CircuitState.OPEN
    clock.advance(2)
    assert breaker.allow()


# --------------------------------------------------------------------------------------------
# Fallback store and pending log (pure, fake clock)
# --------------------------------------------------------------------------------------------


def test_fallback_store_honours_ttls() -> None:
    clock = FakeClock()
    store = FallbackStore(clock=clock)
    store.set("a", "1", ttl=10)
    store.set("b", "2")
    store.mirror("h", {"f": "v"}, pttl=5000)
    assert store.ttl("a") == 10 and store.ttl("b") == -1 and store.ttl("missing") == -2
    clock.advance(5)
    assert store.hgetall("h") == {} and "h" not in store
    assert store.get("a") == "1" and store.ttl("a") == 5
    assert store.incrby("a", 2) == 3 and store.ttl("a") == 5  # INCR keeps the TTL
    clock.advance(5)
    assert store.get("a") is None
    assert store.get("b") == "2"
    store.set("c", "x", ttl=1)
    clock.advance(2)
    assert store.purge_expired() == 1 and len(store) == 1


def test_fallback_store_follows_redis_semantics_and_is_bounded() -> None:
    store = FallbackStore(max_keys=3)
    assert store.sadd("s", ["a", "b"]) == 2 and store.sadd("s", ["b", "c"]) == 1
    assert store.srem("s", ["a", "b", "c"]) == 3 and "s" not in store  # empty set disappears
    assert store.set("k", "v") and not store.set("k", "w", nx=True) and store.get("k") == "v"
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        store.hget("k", "f")
    with pytest.raises(redis.exceptions.ResponseError):
        store.incrby("k", 1)
    for i in range(5):
        store.set(f"x{i}", str(i))
    assert len(store) == 3 and store.get("x4") == "4" and store.get("k") is None


def test_pending_writes_last_write_wins_and_bounded() -> None:
    pending = PendingWrites(max_keys=2)
    pending.record("a", PendingOp("incrby", (1,)), now=10.0)
    pending.record("a", PendingOp("incrby", (2,)), now=10.0)
    pending.record("a", PendingOp("set", ("x",), expires_at=50.0), now=10.0)  # overwrites the increments
    pending.record("a", PendingOp("incrby", (3,)), now=20.0)
    pending.record("b", PendingOp("delete"), now=20.0)
    key, entry = pending.pop_first() or ("", None)
    assert key == "a" and entry is not None
    assert [op.command for op in entry.ops] == ["set", "incrby"] and entry.deadline == 50.0
    pending.restore("a", entry)
    assert pending.keys() == ["a", "b"]
    pending.record("a", PendingOp("incrby", (4,)), now=60.0)  # "a" expired at 50: this INCRBY made it anew
    assert pending.record("c", PendingOp("sadd", ("m",)), now=60.0) == 1  # over the bound: oldest key dropped
    assert pending.keys() == ["a", "c"]
    key, entry = pending.pop_first() or ("", None)
    assert entry is not None and [(op.command, op.args) for op in entry.ops] == [("delete", ()), ("incrby", (4,))]


async def test_a_replay_retried_after_it_went_in_is_not_applied_again(direct: aioredis.Redis) -> None:
    """A replay whose answer was lost may have gone in: the retry the manager makes then (the same
    entry put back into the log, with writes made meanwhile appended) applies only what is new."""
    await direct.set("hits", "10")
    log = PendingWrites()
    log.record("hits", PendingOp("incrby", (5,)), now=0.0)
    key, entry = log.pop_first() or ("", PendingKey())
    assert (await replay(direct, key, entry, now=0.0)).outcome == "applied"
    log.record("hits", PendingOp("incrby", (2,)), now=0.0)  # made while that replay was under way
    log.restore(key, entry)  # as when the replay raised: its answer never came
    key, entry = log.pop_first() or ("", PendingKey())
    assert (await replay(direct, key, entry, now=0.0)).outcome == "applied"
    assert await direct.get("hits") == "17"
    log.restore(key, entry)  # that answer was lost too
    key, entry = log.pop_first() or ("", PendingKey())
    assert (await replay(direct, key, entry, now=0.0)).outcome == "already_applied"
    assert await direct.get("hits") == "17"

    log.record("lock", PendingOp("set", ("mine",), nx=True), now=0.0)
    key, entry = log.pop_first() or ("", PendingKey())
    assert (await replay(direct, key, entry, now=0.0)).outcome == "applied"
    log.restore(key, entry)
    key, entry = log.pop_first() or ("", PendingKey())
    assert (await replay(direct, key, entry, now=0.0)).outcome == "already_applied"  # not an NX conflict with itself
    assert await direct.get("lock") == "mine"


def test_redact_url() -> None:
    assert redact_url("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("rediss://user:p%40ss@host/1") == "rediss://user:***@host/1"
    assert redact_url("redis://host:6379/0?password=secret&x=1") == "redis://host:6379/0?password=***&x=1"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    assert RedisManager.from_url(None).safe_url == "embedded"


# --------------------------------------------------------------------------------------------
# Against the real Redis, through the proxy
# --------------------------------------------------------------------------------------------


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss") or parts.hostname is None:
        pytest.skip("the proxy needs a redis:// URL with a host")
    tcp = TcpProxy(parts.hostname, parts.port or 6379)
    await tcp.start()
    yield tcp
    await tcp.close()


@pytest.fixture
def proxied_url(redis_url: str, proxy: TcpProxy) -> str:
    """`redis_url` (credentials, db 13, options kept) with host:port swapped for the proxy's."""
    parts = urlsplit(redis_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo + '@' if userinfo else ''}{proxy.listen_host}:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
async def direct(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the same real database, bypassing the proxy: the ground truth."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def manager(proxied_url: str) -> AsyncIterator[RedisManager]:
    mgr = RedisManager.from_url(proxied_url, FAST)
    await mgr.start()
    yield mgr
    await mgr.close()


async def wait_recovered(mgr: RedisManager) -> None:
    await eventually(lambda: mgr.health()["status"] == "ok")


async def test_basic_operations(manager: RedisManager, direct: aioredis.Redis) -> None:
    assert manager.health()["status"] == "ok"
    assert await manager.set("s", "v", ex=100)
    assert not await manager.set("s", "w", nx=True)
    assert await manager.get("s") == "v" and 99 <= await manager.ttl("s") <= 100
    assert await manager.incrby("n") == 1 and await manager.incrby("n", 4) == 5
    assert await manager.hset("h", mapping={"a": 1, "b": "x"}) == 2
    assert await manager.hset("h", "c", "y") == 1
    assert await manager.hget("h", "a") == "1"
    assert await manager.hgetall("h") == {"a": "1", "b": "x", "c": "y"}
    assert await manager.sadd("set", "a", "b", 3) == 3 and await manager.srem("set", "a") == 1
    assert await manager.delete("s", "nope") == 1 and await manager.get("s") is None
    assert await direct.get("n") == "5" and await direct.hgetall("h") == {"a": "1", "b": "x", "c": "y"}
    assert await direct.smembers("set") == {"b", "3"}
    pipe = manager.client.pipeline()
    results = await pipe.set("raw", "1").get("raw").execute()
    assert results == [True, "1"]
    with pytest.raises(redis.exceptions.ResponseError):
        await manager.hget("n", "f")  # Redis answered: the error is the caller's, Redis is not "down"
    latency = await manager.ping()
    assert latency is not None and latency >= 0
    health = manager.health()
    assert health["status"] == "ok" and health["circuit"] == "closed" and health["errors"] == 0
    assert manager.metrics()["operations"] >= 14 and manager.metrics()["fallback_reads"] == 0


async def test_outage_served_from_fallback_then_reconciled_into_redis(
    manager: RedisManager, proxy: TcpProxy, direct: aioredis.Redis
) -> None:
    """The issue's scenario: Redis stops, the bot keeps reading and writing, Redis comes back with
    every write made meanwhile."""
    await manager.set("before", "1")
    await manager.hset("profile", mapping={"lang": "en", "tier": "free"})
    await manager.incrby("counter", 5)
    await manager.sadd("subs", "a", "b")
    assert await manager.get("before") == "1"

    await proxy.stop_forwarding()

    # Reads of what the manager has seen keep working...
    assert await manager.get("before") == "1"
    assert await manager.hgetall("profile") == {"lang": "en", "tier": "free"}
    # ... and so do writes.
    assert await manager.set("during", "x", ex=300)
    assert await manager.hset("profile", "tier", "pro") == 0
    assert await manager.incrby("counter") == 6
    assert await manager.sadd("subs", "c") == 1 and await manager.srem("subs", "a") == 1
    assert await manager.delete("before") == 1
    assert await manager.get("during") == "x" and await manager.get("before") is None

    health = manager.health()
    assert health["status"] == "degraded" and health["circuit"] == "open"
    assert health["pending_writes"] == 5 and health["errors"] >= 2
    assert manager.metrics()["circuit_opens"] == 1 and manager.metrics()["fallback_writes"] >= 6
    with pytest.raises(RedisUnavailable) as raised:
        manager.client  # noqa: B018 - raw access fails fast while down
    assert isinstance(raised.value, ConnectionError)
    # Meanwhile someone else bumps the counter in the real Redis: deltas must add up, not overwrite.
    await direct.incrby("counter", 10)

    await proxy.resume()
    await wait_recovered(manager)

    assert manager.health()["pending_writes"] == 0
    assert await direct.get("during") == "x" and 0 < await direct.ttl("during") <= 300
    assert await direct.hgetall("profile") == {"lang": "en", "tier": "pro"}
    assert await direct.get("counter") == "16"
    assert await direct.smembers("subs") == {"b", "c"}
    assert await direct.exists("before") == 0
    assert manager.metrics()["reconciled"] == 5
    assert manager.client is not None and await manager.get("counter") == "16"


@pytest.mark.parametrize("how", ["swallow", "reset"])
async def test_an_outage_increment_reaches_redis_once_when_the_replay_answer_is_lost(
    how: Literal["swallow", "reset"], proxy: TcpProxy, proxied_url: str, direct: aioredis.Redis
) -> None:
    """The replay's MULTI/EXEC reaches Redis but its answer does not. On a timeout the writes stay
    pending for the next probe; on a reset connection the client would send them again at once.
    Either way the retry must add nothing."""
    lossy = AnswerLosingProxy(proxy.listen_host, proxy.port)
    await lossy.start()
    parts = urlsplit(proxied_url)
    mgr = RedisManager.from_url(
        urlunsplit((parts.scheme, f"127.0.0.1:{lossy.port}", parts.path, parts.query, parts.fragment)),
        dataclasses.replace(FAST, socket_timeout=0.3),
    )
    await mgr.start()
    try:
        await direct.set("hits", "10")
        await proxy.stop_forwarding()
        assert await mgr.incrby("hits", 5) == 5  # the fallback never saw the key: it counts from 0
        lossy.lose_answer_after(b"EXEC", how)
        await proxy.resume()
        await wait_recovered(mgr)
        assert lossy.lost_bytes > 0  # Redis did answer the first replay: it went in
        assert await direct.get("hits") == "15"  # added to what Redis held, once
    finally:
        await mgr.close()
        await lossy.close()


async def test_operations_during_outage_do_not_hang(proxied_url: str, proxy: TcpProxy) -> None:
    """A partition (bytes swallowed, no error) must end in a timeout and the fallback, not a hang."""
    options = dataclasses.replace(FAST, socket_timeout=0.2, socket_connect_timeout=0.2)
    mgr = RedisManager.from_url(proxied_url, options)
    await mgr.start()
    try:
        await mgr.set("k", "v")
        await proxy.stop_forwarding(mode="blackhole")
        async with asyncio.timeout(10):  # a hang, not a slow run, would trip this
            for i in range(10):
                assert await mgr.set(f"k{i}", "v")
                assert await mgr.get("k") == "v"
        assert mgr.health()["circuit"] in ("open", "half_open")
        await proxy.resume()
        await wait_recovered(mgr)
        assert await mgr.get("k9") == "v"
    finally:
        await mgr.close()


async def test_fallback_ttls_and_expired_writes_are_not_replayed(
    proxied_url: str, proxy: TcpProxy, direct: aioredis.Redis
) -> None:
    clock = FakeClock()
    mgr = RedisManager.from_url(proxied_url, FAST, clock=clock)
    await proxy.stop_forwarding()
    await mgr.start()
    try:
        assert mgr.health()["circuit"] == "open"
        await direct.set("old", "redis-value")
        assert await mgr.set("short", "a", ex=10)
        assert await mgr.set("long", "b", ex=1000)
        assert await mgr.set("nottl", "c")
        await mgr.delete("old")
        assert await mgr.set("old", "mine", ex=5)
        assert await mgr.ttl("short") == 10 and await mgr.ttl("nottl") == -1
        clock.advance(11)
        assert await mgr.get("short") is None and await mgr.ttl("short") == -2
        assert await mgr.get("long") == "b" and await mgr.ttl("long") == 989
        assert await mgr.get("old") is None

        await proxy.resume()
        clock.advance(1)  # the breaker's cool-down runs on the fake clock too
        await wait_recovered(mgr)
        assert await direct.exists("short") == 0  # expired before Redis came back: skipped
        assert await direct.get("long") == "b" and 985 <= await direct.ttl("long") <= 988
        assert await direct.get("nottl") == "c" and await direct.ttl("nottl") == -1
        assert await direct.exists("old") == 0  # overwritten, then expired: the old value must not return
        assert mgr.metrics()["reconcile_skipped"] == 2
    finally:
        await mgr.close()


async def test_a_write_after_a_key_expired_during_the_outage_starts_it_afresh(
    proxied_url: str, proxy: TcpProxy, direct: aioredis.Redis
) -> None:
    """Once its TTL ran out the key was gone: a later write made it anew, so it must reach Redis
    (not be dropped with the expired value), and the expired value must not outlive its TTL."""
    clock = FakeClock()
    mgr = RedisManager.from_url(proxied_url, FAST, clock=clock)
    await proxy.stop_forwarding()
    await mgr.start()
    try:
        await direct.set("count", "100")
        assert await mgr.set("count", "7", ex=5)
        assert await mgr.set("name", "old", ex=5)
        clock.advance(6)
        assert await mgr.incrby("count") == 1
        assert await mgr.set("name", "new", nx=True)

        await proxy.resume()
        clock.advance(1)
        await wait_recovered(mgr)
        assert await direct.get("count") == "1" and await direct.ttl("count") == -1
        assert await direct.get("name") == "new" and await direct.ttl("name") == -1
    finally:
        await mgr.close()


async def test_set_nx_conflict_keeps_redis_value(
    manager: RedisManager, proxy: TcpProxy, direct: aioredis.Redis
) -> None:
    await proxy.stop_forwarding()
    for _ in range(FAST.failure_threshold):
        await manager.get("warmup")
    assert manager.health()["circuit"] == "open"
    assert await manager.set("lock", "mine", ex=60, nx=True)
    assert await manager.set("free", "mine", nx=True)
    await direct.set("lock", "theirs")

    await proxy.resume()
    await wait_recovered(manager)
    assert await direct.get("lock") == "theirs"
    assert await manager.get("lock") == "theirs"
    assert await direct.get("free") == "mine"
    assert manager.metrics()["reconcile_conflicts"] == 1


async def test_start_while_redis_down_then_recovers(proxied_url: str, proxy: TcpProxy, direct: aioredis.Redis) -> None:
    await proxy.stop_forwarding()
    mgr = RedisManager.from_url(proxied_url, FAST)
    await mgr.start()  # must not raise
    try:
        assert mgr.health()["status"] == "degraded"
        assert await mgr.ping() is None
        assert await mgr.set("k", "v")
        assert await mgr.get("k") == "v"
        await proxy.resume()
        await wait_recovered(mgr)
        assert await direct.get("k") == "v"
        assert mgr.health()["latency_ms"] is not None
    finally:
        await mgr.close()
    assert mgr.health()["status"] == "down"
    with pytest.raises(RedisUnavailable):
        await mgr.get("k")


async def test_embedded_mode_needs_no_server() -> None:
    mgr = RedisManager.from_url(None)
    await mgr.start()
    try:
        assert mgr.embedded and mgr.health()["status"] == "ok" and mgr.health()["mode"] == "embedded"
        assert await mgr.set("k", 1, ex=10) and await mgr.get("k") == "1"
        assert await mgr.incrby("k") == 2
        assert await mgr.hset("h", mapping={"a": "b"}) == 1 and await mgr.hgetall("h") == {"a": "b"}
        assert await mgr.sadd("s", "x") == 1 and await mgr.client.smembers("s") == {"x"}
        assert await mgr.ping() is not None
        await mgr.client.xadd("stream", {"f": "v"})
        assert await mgr.client.xlen("stream") == 1
    finally:
        await mgr.close()
    # Each embedded manager has a server of its own.
    other = RedisManager.from_url(None)
    await other.start()
    try:
        assert await other.get("k") is None
    finally:
        await other.close()


async def test_password_is_redacted_in_logs(proxy: TcpProxy, caplog: pytest.LogCaptureFixture) -> None:
    await proxy.stop_forwarding()
    url = proxy.url("redis", "/13", userinfo=":s3cretpass")
    caplog.set_level(logging.DEBUG, logger="alertbot.redis")
    mgr = RedisManager.from_url(url, FAST)
    await mgr.start()
    try:
        await mgr.get("k")
        with pytest.raises(RedisUnavailable) as raised:
            mgr.client  # noqa: B018
    finally:
        await mgr.close()
    error_records = [r for r in caplog.records if r.name == "alertbot.redis.errors"]
    assert error_records, "the outage must be logged to the redis error log"
    text = caplog.text + str(raised.value) + repr(mgr.health())
    assert ":***@" in text
    assert "s3cretpass" not in text


async def test_slow_operations_and_latency_go_to_the_performance_log(
    proxied_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alertbot.redis.performance")
    mgr = RedisManager.from_url(proxied_url, dataclasses.replace(FAST, slow_ms=0.0))
    await mgr.start()
    try:
        await mgr.set("k", "v")
        await eventually(lambda: any("redis ping" in r.getMessage() for r in caplog.records))
    finally:
        await mgr.close()
    perf = [r.getMessage() for r in caplog.records if r.name == "alertbot.redis.performance"]
    assert any("slow redis set" in m for m in perf)
    assert mgr.metrics()["slow_operations"] >= 1


async def test_brief_failure_below_threshold_is_reconciled_by_the_next_operation(
    proxied_url: str, proxy: TcpProxy, direct: aioredis.Redis
) -> None:
    mgr = RedisManager.from_url(proxied_url, dataclasses.replace(FAST, failure_threshold=5, health_interval=60))
    await mgr.start()
    try:
        await proxy.stop_forwarding()
        assert await mgr.set("blip", "1")  # one failure: served by the fallback, circuit still closed
        assert mgr.health()["circuit"] == "closed" and mgr.health()["pending_writes"] == 1
        await proxy.resume()
        assert await mgr.get("blip") == "1"  # replays the pending write before reading Redis
        assert await direct.get("blip") == "1" and mgr.health()["status"] == "ok"
    finally:
        await mgr.close()


async def test_concurrent_operations_during_outage_and_guarded_raw_access(
    manager: RedisManager, proxy: TcpProxy, direct: aioredis.Redis
) -> None:
    assert manager.client.connection_pool.max_connections == 50
    await proxy.stop_forwarding()
    with pytest.raises(RedisUnavailable):
        async with manager.guarded() as raw:  # a raw-client failure feeds the breaker
            await raw.xadd("events", {"k": "v"})
    results = await asyncio.gather(*(manager.incrby("hits") for _ in range(200)))
    assert sorted(results) == list(range(1, 201))
    assert manager.health()["circuit"] == "open"
    await proxy.resume()
    await wait_recovered(manager)
    assert await direct.get("hits") == "200"
    async with manager.guarded() as raw:
        assert await raw.xadd("events", {"k": "v"})
