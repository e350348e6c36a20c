"""A local alert feed, for tests, the demo and the benchmarks.

``FeedServer`` is a WebSocket server that plays frames to every client that connects, then
broadcasts whatever the test pushes. Beside it, an HTTP endpoint (``FeedPollServer``, started
with it) answers GET with a JSON array of the recent frames, as the bot's ``STREAM_POLL_URL``
expects while the WebSocket is down.

Each frame is encoded once, when it enters the server; the WebSocket sends that text and the
poll answer splices the same text into its array, so both routes carry the identical object.
A ``str`` frame is sent as is (tests use it for malformed text); in the poll answer a string
that is not valid JSON becomes a JSON string element, which a consumer must skip just the same.

The knobs tests need: ``push``/``push_many`` (broadcast now), ``drop_connections`` (abrupt,
for reconnect tests), ``refuse_websocket`` (handshakes get HTTP 503; polling still answers),
``pause``/``resume`` (total silence: nothing sent, nothing read, not even pings answered),
``received`` (what clients sent, e.g. subscription messages), and ``wait_for_*`` helpers that
wait on events rather than on the clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from standins.http_site import LocalSite

Frame = dict[str, Any]
FrameLike = Frame | str
Reply = Callable[[Any], Iterable[FrameLike] | None]

log = logging.getLogger(__name__)

DEFAULT_HISTORY = 200
DEFAULT_TIMEOUT = 10.0


def encode(frame: FrameLike) -> str:
    """The text a frame travels as: a str is sent raw, anything else as JSON."""
    return frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def poll_element(text: str) -> str:
    """The same frame as an element of the poll answer's JSON array.

    Valid JSON is spliced in verbatim (the identical object); anything else becomes a JSON
    string, so one bad frame never breaks the whole array.
    """
    try:
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # deeply nested arrays exhaust the decoder's recursion
        return json.dumps(text, ensure_ascii=False)
    return text


def _decode_message(message: str | bytes) -> Any:
    """A client's message: parsed JSON where it is JSON, else as received."""
    if isinstance(message, bytes):
        return message
    try:
        return json.loads(message)
    except ValueError:
        return message


class _Waitable:
    """Wait on a condition over the double's state, woken by each change (no clock polling)."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, predicate: Callable[[], Any], timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            async with self._changed:
                return await self._changed.wait_for(predicate)


class FeedPollServer(_Waitable):
    """HTTP GET -> JSON array of the recent frames (``source()`` gives them as JSON texts)."""

    def __init__(self, source: Callable[[], Iterable[str]], *, path: str = "/frames") -> None:
        super().__init__()
        self._source = source
        self.path = path
        self.requests = 0  # GETs answered, failures included
        self.status: int | None = None  # when set, every GET fails with this status
        self._site = LocalSite("poll server")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FeedPollServer:
        app = web.Application()
        app.router.add_get(self.path, self._handle)
        app.router.add_get("/", self._handle)
        await self._site.start(app, host, port)
        return self

    async def stop(self) -> None:
        await self._site.stop()

    @property
    def port(self) -> int:
        return self._site.port

    @property
    def url(self) -> str:
        return self._site.origin + self.path

    def fail(self, status: int | None = HTTPStatus.SERVICE_UNAVAILABLE) -> None:
        """Make every GET answer ``status`` (None: answer normally again)."""
        self.status = None if status is None else int(status)

    async def wait_for_requests(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self._wait(lambda: self.requests >= count, timeout)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        await self._notify()
        if self.status is not None:
            return web.Response(status=self.status, text="poll unavailable\n")
        body = "[" + ",".join(self._source()) + "]"
        return web.Response(text=body, content_type="application/json")

    async def __aenter__(self) -> FeedPollServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    sent: int = 0


class FeedServer(_Waitable):
    """A WebSocket alert feed with an HTTP poll endpoint beside it.

    ``frames`` are queued for every client that connects (only the first one when
    ``replay=False``), one every ``interval`` seconds (0: as fast as possible). The poll
    endpoint answers the last ``history`` frames that entered the server: ``frames`` first,
    then everything pushed. ``on_message``, if given, is called with each message a client
    sends (parsed JSON where possible) and may return frames to send to that client only, e.g.
    a subscription acknowledgement.
    """

    def __init__(
        self,
        frames: Iterable[FrameLike] = (),
        *,
        interval: float = 0.0,
        history: int = DEFAULT_HISTORY,
        replay: bool = True,
        on_message: Reply | None = None,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.replay = replay
        self.on_message = on_message
        self._playlist: list[str] = [encode(frame) for frame in frames]
        self._history: deque[str] = deque(map(poll_element, self._playlist), maxlen=history)
        self._clients: list[_Client] = []
        self._running = asyncio.Event()
        self._running.set()
        self._refusing = False
        self._server: Server | None = None
        self._host = ""
        self.port = 0
        self.poll = FeedPollServer(lambda: list(self._history))
        self.received: list[Any] = []  # what clients sent, in order (JSON parsed where it is JSON)
        self.connection_count = 0  # WebSocket connections ever accepted
        self.refused_count = 0  # handshakes refused by refuse_websocket()
        self.sent_count = 0  # frames written to clients, all clients together

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, poll_port: int = 0) -> FeedServer:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            # The double never hangs up on its own: no keepalive of its own, no handshake limit
            # (a paused server must stay silent, not time out).
            ping_interval=None,
            open_timeout=None,
            close_timeout=2,
            max_size=None,
            logger=log,
        )
        self._host = host
        self.port = self._server.sockets[0].getsockname()[1]
        await self.poll.start(host, poll_port)
        return self

    async def stop(self) -> None:
        """Close every connection (code 1001) and both servers."""
        self.resume()  # paused handshakes and senders must not hold the shutdown up
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self.port = 0
        await self.poll.stop()

    async def __aenter__(self) -> FeedServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the feed server is not started")
        return f"ws://{self._host}:{self.port}"

    @property
    def poll_url(self) -> str:
        return self.poll.url

    @property
    def clients(self) -> int:
        """WebSocket clients connected now."""
        return len(self._clients)

    # --- what the tests do -----------------------------------------------------------------

    async def push(self, frame: FrameLike) -> None:
        """Send one frame to every client connected now (and record it for polling)."""
        self._broadcast(frame)
        await asyncio.sleep(0)  # let the senders start

    async def push_many(self, frames: Iterable[FrameLike]) -> None:
        for frame in frames:
            self._broadcast(frame)
        await asyncio.sleep(0)

    async def drop_connections(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Cut every client off without a close frame (the client sees code 1006).

        Returns how many were dropped, once the server has forgotten them all.
        """
        dropped = list(self._clients)
        for client in dropped:
            client.ws.transport.abort()
        await self._wait(lambda: not any(client in self._clients for client in dropped), timeout)
        return len(dropped)

    def refuse_websocket(self, refuse: bool = True) -> None:
        """Answer new WebSocket handshakes with HTTP 503 (connected clients stay)."""
        self._refusing = refuse

    def pause(self) -> None:
        """Go silent: send nothing, read nothing (pings go unanswered), hold new handshakes."""
        self._running.clear()
        for client in self._clients:
            client.ws.transport.pause_reading()

    def resume(self) -> None:
        self._running.set()
        for client in self._clients:
            client.ws.transport.resume_reading()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def recent(self) -> list[Any]:
        """What the poll endpoint answers now, parsed."""
        return json.loads("[" + ",".join(self._history) + "]")

    async def wait_for_clients(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until at least ``count`` clients are connected (and their frames queued)."""
        await self._wait(lambda: len(self._clients) >= count, timeout)

    async def wait_for_connections(self, total: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until ``connection_count`` reaches ``total`` (for reconnect tests)."""
        await self._wait(lambda: self.connection_count >= total, timeout)

    async def wait_for_received(
        self, predicate: Callable[[Any], bool], timeout: float = DEFAULT_TIMEOUT, *, after: int = 0
    ) -> Any:
        """The first message a client sent that matches ``predicate``, from ``received[after]`` on
        (waits for one)."""

        def first_match() -> int | None:
            return next((i for i in range(after, len(self.received)) if predicate(self.received[i])), None)

        await self._wait(lambda: first_match() is not None, timeout)
        index = first_match()
        assert index is not None
        return self.received[index]

    async def wait_for_sent(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until ``sent_count`` reaches ``count`` (frames written, all clients together)."""
        await self._wait(lambda: self.sent_count >= count, timeout)

    # --- inside ----------------------------------------------------------------------------

    def _broadcast(self, frame: FrameLike) -> None:
        text = encode(frame)
        self._history.append(poll_element(text))
        for client in self._clients:
            client.outbox.put_nowait(text)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        await self._running.wait()  # paused: the handshake hangs, as on a stalled server
        if self._refusing:
            self.refused_count += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "feed unavailable\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self.connection_count += 1
        if self.replay or self.connection_count == 1:
            for text in self._playlist:
                client.outbox.put_nowait(text)
        if self.paused:  # paused between the handshake and now
            ws.transport.pause_reading()
        self._clients.append(client)
        await self._notify()
        sender = asyncio.create_task(self._send_loop(client))
        try:
            async for message in ws:
                await self._record(client, message)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            await asyncio.wait([sender])
            self._clients.remove(client)
            await self._notify()

    async def _send_loop(self, client: _Client) -> None:
        try:
            while True:
                text = await client.outbox.get()
                await self._running.wait()
                await client.ws.send(text)
                client.sent += 1
                self.sent_count += 1
                await self._notify()
                if self.interval:
                    await asyncio.sleep(self.interval)
        except ConnectionClosed:
            pass  # the handler notices too, and cleans up

    async def _record(self, client: _Client, message: str | bytes) -> None:
        decoded = _decode_message(message)
        self.received.append(decoded)
        await self._notify()
        if self.on_message is not None:
            for reply in self.on_message(decoded) or ():
                client.outbox.put_nowait(encode(reply))


class PumpPortalReplies:
    """An ``on_message`` for ``FeedServer`` that answers subscriptions as PumpPortal does.

    Creation and migration subscriptions are acknowledged. Trade subscriptions
    (``subscribeTokenTrade``/``subscribeAccountTrade``) are acknowledged when
    ``trades_allowed``, else refused with a message about the API key: PumpPortal streams
    trades only to a funded API key. The acknowledgement texts follow captured PumpPortal
    traffic; the refusal wording is an approximation (consumers should match loosely).
    """

    ACKS = {
        "subscribeNewToken": "Successfully subscribed to token creation events.",
        "subscribeMigration": "Successfully subscribed to migration events.",
        "subscribeTokenTrade": "Successfully subscribed to keys.",
        "subscribeAccountTrade": "Successfully subscribed to keys.",
    }
    REFUSAL = "To subscribe to trades you must have an API key with a funded wallet (insufficient balance)."
    TRADE_METHODS = frozenset({"subscribeTokenTrade", "subscribeAccountTrade"})

    def __init__(self, trades_allowed: bool = False) -> None:
        self.trades_allowed = trades_allowed
        self.refusals = 0  # refusal messages sent

    def __call__(self, message: Any) -> list[Frame]:
        method = message.get("method") if isinstance(message, dict) else None
        if method in self.TRADE_METHODS and not self.trades_allowed:
            self.refusals += 1
            return [{"message": self.REFUSAL}]
        if method in self.ACKS:
            return [{"message": self.ACKS[method]}]
        return []
