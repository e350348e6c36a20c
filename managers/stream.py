"""One real-time feed over a WebSocket, kept alive, with an HTTP poll fallback.

`StreamManager` turns text frames into events with a parser (`domain.feed_adapters`) and awaits
the sink (the bounded queue's put, so a full queue holds the reader back). It reconnects with
backoff, re-sends subscriptions on every connect, drops repeats and polls while the WebSocket is
down. Details: docs/architecture.md, "Streams".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from domain.events import Event
from domain.feed_adapters import FrameError, Parser, PumpPortalNotice
from managers.urls import redact_url

log = logging.getLogger("alertbot.stream")

Sink = Callable[[Event], Awaitable[None]]
Message = dict[str, Any]

MAX_KEYS_PER_MESSAGE = 5_000
# A poll answer repeats the feed's recent frames: a few hundred of them fit in well under this.
MAX_POLL_BYTES = 8 * 2**20
TRADE_METHODS = frozenset({"subscribeTokenTrade", "subscribeAccountTrade"})


# --- subscriptions -----------------------------------------------------------------------------


class SubscriptionSet:
    """What the stream has asked the server for, to be asked again after every reconnect.

    Keyless methods (`subscribeNewToken`, `subscribeMigration`) are kept as a set; keyed ones
    (`subscribeTokenTrade`, `subscribeAccountTrade`) keep their keys in insertion order. Once
    trades are refused, trade methods are dropped and never sent again.
    """

    def __init__(self, max_keys_per_message: int = MAX_KEYS_PER_MESSAGE) -> None:
        if max_keys_per_message < 1:
            raise ValueError("max_keys_per_message must be at least 1")
        self.max_keys_per_message = max_keys_per_message
        self._keyless: dict[str, None] = {}
        self._keyed: dict[str, dict[str, None]] = {}
        self.trades_refused = False

    def add(self, method: str, keys: Iterable[str] | None = None) -> list[Message]:
        """Remember a subscription; returns the messages that ask for what is new."""
        if self._blocked(method):
            return []
        if keys is None:
            if method in self._keyless:
                return []
            self._keyless[method] = None
            return [{"method": method}]
        known = self._keyed.setdefault(method, {})
        fresh = [key for key in dict.fromkeys(keys) if key not in known]
        known.update(dict.fromkeys(fresh))
        return self._chunked(method, fresh)

    def remove(self, method: str, keys: Iterable[str] | None = None) -> list[Message]:
        """Forget a subscription (or some of its keys); returns the unsubscribe messages."""
        undo = "un" + method[0].lower() + method[1:] if method.startswith("subscribe") else method
        if keys is None:
            dropped = list(self._keyed.pop(method, {}))
            if self._keyless.pop(method, 0) is None:
                return [{"method": undo}]
            return self._chunked(undo, dropped)
        known = self._keyed.get(method, {})
        gone = [key for key in dict.fromkeys(keys) if key in known]
        for key in gone:
            del known[key]
        if not known:
            self._keyed.pop(method, None)
        return self._chunked(undo, gone)

    def refuse_trades(self) -> None:
        """The server will not stream trades to us: stop asking, for good."""
        self.trades_refused = True
        for method in TRADE_METHODS:
            self._keyed.pop(method, None)
            self._keyless.pop(method, None)

    def messages(self) -> list[Message]:
        """Every subscription as messages, for a fresh connection."""
        out: list[Message] = [{"method": method} for method in self._keyless]
        for method, keys in self._keyed.items():
            out += self._chunked(method, list(keys))
        return out

    def keys(self, method: str) -> list[str]:
        return list(self._keyed.get(method, {}))

    def __len__(self) -> int:
        return len(self._keyless) + sum(len(keys) for keys in self._keyed.values())

    def _blocked(self, method: str) -> bool:
        return self.trades_refused and method in TRADE_METHODS

    def _chunked(self, method: str, keys: list[str]) -> list[Message]:
        size = self.max_keys_per_message
        return [{"method": method, "keys": keys[i : i + size]} for i in range(0, len(keys), size)]


# --- de-duplication ----------------------------------------------------------------------------


class RecentKeys:
    """Keys seen within the last `ttl` seconds, at most `max_keys` of them (oldest go first).

    Seeing a key again refreshes it, so a server that replays the same frames on every
    reconnect keeps them recognised for as long as it keeps replaying them.
    """

    def __init__(self, max_keys: int = 50_000, ttl: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.ttl = ttl
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check_and_add(self, key: str) -> bool:
        """True when `key` is a repeat; either way it counts as seen now."""
        now = self._clock()
        self._evict(now)
        repeat = key in self._seen
        self._seen[key] = now
        self._seen.move_to_end(key)
        if len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return repeat

    def __len__(self) -> int:
        return len(self._seen)

    def _evict(self, now: float) -> None:
        horizon = now - self.ttl
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if seen_at >= horizon:
                break
            del self._seen[oldest]


class _LogLimiter:
    """At most one log line per `interval` per reason; the lines say how many were held back."""

    def __init__(self, interval: float = 1.0, max_reasons: int = 1_000) -> None:
        self.interval = interval
        self.max_reasons = max_reasons
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, level: int, reason: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._held[reason] = self._held.get(reason, 0) + 1
            return
        if len(self._last) >= self.max_reasons:
            self._last.clear()  # bounded; at worst one extra line per reason
            self._held.clear()
        self._last[reason] = now
        held = self._held.pop(reason, 0)
        suffix = f" (+{held} more like it)" if held else ""
        log.log(level, message + suffix, *args)


# --- the manager -------------------------------------------------------------------------------


@dataclass
class StreamStats:
    frames: int = 0  # frames read, WebSocket and poll together
    events: int = 0  # events handed to the sink
    malformed: int = 0  # frames the parser rejected (FrameError)
    duplicates: int = 0  # events already delivered within the dedup window
    ignored: int = 0  # frames that parse to nothing (unknown types)
    notices: int = 0  # PumpPortal control messages
    sink_errors: int = 0  # exceptions raised by the sink
    connects: int = 0  # WebSocket connections opened
    reconnects: int = 0  # ... of which after the first
    connect_failures: int = 0  # attempts that failed (refused, timed out, unreachable)
    silence_timeouts: int = 0  # connections dropped by the silence watchdog
    polls: int = 0  # poll requests answered with a usable array
    poll_errors: int = 0  # poll requests that failed (answers over max_poll_bytes included)
    poll_frames: int = 0  # frames read from poll answers (new ones only)
    gap_polls: int = 0  # polls made right after a reconnect, for the frames missed in between

    def numbers(self) -> dict[str, float]:
        """Every counter by name, for /metrics."""
        return {name: float(value) for name, value in asdict(self).items()}


class StreamManager:
    """Read one feed, deliver its events to `sink` once each; see the module docstring."""

    def __init__(
        self,
        url: str,
        parse: Parser,
        sink: Sink,
        *,
        poll_url: str | None = None,
        subscriptions: SubscriptionSet | None = None,
        name: str = "stream",
        backoff_base: float = 1.0,
        backoff_factor: float = 2.0,
        backoff_max: float = 60.0,
        backoff_jitter: float = 0.25,
        min_connect_interval: float = 10.0,
        open_timeout: float = 10.0,
        close_timeout: float = 5.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        silence_timeout: float | None = 60.0,
        poll_after: float = 15.0,
        poll_interval: float = 2.0,
        poll_timeout: float = 10.0,
        max_frame_bytes: int = 4 * 2**20,
        max_poll_bytes: int = MAX_POLL_BYTES,
        dedup_keys: int = 50_000,
        dedup_ttl: float = 600.0,
    ) -> None:
        self.url = url
        self.poll_url = poll_url
        self.name = name
        self.subscriptions = subscriptions if subscriptions is not None else SubscriptionSet()
        self.backoff_base = backoff_base
        self.backoff_factor = backoff_factor
        self.backoff_max = backoff_max
        self.backoff_jitter = backoff_jitter
        self.min_connect_interval = min_connect_interval
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.silence_timeout = silence_timeout
        self.poll_after = poll_after
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self.max_frame_bytes = max_frame_bytes
        self.max_poll_bytes = max_poll_bytes
        self.stats = StreamStats()
        self.last_error: str | None = None
        self._parse = parse
        self._sink = sink
        self._recent = RecentKeys(dedup_keys, dedup_ttl)
        self._polled = RecentKeys(dedup_keys, dedup_ttl)  # raw poll elements already read
        self._log_limited = _LogLimiter()
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._running = False
        self._failures = 0  # consecutive attempts that led nowhere, for the backoff
        self._fatal = False  # an error no retry can fix (a malformed URL)
        self._last_attempt: float | None = None
        self._down_since = time.monotonic()
        self._last_frame: float | None = None
        self._polling = False
        self._last_poll_ok = False
        self._gap = False  # a connection was lost: frames sent meanwhile are still to be read
        self._changed = asyncio.Event()  # set and replaced on every change (see wait_for)
        self._link_changed = asyncio.Event()  # ... on connection changes only

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading in the background (idempotent)."""
        if self._running:
            return
        self._running = True
        self._fatal = False
        self._down_since = time.monotonic()
        self._runner = asyncio.create_task(self._run(), name=f"{self.name}-ws")
        if self.poll_url:
            self._poller = asyncio.create_task(self._poll_supervisor(), name=f"{self.name}-poll")
        log.info("%s: starting on %s", self.name, redact_url(self.url))

    async def stop(self) -> None:
        """Close the socket, stop polling, wait for both tasks to end."""
        if not self._running:
            return
        self._running = False
        tasks = [task for task in (self._runner, self._poller) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = self._poller = None
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._polling = False
        self._notify(link=True)
        log.info("%s: stopped", self.name)

    async def __aenter__(self) -> StreamManager:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def polling(self) -> bool:
        return self._polling

    @property
    def trades_refused(self) -> bool:
        return self.subscriptions.trades_refused

    def health(self) -> dict[str, Any]:
        """For /health and /admin: status is ok (WebSocket up), degraded (serving from polls),
        down (neither) or off (not running)."""
        age = None if self._last_frame is None else round(time.monotonic() - self._last_frame, 3)
        return {
            "status": self._status(),
            "name": self.name,
            "url": redact_url(self.url),
            "connected": self.connected,
            "last_frame_age_s": age,
            "reconnects": self.stats.reconnects,
            "polling": self._polling,
            "trades_refused": self.trades_refused,
            "subscriptions": len(self.subscriptions),
            "last_error": self.last_error,
            **asdict(self.stats),
        }

    def _status(self) -> str:
        if not self._running:
            return "off"
        if self.connected:
            return "ok"
        if self._polling and self._last_poll_ok:
            return "degraded"
        return "down"

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Until `predicate()` holds, re-checked after every frame and state change."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if predicate():
                    return
                await changed.wait()

    def _notify(self, link: bool = False) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        if link:
            self._link_changed.set()
            self._link_changed = asyncio.Event()

    # --- subscriptions -----------------------------------------------------------------------

    async def subscribe(self, method: str, keys: Iterable[str] | None = None) -> bool:
        """Add a subscription (sent now if connected, and after every reconnect).

        False when nothing new was asked for (already there, or trades refused)."""
        messages = self.subscriptions.add(method, keys)
        await self._send_all(messages)
        return bool(messages)

    async def unsubscribe(self, method: str, keys: Iterable[str] | None = None) -> None:
        await self._send_all(self.subscriptions.remove(method, keys))

    async def _send_all(self, messages: list[Message]) -> None:
        ws = self._ws
        if ws is None:
            return  # sent on the next connection
        try:
            for message in messages:
                await ws.send(json.dumps(message))
        except ConnectionClosed:
            pass  # the reader sees it too, and the next connection sends everything

    # --- the WebSocket loop ------------------------------------------------------------------

    async def _run(self) -> None:
        while self._running:
            await asyncio.sleep(self._connect_delay())
            ws = await self._open()
            if ws is not None:
                await self._serve(ws)
            elif self._fatal:
                return  # retrying cannot help; health shows last_error

    def _connect_delay(self) -> float:
        """Backoff after a disconnect, never sooner than min_connect_interval after the last try."""
        if self._last_attempt is None:
            return 0.0
        backoff = min(self.backoff_max, self.backoff_base * self.backoff_factor**self._failures)
        backoff *= 1.0 - random.uniform(0.0, self.backoff_jitter)
        spacing = self._last_attempt + self.min_connect_interval - time.monotonic()
        return max(backoff, spacing, 0.0)

    async def _open(self) -> ClientConnection | None:
        self._last_attempt = time.monotonic()
        try:
            return await connect(
                self.url,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                max_size=self.max_frame_bytes,
            )
        except InvalidURI:
            self._fatal = True
            self._fail("invalid url", logging.ERROR)
        except InvalidStatus as exc:
            self._fail(f"handshake refused: HTTP {exc.response.status_code}")
        except (OSError, TimeoutError) as exc:
            self._fail(f"cannot connect: {type(exc).__name__}")
        except Exception as exc:  # any other handshake failure: retry with backoff
            self._fail(f"cannot connect: {type(exc).__name__}: {exc}")
        return None

    def _fail(self, error: str, level: int = logging.WARNING) -> None:
        self.stats.connect_failures += 1
        self._failures += 1
        self.last_error = error
        self._log_limited(level, "connect:" + error, "%s: %s (%s)", self.name, error, redact_url(self.url))
        self._notify()

    async def _serve(self, ws: ClientConnection) -> None:
        self._on_connected(ws)
        got_frames = False
        try:
            await self._send_all(self.subscriptions.messages())
            while True:
                message = await self._receive(ws)
                if message is None:
                    break  # silence: reconnect
                got_frames = True
                await self._handle(message, time.time())
        except ConnectionClosed as exc:
            self.last_error = f"connection closed: code {exc.rcvd.code if exc.rcvd else 1006}"
            log.warning("%s: %s", self.name, self.last_error)
        except Exception as exc:  # a bug here must not end the stream: reconnect instead
            self.last_error = f"reader failed: {type(exc).__name__}"
            log.exception("%s: %s", self.name, self.last_error)
        finally:
            # A connection that brought frames resets the backoff; one that brought none counts
            # as a failure, so a server that accepts and hangs up at once is not hammered.
            self._failures = 0 if got_frames else self._failures + 1
            self._ws = None
            self._down_since = time.monotonic()
            self._gap = True
            self._notify(link=True)
            await ws.close()

    def _on_connected(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self.last_error = None
        log.info("%s: connected to %s (connection %d)", self.name, redact_url(self.url), self.stats.connects)
        self._notify(link=True)

    async def _receive(self, ws: ClientConnection) -> str | bytes | None:
        """The next frame, or None after `silence_timeout` without one."""
        try:
            async with asyncio.timeout(self.silence_timeout):
                return await ws.recv()
        except TimeoutError:
            self.stats.silence_timeouts += 1
            self.last_error = f"no frame for {self.silence_timeout}s"
            log.warning("%s: %s, reconnecting", self.name, self.last_error)
            return None

    # --- frames --------------------------------------------------------------------------------

    async def _handle(self, text: str | bytes, received_at: float) -> None:
        """Parse one frame and deliver its event once; nothing here may stop the stream."""
        self.stats.frames += 1
        self._last_frame = time.monotonic()
        try:
            result = self._parse(text if isinstance(text, str) else _decode(text), received_at)
        except FrameError as exc:
            self._malformed(exc.reason)
        except Exception as exc:  # a parser bug must not kill the stream either
            self._malformed(f"parser error: {type(exc).__name__}")
        else:
            if isinstance(result, PumpPortalNotice):
                self._on_notice(result)
            elif result is None:
                self.stats.ignored += 1
            else:
                await self._deliver(result)
        self._notify()

    async def _deliver(self, event: Event) -> None:
        if self._recent.check_and_add(event.key):
            self.stats.duplicates += 1
            return
        try:
            await self._sink(event)
        except Exception as exc:
            self.stats.sink_errors += 1
            self._log_limited(
                logging.ERROR, "sink:" + type(exc).__name__, "%s: sink failed on %s: %r", self.name, event.kind, exc
            )
        else:
            self.stats.events += 1

    def _malformed(self, reason: str) -> None:
        self.stats.malformed += 1
        self._log_limited(logging.WARNING, "frame:" + reason, "%s: skipped a malformed frame: %s", self.name, reason)

    def _on_notice(self, notice: PumpPortalNotice) -> None:
        self.stats.notices += 1
        if notice.kind == "refused" and not self.subscriptions.trades_refused:
            # Final: PumpPortal will not stream trades without a funded key. Stop asking (also
            # after reconnects) but keep this connection: creations and migrations still flow.
            self.subscriptions.refuse_trades()
            log.warning("%s: trade subscriptions refused, dropped for good: %s", self.name, notice.text)
        else:
            self._log_limited(logging.INFO, "notice:" + notice.kind, "%s: server says: %s", self.name, notice.text)

    # --- the poll fallback -------------------------------------------------------------------

    async def _poll_supervisor(self) -> None:
        """Poll while the WebSocket has been down for poll_after seconds, until it is back."""
        next_poll = 0.0
        try:
            while True:
                changed = self._link_changed
                wait = self._poll_wait(next_poll)
                if wait is None:  # the WebSocket is up
                    self._set_polling(False)
                    if self._gap:
                        # A short drop never reaches poll_after, yet the feed went on without us:
                        # one poll reads what was sent while we were away.
                        self._gap = False
                        await self._poll_guarded()
                        self.stats.gap_polls += 1
                        self._notify()
                        continue
                if wait is None or wait > 0:
                    await self._until(changed, wait)
                    continue
                self._set_polling(True)
                await self._poll_guarded()
                next_poll = time.monotonic() + self.poll_interval
        finally:
            self._polling = False

    async def _poll_guarded(self) -> None:
        try:
            await self._poll_once()
        except Exception:  # a bug must not end the fallback; try again next time
            log.exception("%s: poll failed unexpectedly", self.name)

    def _poll_wait(self, next_poll: float) -> float | None:
        """None while connected; else seconds until the next poll is due (<= 0: now)."""
        if self.connected:
            return None
        return max(self._down_since + self.poll_after, next_poll) - time.monotonic()

    @staticmethod
    async def _until(event: asyncio.Event, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    def _set_polling(self, polling: bool) -> None:
        if polling != self._polling:
            self._polling = polling
            log.info(
                "%s: %s polling %s", self.name, "started" if polling else "stopped", redact_url(self.poll_url or "")
            )
            self._notify()

    async def _poll_once(self) -> None:
        assert self.poll_url is not None
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.poll_timeout))
        try:
            async with self._http.get(self.poll_url) as response:
                if response.status != 200:
                    raise _PollError(f"HTTP {response.status}")
                body = await self._read_capped(response)
        except (aiohttp.ClientError, TimeoutError, _PollError) as exc:
            self._poll_failed(str(exc) or type(exc).__name__)
            return
        try:
            frames = json.loads(body)
        except (ValueError, RecursionError):
            self._poll_failed("answer is not JSON")
            return
        if not isinstance(frames, list):
            self._poll_failed("answer is not a JSON array")
            return
        self.stats.polls += 1
        self._last_poll_ok = True
        received_at = time.time()
        for element in frames:
            text = element if isinstance(element, str) else json.dumps(element, ensure_ascii=False)
            # Each answer repeats the recent frames: read each one once (malformed ones too,
            # so they are counted once); event keys de-duplicate against the WebSocket.
            if self._polled.check_and_add(hashlib.blake2b(text.encode(), digest_size=16).hexdigest()):
                continue
            self.stats.poll_frames += 1
            await self._handle(text, received_at)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        """The answer's body, or _PollError as soon as it is known to exceed max_poll_bytes.

        A declared length over the cap fails before reading; an undeclared one is read in chunks
        and abandoned at the first byte past it (the connection is closed, not drained).
        """
        limit = self.max_poll_bytes
        too_big = f"answer over {limit} bytes"
        if response.content_length is not None and response.content_length > limit:
            response.close()
            raise _PollError(too_big)
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                response.close()
                raise _PollError(too_big)
        return bytes(body)

    def _poll_failed(self, error: str) -> None:
        self.stats.poll_errors += 1
        self._last_poll_ok = False
        self._log_limited(logging.WARNING, "poll:" + error, "%s: poll failed: %s", self.name, error)
        self._notify()


class _PollError(Exception):
    pass


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("binary frame is not UTF-8") from None
