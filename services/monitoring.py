"""The service watching itself: a health check every interval, a heartbeat in bot.log, and the
admins told when something stays wrong (and when it is over).

Each check pings Redis (the latency goes to redisperformance.log), reads the feeds' status, the
event queue, the outbox backlog, the process's memory and the sender's 429 and failure counts,
and feeds each condition to its `Watch` (domain/incidents.py), which decides when an incident
opens and recovers. Messages go through the sender's admin lane, one per incident and one when
it is over; `words` puts them in each admin's language. At start the admins hear that the bot
(re)started and how its previous run ended, from a record this instance keeps in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain.incidents import IncidentKind, Phase, Watch, increase, observe, over_share, previous_run, trim
from domain.messages import Lane, OutgoingMessage
from managers.redis_manager import RedisManager
from managers.stream import StreamManager
from services.event_queue import EventQueue
from services.loops import BackgroundLoop
from services.outbox import Outbox
from services.sender import MessageSender

logger = logging.getLogger("alertbot.monitor")
performance_log = logging.getLogger("alertbot.redis.performance")

STATE_KEY = "monitor:instance:{instance}"  # started_at, heartbeat_at, stopped_at (epoch seconds)
STATE_TTL_SECONDS = 90 * 24 * 3600
_UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"


@dataclass(frozen=True)
class MonitorSettings:
    interval: float = 30.0
    redis_down: float = 300.0  # seconds Redis may be unhealthy before the admins hear
    stream_down: float = 60.0
    queue_percent: float = 80.0
    memory_percent: float = 80.0
    memory_limit: int | None = None  # bytes; None: the cgroup's limit, else the machine's memory
    burst_window: float = 300.0  # 429s and failed deliveries are counted over this many seconds
    rate_limited_count: int = 10
    failures_count: int = 20
    start_notice: bool = True


@dataclass(frozen=True)
class AdminNotice:
    """What the admins are told: a kind (an incident kind, or "started") and its phase, with the
    values its text shows (durations in seconds under "duration" and "window")."""

    kind: str
    phase: Phase | None
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"monitor_{self.kind}" + (f"_{self.phase.value}" if self.phase else "")


# (admin chat id, notice) -> the message in that admin's language (Telegram HTML).
Words = Callable[[int, AdminNotice], str]


def process_memory_bytes() -> int:
    """The process's resident memory (VmRSS); the peak where /proc is not there."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _read_limit(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        raw = path.read_text().strip()
        if raw and raw != "max" and int(raw) < _UNLIMITED:
            return int(raw)
    return None


def memory_limit_bytes() -> int | None:
    """The memory this process may use: its cgroup's limit (v2, then v1) when one is set, else
    the machine's memory."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, _, path = line.partition("::")
            if hierarchy == "0":
                for folder in (Path("/sys/fs/cgroup") / path.lstrip("/"), Path("/sys/fs/cgroup")):
                    limit = _read_limit(folder / "memory.max")
                    if limit is not None:
                        return limit
    limit = _read_limit(Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
    if limit is not None:
        return limit
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return None


@dataclass
class MonitorCounts:
    checks: int = 0
    notices: int = 0  # messages handed to the sender for admins
    incidents: int = 0  # incidents opened


class Monitor:
    def __init__(
        self,
        redis: RedisManager,
        queue: EventQueue,
        sender: MessageSender,
        delivery: Outbox,
        streams: Callable[[], Sequence[StreamManager]],
        *,
        admins: frozenset[int],
        words: Words,
        settings: MonitorSettings | None = None,
        instance: str = "bot",
        version: str = "",
        clock: Callable[[], float] = time.monotonic,
        memory: Callable[[], int] = process_memory_bytes,
    ) -> None:
        self.redis = redis
        self.queue = queue
        self.sender = sender
        self.delivery = delivery
        self.streams = streams
        self.admins = admins
        self.words = words
        self.settings = settings or MonitorSettings()
        self.instance = instance
        self.version = version
        self.clock = clock
        self.memory = memory
        self.memory_limit = self.settings.memory_limit or memory_limit_bytes()
        self.counts = MonitorCounts()
        self.watches: dict[str, Watch] = {}
        self._samples: dict[str, list[tuple[float, float]]] = {"rate_limited": [], "failed": []}
        self._loop = BackgroundLoop("monitor")
        self._checked = asyncio.Condition()
        # The latest check's levels, for /metrics (which cannot wait on Redis).
        self.backlog = 0
        self.memory_used = 0
        self.redis_latency_ms: float | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._announce_start()
        self._loop.start(self._run)

    async def stop(self) -> None:
        await self._loop.stop()
        # A clean stop, for the next start's notice.
        with contextlib.suppress(Exception):
            await self.redis.hset(self._state_key, "stopped_at", repr(time.time()))

    async def wait_for_checks(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` checks have been made since start (for tests and the demo)."""
        async with asyncio.timeout(timeout), self._checked:
            await self._checked.wait_for(lambda: self.counts.checks >= count)

    # ------------------------------------------------------------------ figures

    def levels(self) -> dict[str, float | None]:
        return {
            "memory_bytes": self.memory_used,
            "memory_limit_bytes": self.memory_limit,
            "redis_latency_ms": self.redis_latency_ms,
        }

    def open_incidents(self) -> dict[str, dict[str, float]]:
        """1 per kind whose incident is open (a feed's under "stream:<name>"), 0 otherwise."""
        kinds: dict[str, dict[str, float]] = {kind.value: {"open": 0} for kind in IncidentKind}
        for name, watch in self.watches.items():
            kind = name.split(":", 1)[0]
            if watch.open:
                kinds[kind] = {"open": 1}
        return kinds

    # ------------------------------------------------------------------ checks

    async def _run(self) -> None:
        while not self._loop.stopping:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the watch must outlive any surprise
                logger.exception("health check failed")
            await self._loop.sleep(self.settings.interval)

    async def check(self) -> None:
        """One round: measure, log the heartbeat, feed every watch, tell the admins what changed."""
        settings = self.settings
        now = self.clock()

        latency = await self.redis.ping()
        self.redis_latency_ms = latency
        if latency is not None:
            performance_log.info("health check: redis ping %.2f ms", latency)
        else:
            performance_log.warning("health check: redis unreachable (circuit %s)", self.redis.breaker.state.value)
        self._watch(IncidentKind.REDIS, now, bad=latency is None, open_after=settings.redis_down)

        feeds: list[str] = []
        for stream in self.streams():
            status = str(stream.health().get("status"))
            feeds.append(f"{stream.name} {status}")
            self._watch(
                IncidentKind.STREAM,
                now,
                bad=status == "down",
                open_after=settings.stream_down,
                name=stream.name,
                values={"feed": stream.name},
            )

        depth, capacity = self.queue.qsize(), self.queue.capacity
        queue_values = {"depth": depth, "capacity": capacity, "percent": round(100 * depth / max(capacity, 1))}
        self._watch(
            IncidentKind.QUEUE,
            now,
            bad=over_share(depth, capacity, settings.queue_percent),
            values=queue_values,
        )

        self.memory_used = used = self.memory()
        limit = self.memory_limit
        memory_values = {
            "used_mb": round(used / 2**20),
            "limit_mb": round(limit / 2**20) if limit else 0,
            "percent": round(100 * used / limit) if limit else 0,
        }
        self._watch(
            IncidentKind.MEMORY,
            now,
            bad=over_share(used, limit, settings.memory_percent),
            values=memory_values,
        )

        stats = self.sender.stats()
        for kind, counter, threshold in (
            (IncidentKind.RATE_LIMITED, "rate_limited", settings.rate_limited_count),
            (IncidentKind.FAILURES, "failed", settings.failures_count),
        ):
            samples = self._samples[counter]
            samples.append((now, float(stats.get(counter) or 0)))
            trim(samples, now, settings.burst_window)
            count = increase(samples, now, settings.burst_window)
            self._watch(
                kind,
                now,
                bad=count >= threshold,
                clear=count == 0,
                values={"count": int(count), "window": settings.burst_window},
            )

        self.backlog = backlog = await self.delivery.backlog()
        with contextlib.suppress(Exception):
            await self.redis.hset(self._state_key, "heartbeat_at", repr(time.time()))
        logger.info(
            "heartbeat: redis %s, feeds %s, queue %d/%d, outbox %d, sender %d pending, memory %d MB of %s, "
            "incidents %s",
            f"{latency:.2f} ms" if latency is not None else "unreachable",
            ", ".join(feeds) or "none",
            depth,
            capacity,
            backlog,
            self.sender.pending(),
            memory_values["used_mb"],
            f"{memory_values['limit_mb']} MB" if limit else "no limit",
            ", ".join(name for name, watch in self.watches.items() if watch.open) or "none",
        )
        async with self._checked:
            self.counts.checks += 1
            self._checked.notify_all()

    def _watch(
        self,
        kind: IncidentKind,
        now: float,
        *,
        bad: bool,
        clear: bool | None = None,
        open_after: float = 0.0,
        name: str = "",
        values: Mapping[str, Any] | None = None,
    ) -> None:
        key = f"{kind.value}:{name}" if name else kind.value
        before = self.watches.get(key, Watch())
        after, phase = observe(before, now, bad=bad, clear=clear, open_after=open_after)
        self.watches[key] = after
        if phase is None:
            return
        began = after.began if phase is Phase.OPENED else before.began
        duration = now - began if began is not None else 0.0
        notice = AdminNotice(kind.value, phase, {**(values or {}), "duration": duration, "instance": self.instance})
        if phase is Phase.OPENED:
            self.counts.incidents += 1
            logger.warning("incident opened: %s %s", key, _describe(notice.values))
        else:
            logger.warning("incident over: %s after %.0f s", key, duration)
        self._tell_admins(notice)

    # ------------------------------------------------------------------ the admins

    @property
    def _state_key(self) -> str:
        return STATE_KEY.format(instance=self.instance)

    async def _announce_start(self) -> None:
        """Tell the admins the bot started, and how the previous run of this instance ended."""
        now = time.time()
        previous: dict[str, str] = {}
        known = self.redis.available
        try:
            previous = await self.redis.hgetall(self._state_key)
            await self.redis.hset(
                self._state_key, mapping={"started_at": repr(now), "heartbeat_at": repr(now), "stopped_at": ""}
            )
            if known:
                async with self.redis.guarded() as client:
                    await client.expire(self._state_key, STATE_TTL_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the notice must not stop the start
            logger.warning("could not read or keep this instance's run record: %r", exc)
            known = False
        how, at = previous_run(
            _moment(previous, "started_at"),
            _moment(previous, "heartbeat_at"),
            _moment(previous, "stopped_at"),
            known=known,
        )
        logger.info("started %s (version %s); previous run: %s", self.instance, self.version or "?", how)
        if self.settings.start_notice:
            values = {"instance": self.instance, "version": self.version or "?", "previous": how, "at": at}
            self._tell_admins(AdminNotice("started", None, values))

    def _tell_admins(self, notice: AdminNotice) -> None:
        for admin in sorted(self.admins):
            try:
                html = self.words(admin, notice)
                self.sender.submit(OutgoingMessage(admin, html, lane=Lane.ADMIN, kind="monitor"))
            except Exception as exc:  # noqa: BLE001 - a stopping sender refuses; the log has it
                logger.warning("could not tell admin %s about %s: %r", admin, notice.key, exc)
                continue
            self.counts.notices += 1


def _describe(values: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items() if key != "instance")


def _moment(record: Mapping[str, str], name: str) -> float | None:
    with contextlib.suppress(ValueError):
        return float(record.get(name) or "")
    return None
