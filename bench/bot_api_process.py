"""The test Bot API (FakeTelegramServer) in a process of its own, for benchmarks.

In one process the server and the sender share a core and an event loop, so at paid-broadcast
rates (1,000 msg/s) the benchmark measures the two together. Here the server runs in a
'spawn' child with its own loop; the bench talks HTTP to it like to Telegram. A Pipe carries
the little else the bench needs:

    child  -> parent   base_url, once listening
    child  -> parent   CompanionResult, when the companion (if any) has finished
    parent -> child    "stop", after the sender drained
    child  -> parent   ServerResult (accepted sends with server times, ServerStats), then exits

A forced burst of 429s is armed up front and fired inside the child the moment the N-th send
is accepted (what `server.wait_for` + `force_retry_after` did in process), so no round trip
over the pipe delays it. Progress lines go to stderr from the child, which counts the sends.
A companion (a picklable async function of the server) runs in the child beside the server for
what must act on its state at once, like a scripted user who injects updates and times the
bot's answers by the server's clock; the parent collects what it returned.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, NamedTuple

from aiogram import Bot
from aiogram.client.telegram import TelegramAPIServer

from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, LocalAiohttpSession, RateLimits, WaitTimeout

STARTUP_TIMEOUT = 30.0  # seconds for the child to import aiohttp/aiogram and listen
STOP_TIMEOUT = 10.0


class Accepted(NamedTuple):
    """One accepted send: what the bench's analysis reads of a SentRecord."""

    chat_id: int
    monotonic: float  # server clock; CLOCK_MONOTONIC is system-wide, so comparable across processes


@dataclass(frozen=True)
class Burst:
    """Answer 429 "retry after `retry_after`" to everything for `duration` s once `after` sends were accepted."""

    after: int
    retry_after: int
    duration: float
    timeout: float = 60.0  # give up waiting for `after` sends (reported on stderr)


@dataclass(frozen=True)
class Progress:
    """Print a line to stderr every `every` accepted sends."""

    label: str
    total: int
    every: int = 1_000


@dataclass(frozen=True)
class ServerResult:
    sent: list[Accepted]
    stats: dict[str, int]  # ServerStats.as_dict(): rejected_429 etc.


# Runs in the child with the server; must be picklable (a module-level function or a partial of one).
Companion = Callable[[FakeTelegramServer], Awaitable[Any]]


@dataclass(frozen=True)
class CompanionResult:
    value: Any = None
    error: str | None = None  # the companion raised: its repr


class BotApiProcess:
    """``async with BotApiProcess(limits=...) as api: bot = api.create_bot(); ...; result = await api.finish()``."""

    def __init__(
        self,
        *,
        limits: RateLimits,
        burst: Burst | None = None,
        progress: Progress | None = None,
        companion: Companion | None = None,
    ) -> None:
        context = multiprocessing.get_context("spawn")  # no forked copy of the bench's loop and state
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_child_main, args=(child_conn, limits, burst, progress, companion), name="bot-api", daemon=True
        )
        self._child_conn = child_conn
        self.base_url: str | None = None

    async def __aenter__(self) -> BotApiProcess:
        self._process.start()
        self._child_conn.close()  # only the child holds its end now: EOF here if it dies
        try:
            self.base_url = await asyncio.wait_for(_recv(self._conn), STARTUP_TIMEOUT)
        except BaseException:
            self._kill()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._kill()

    def create_bot(self) -> Bot:
        """A real aiogram Bot talking HTTP to the child. The caller closes ``bot.session``."""
        if self.base_url is None:
            raise RuntimeError("server not started")
        return Bot(DEFAULT_TOKEN, session=LocalAiohttpSession(api=TelegramAPIServer.from_base(self.base_url)))

    async def companion_result(self, timeout: float | None = None) -> Any:
        """What the companion returned, once it has finished (RuntimeError if it raised)."""
        result = await asyncio.wait_for(_recv(self._conn), timeout)
        if not isinstance(result, CompanionResult):
            raise RuntimeError(f"expected the companion's result, got {type(result).__name__}")
        if result.error is not None:
            raise RuntimeError(f"the companion failed: {result.error}")
        return result.value

    async def finish(self) -> ServerResult:
        """Stop the server and return what it accepted."""
        self._conn.send("stop")
        while True:  # a companion's result nobody asked for comes first
            result = await asyncio.wait_for(_recv(self._conn), STOP_TIMEOUT)
            if isinstance(result, ServerResult):
                break
        await asyncio.to_thread(self._process.join, STOP_TIMEOUT)
        return result

    def _kill(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_TIMEOUT)
        self._conn.close()


async def _recv(conn: Connection) -> Any:
    """conn.recv() without blocking the event loop: wait for the pipe to be readable first.

    Messages are small and sent whole, so recv() returns at once once data arrived; EOFError
    if the other process died.
    """
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await readable
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


def _child_main(
    conn: Connection, limits: RateLimits, burst: Burst | None, progress: Progress | None, companion: Companion | None
) -> None:
    # Ctrl-C reaches the whole process group; the parent decides, and EOF on the pipe ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_serve(conn, limits, burst, progress, companion))
    except EOFError:
        pass  # the parent went away


async def _serve(
    conn: Connection, limits: RateLimits, burst: Burst | None, progress: Progress | None, companion: Companion | None
) -> None:
    async with FakeTelegramServer(limits=limits) as server:
        helpers = [asyncio.create_task(_fire_burst(server, burst))] if burst else []
        if progress is not None:
            helpers.append(asyncio.create_task(_report_progress(server, progress)))
        if companion is not None:
            helpers.append(asyncio.create_task(_run_companion(server, companion, conn)))
        conn.send(server.base_url)
        try:
            command = await _recv(conn)
            if command != "stop":
                raise ValueError(f"unknown command {command!r}")
        finally:
            for task in helpers:
                task.cancel()
        result = ServerResult([Accepted(r.chat_id, r.monotonic) for r in server.sent], server.stats.as_dict())
    conn.send(result)


async def _run_companion(server: FakeTelegramServer, companion: Companion, conn: Connection) -> None:
    try:
        result = CompanionResult(value=await companion(server))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
        result = CompanionResult(error=repr(exc))
    conn.send(result)


async def _fire_burst(server: FakeTelegramServer, burst: Burst) -> None:
    try:
        # wait_for re-checks after every request, so the burst starts right at the N-th send.
        await server.wait_for(
            lambda: len(server.sent) >= burst.after, timeout=burst.timeout, description=f"{burst.after} sends"
        )
    except WaitTimeout:
        print(f"  burst: fewer than {burst.after:,} sends after {burst.timeout:.0f}s; no forced 429s", file=sys.stderr)
        return
    server.force_retry_after(burst.retry_after, duration=burst.duration)


async def _report_progress(server: FakeTelegramServer, progress: Progress) -> None:
    started = time.monotonic()
    reported = 0
    while True:
        await asyncio.sleep(0.25)
        count = len(server.sent)
        if count // progress.every > reported // progress.every:
            reported = count
            elapsed = time.monotonic() - started
            print(
                f"  {progress.label}: {count:,}/{progress.total:,} sent after {elapsed:.1f}s "
                f"({count / elapsed:,.1f}/s, 429s so far: {server.stats.rejected_429})",
                file=sys.stderr,
            )
