"""StreamManager against the real feed double over localhost (no patching of our code).

Timing knobs are small so the tests are quick, but no test needs the machine to be fast: every
wait is on a condition with a generous timeout, and the few clock-based checks only get easier
to pass on a slow machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from domain.events import CreateEvent, Event, MigrateEvent, PriceEvent
from domain.feed_adapters import parse_alert_frame, pumpportal_parser
from managers.stream import RecentKeys, StreamManager, SubscriptionSet
from managers.urls import redact_url
from standins import feedgen
from standins.feed_server import FeedServer, PumpPortalReplies
from tests.test_feed_adapters import (
    BONK_MINT,
    MINT,
    pp_bonk_create,
    pp_create,
    pp_migrate,
    pp_trade,
)

TIMEOUT = 10.0  # generous: only a broken stream waits this long
SOL_USD = 150.0
FAST: dict[str, Any] = {
    "backoff_base": 0.01,
    "backoff_max": 0.1,
    "min_connect_interval": 0.01,
    "open_timeout": 5.0,
    "close_timeout": 0.5,
    "silence_timeout": 30.0,
    "poll_after": 0.2,
    "poll_interval": 0.05,
}


class Sink:
    """Records what the stream delivers; can be told to fail."""

    def __init__(self, fail_every: int = 0) -> None:
        self.events: list[Event] = []
        self.calls = 0
        self.fail_every = fail_every

    async def __call__(self, event: Event) -> None:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("sink is broken")
        self.events.append(event)

    @property
    def keys(self) -> list[str]:
        return [event.key for event in self.events]


def events_of(frames: list[Any]) -> list[Event]:
    """What the sink should receive for these frames: the events of the valid ones, in order."""
    out = []
    for frame in frames:
        try:
            event = parse_alert_frame(json.dumps(frame) if isinstance(frame, dict) else frame)
        except ValueError:
            continue
        if event is not None:
            out.append(event)
    return out


def methods(received: list[Any], method: str) -> list[dict[str, Any]]:
    return [m for m in received if isinstance(m, dict) and m.get("method") == method]


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """For conditions on the server's side, which the stream is not notified of."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    return feedgen.load_sample()


# --- the happy path ----------------------------------------------------------------------------


async def test_the_whole_sample_reaches_the_sink_once_in_order(sample):
    sink = Sink()
    async with FeedServer(sample) as feed, StreamManager(feed.url, parse_alert_frame, sink, **FAST) as stream:
        await stream.wait_for(lambda: stream.stats.frames >= len(sample), TIMEOUT)
        health = stream.health()
    assert sink.events == events_of(sample)
    assert all(event.received_at > 0 for event in sink.events)
    assert health["status"] == "ok" and health["connected"] is True
    assert health["frames"] == len(sample) and health["events"] == len(sink.events)
    assert health["ignored"] == sum(f["type"] not in feedgen.KNOWN_TYPES for f in sample)
    assert health["malformed"] == 0 and health["duplicates"] == 0 and health["reconnects"] == 0
    assert isinstance(health["last_frame_age_s"], float)


def malformed_frames(rng: random.Random, count: int) -> list[str]:
    """Bad JSON, non-objects, missing fields, wrong types, huge strings, binary-ish junk."""
    call = {
        "type": "call",
        "token": {"address": "A" * 44, "symbol": "X"},
        "channel": {"id": "-100"},
        "called_at": "2026-11-20T10:00:00Z",
    }
    price = {"type": "price", "address": "A" * 44, "price_usd": 1e-5, "ts": "2026-11-20T10:00:00Z"}

    def without(frame: dict[str, Any], *path: str) -> str:
        copy = json.loads(json.dumps(frame))
        target = copy
        for key in path[:-1]:
            target = target[key]
        target.pop(path[-1])
        return json.dumps(copy)

    makers: list[Callable[[], str]] = [
        lambda: json.dumps(call)[: rng.randint(1, 60)],  # truncated
        lambda: "{not json " + str(rng.random()),
        lambda: rng.choice(["null", "[]", "[1,2]", "42", '"call"', "true", ""]),
        lambda: without(call, "token", "address"),
        lambda: without(call, "channel", "id"),
        lambda: without(call, "called_at"),
        lambda: without(call, "token"),
        lambda: without(price, "price_usd"),
        lambda: without(price, "ts"),
        lambda: json.dumps({**price, "price_usd": rng.choice(["cheap", -1, None, [1], {"usd": 1}])}),
        lambda: json.dumps({**call, "called_at": rng.choice(["yesterday", 10**30, True, "2026-13-45"])}),
        lambda: json.dumps({**call, "token": {"address": rng.choice([42, "", " ", ["x"]])}}),
        lambda: json.dumps({"type": rng.choice([1, None, ["call"], {"t": "call"}])}),
        lambda: json.dumps({"type": "channel", "name": "no id"}),
        lambda: "x" * rng.randint(50_000, 200_000),  # huge, and not JSON
        lambda: "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(1, 300))),  # junk
        lambda: "\x00\xff\xfe" + "\ufffd" * rng.randint(1, 50),
    ]
    return [makers[i % len(makers)]() for i in range(count)]


async def test_a_thousand_malformed_frames_are_counted_and_skipped_and_the_stream_goes_on(sample, caplog):
    rng = random.Random(1000)
    bad = malformed_frames(rng, 1000)
    mixed: list[Any] = list(sample)
    for text in bad:
        mixed.insert(rng.randint(0, len(mixed)), text)
    sink = Sink()
    caplog.set_level(logging.WARNING, logger="alertbot.stream")
    started = time.monotonic()
    async with FeedServer(mixed) as feed, StreamManager(feed.url, parse_alert_frame, sink, **FAST) as stream:
        await stream.wait_for(lambda: stream.stats.frames >= len(mixed), TIMEOUT)
        elapsed = time.monotonic() - started
        assert stream.stats.malformed == 1000
        assert sink.events == events_of(sample)
        # ... and it keeps going, on the same connection
        extra = {"type": "price", "address": "Z" * 44, "price_usd": 2.0, "ts": "2026-11-21T00:00:00Z"}
        await feed.push(extra)
        await stream.wait_for(lambda: len(sink.events) == len(events_of(sample)) + 1, TIMEOUT)
        assert feed.connection_count == 1 and stream.stats.reconnects == 0
    lines = [r for r in caplog.records if r.name == "alertbot.stream" and "malformed" in r.getMessage()]
    reasons = {r.getMessage().split(": ", 2)[-1].split(" (+")[0] for r in lines}
    # At most one line per second per reason: 1,000 bad frames do not make 1,000 lines.
    assert 0 < len(lines) <= len(reasons) * (elapsed + 2)
    assert len(lines) < 1000


async def test_calls_from_bad_channel_ids_are_skipped_with_a_reason_and_the_good_ones_around_go_through(
    sample: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    good = [frame for frame in sample if frame["type"] == "call"][:12]
    bad_ids = ["-100123=4567", "-1001,-1002", "-100123\n4567", "z" * 1024]
    frames: list[Any] = []
    for i, bad_id in enumerate(bad_ids):
        frames += [good[2 * i], {**good[2 * i + 1], "channel": {**good[2 * i + 1]["channel"], "id": bad_id}}]
    frames += good[len(frames) :]
    sink = Sink()
    caplog.set_level(logging.WARNING, logger="alertbot.stream")
    async with FeedServer(frames) as feed, StreamManager(feed.url, parse_alert_frame, sink, **FAST) as stream:
        await stream.wait_for(lambda: stream.stats.frames >= len(frames), TIMEOUT)
        assert stream.stats.malformed == len(bad_ids)
        assert [e.key for e in sink.events] == [e.key for e in events_of(good[0::2][:4] + good[8:])]
        assert all(event.channel.id.lstrip("-").isdigit() for event in sink.events)  # type: ignore[union-attr]
        assert stream.connected and feed.connection_count == 1
    skipped = [r.getMessage() for r in caplog.records if "skipped a malformed frame" in r.getMessage()]
    assert skipped and all(line.endswith("invalid channel.id") or "invalid channel.id (+" in line for line in skipped)
    assert all(len(line) < 200 for line in skipped)  # the reason, never the frame


async def test_sink_failures_are_counted_and_never_stop_the_loop(sample):
    frames = sample[:100]
    sink = Sink(fail_every=3)
    async with FeedServer(frames) as feed, StreamManager(feed.url, parse_alert_frame, sink, **FAST) as stream:
        await stream.wait_for(lambda: stream.stats.frames >= len(frames), TIMEOUT)
        expected = len(events_of(frames))
        assert stream.stats.sink_errors == expected // 3
        assert len(sink.events) == expected - expected // 3
        assert stream.stats.events == len(sink.events)
        assert stream.connected


async def test_a_full_queue_makes_the_reader_wait_and_nothing_is_lost(sample):
    frames = sample[:300]
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=5)
    expected = events_of(frames)
    async with FeedServer(frames) as feed, StreamManager(feed.url, parse_alert_frame, queue.put, **FAST):
        got = []
        async with asyncio.timeout(TIMEOUT):
            while len(got) < len(expected):
                got.append(await queue.get())
                if len(got) % 50 == 0:
                    await asyncio.sleep(0.01)  # a slow consumer now and then
    assert got == expected


# --- reconnects, subscriptions, duplicates ------------------------------------------------------


async def test_a_dropped_connection_reconnects_resubscribes_and_drops_replayed_events(sample):
    frames = sample[:80]
    expected = events_of(frames)
    subscriptions = SubscriptionSet()
    subscriptions.add("subscribeNewToken")
    subscriptions.add("subscribeTokenTrade", ["mintA", "mintB"])
    sink = Sink()
    async with FeedServer(frames) as feed:
        stream = StreamManager(feed.url, parse_alert_frame, sink, subscriptions=subscriptions, **FAST)
        async with stream:
            await stream.wait_for(lambda: stream.stats.frames >= len(frames), TIMEOUT)
            assert await feed.drop_connections() == 1
            await feed.wait_for_connections(2)
            # the server replays everything to the new connection
            await stream.wait_for(lambda: stream.stats.frames >= 2 * len(frames), TIMEOUT)
            await eventually(lambda: len(methods(feed.received, "subscribeTokenTrade")) >= 2)
            new = {"type": "price", "address": "N" * 44, "price_usd": 3.0, "ts": "2026-11-21T00:00:00Z"}
            await feed.push(new)
            await stream.wait_for(lambda: len(sink.events) > len(expected), TIMEOUT)
            assert stream.stats.reconnects == 1 and stream.connected
    assert methods(feed.received, "subscribeNewToken") == [{"method": "subscribeNewToken"}] * 2
    assert (
        methods(feed.received, "subscribeTokenTrade")
        == [{"method": "subscribeTokenTrade", "keys": ["mintA", "mintB"]}] * 2
    )
    assert sink.events == expected + events_of([new])
    assert len(set(sink.keys)) == len(sink.keys)
    assert stream.stats.duplicates == len(expected)


async def test_silence_makes_the_stream_reconnect():
    heartbeats = [{"type": "heartbeat", "n": n} for n in range(20_000)]
    sink = Sink()
    async with FeedServer(heartbeats, interval=0.01) as feed:
        # No pings: the watchdog alone must notice a server that went quiet.
        stream = StreamManager(
            feed.url, parse_alert_frame, sink, **{**FAST, "silence_timeout": 0.5}, ping_interval=None
        )
        async with stream:
            await stream.wait_for(lambda: stream.stats.frames >= 5, TIMEOUT)
            feed.pause()
            await stream.wait_for(lambda: stream.stats.silence_timeouts >= 1, TIMEOUT)
            assert not stream.connected
            feed.resume()
            await feed.wait_for_connections(2)
            await stream.wait_for(lambda: stream.connected and stream.stats.reconnects >= 1, TIMEOUT)
            count = stream.stats.frames
            await stream.wait_for(lambda: stream.stats.frames > count, TIMEOUT)  # flowing again


async def test_polls_while_the_websocket_is_down_and_stops_when_it_is_back(sample):
    first, while_down, after = sample[:40], sample[40:70], sample[70:100]
    sink = Sink()
    async with FeedServer(first) as feed:
        stream = StreamManager(feed.url, parse_alert_frame, sink, poll_url=feed.poll_url, **FAST)
        async with stream:
            await stream.wait_for(lambda: stream.stats.frames >= len(first), TIMEOUT)
            assert not stream.polling and feed.poll.requests == 0
            feed.refuse_websocket(True)
            await feed.drop_connections()
            await stream.wait_for(lambda: stream.polling and stream.stats.polls >= 1, TIMEOUT)
            assert stream.health()["status"] == "degraded"
            assert feed.refused_count >= 1  # it kept trying the WebSocket meanwhile
            # The first answer repeats what the WebSocket already delivered: all duplicates.
            assert len(sink.events) == len(events_of(first))
            await feed.push_many(while_down)
            await stream.wait_for(lambda: len(sink.events) >= len(events_of(first + while_down)), TIMEOUT)
            feed.refuse_websocket(False)
            await stream.wait_for(lambda: stream.connected and not stream.polling, TIMEOUT)
            await stream.wait_for(lambda: stream.stats.gap_polls == 1, TIMEOUT)  # once, for the seam
            requests = feed.poll.requests
            # the WebSocket replays `first` again: duplicates at this seam too
            await stream.wait_for(lambda: stream.stats.frames >= 2 * len(first) + len(while_down), TIMEOUT)
            await feed.push_many(after)
            await stream.wait_for(lambda: len(sink.events) >= len(events_of(first + while_down + after)), TIMEOUT)
            assert feed.poll.requests == requests  # polling stopped
            assert stream.health()["status"] == "ok"
    assert sink.events == events_of(first + while_down + after)
    assert len(set(sink.keys)) == len(sink.keys)
    assert stream.stats.duplicates >= 2 * len(events_of(first))


async def test_frames_sent_during_a_drop_too_short_to_poll_are_read_after_the_reconnect(sample):
    before, during, after = sample[:20], sample[20:40], sample[40:60]
    sink = Sink()
    async with FeedServer(before) as feed:
        # Polling proper would start only after a minute down: the drop is far shorter.
        stream = StreamManager(
            feed.url, parse_alert_frame, sink, poll_url=feed.poll_url, **{**FAST, "poll_after": 60.0}
        )
        async with stream:
            await stream.wait_for(lambda: len(sink.events) >= len(events_of(before)), TIMEOUT)
            feed.refuse_websocket(True)
            await feed.drop_connections()
            await stream.wait_for(lambda: not stream.connected, TIMEOUT)
            await feed.push_many(during)  # nobody is connected to receive these live
            feed.refuse_websocket(False)
            await stream.wait_for(lambda: stream.stats.gap_polls == 1, TIMEOUT)
            await feed.push_many(after)
            await stream.wait_for(lambda: len(sink.events) >= len(events_of(before + during + after)), TIMEOUT)
            assert not stream.polling and stream.stats.reconnects == 1
    assert sorted(sink.keys) == sorted(event.key for event in events_of(before + during + after))
    assert len(set(sink.keys)) == len(sink.keys)


async def test_malformed_frames_in_poll_answers_are_counted_once(sample):
    frames: list[Any] = [*sample[:10], "{broken", *sample[10:20]]
    sink = Sink()
    async with FeedServer(frames) as feed:
        feed.refuse_websocket(True)
        stream = StreamManager(feed.url, parse_alert_frame, sink, poll_url=feed.poll_url, **FAST)
        async with stream:
            await stream.wait_for(lambda: stream.stats.polls >= 3, TIMEOUT)
            assert stream.stats.malformed == 1
            assert sink.events == events_of(frames)
            assert not stream.connected and stream.stats.connect_failures >= 1


async def test_a_failing_poll_endpoint_is_counted_and_retried(sample):
    sink = Sink()
    async with FeedServer(sample[:10]) as feed:
        feed.refuse_websocket(True)
        feed.poll.fail(500)
        stream = StreamManager(feed.url, parse_alert_frame, sink, poll_url=feed.poll_url, **FAST)
        async with stream:
            await stream.wait_for(lambda: stream.stats.poll_errors >= 2, TIMEOUT)
            assert stream.health()["status"] == "down"
            feed.poll.fail(None)
            await stream.wait_for(lambda: len(sink.events) == len(events_of(sample[:10])), TIMEOUT)
            assert stream.health()["status"] == "degraded"


class HugePollAnswer:
    """An HTTP endpoint answering a valid JSON array of `total` bytes, streamed in 64 KiB chunks,
    with or without a Content-Length; it records how many bytes each answer got out before the
    client hung up."""

    def __init__(self, total: int, declare_length: bool) -> None:
        self.total = total
        self.declare_length = declare_length
        self.sent: list[int] = []  # bytes written, one entry per finished answer
        self._runner: web.AppRunner | None = None
        self.url = ""

    ELEMENT = json.dumps({"type": "heartbeat", "pad": "x" * 1000}).encode()

    def _count(self) -> int:
        return (self.total - 2) // (len(self.ELEMENT) + 1)

    def _chunks(self) -> Iterator[bytes]:
        count = self._count()
        buffer = bytearray(b"[")
        for i in range(count):
            buffer += self.ELEMENT + (b"," if i < count - 1 else b"]")
            if len(buffer) >= 64 * 1024:
                yield bytes(buffer)
                buffer.clear()
        if buffer:
            yield bytes(buffer)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        chunks = self._chunks()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if self.declare_length:
            response.content_length = 1 + self._count() * (len(self.ELEMENT) + 1)
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        written = 0
        try:
            for chunk in chunks:
                await response.write(chunk)
                written += len(chunk)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up
        finally:
            self.sent.append(written)
        return response

    async def __aenter__(self) -> HugePollAnswer:
        app = web.Application()
        app.router.add_get("/frames", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/frames"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.mark.parametrize("declare_length", [False, True])
async def test_a_poll_answer_over_the_cap_is_a_poll_error_and_is_not_read_whole(
    declare_length: bool, caplog: pytest.LogCaptureFixture
) -> None:
    total, cap = 64 * 2**20, 2**20
    caplog.set_level(logging.WARNING, logger="alertbot.stream")
    sink = Sink()
    async with FeedServer() as feed, HugePollAnswer(total, declare_length) as huge:
        feed.refuse_websocket(True)
        stream = StreamManager(feed.url, parse_alert_frame, sink, poll_url=huge.url, max_poll_bytes=cap, **FAST)
        async with stream:
            await stream.wait_for(lambda: stream.stats.poll_errors + stream.stats.polls >= 2, TIMEOUT)
            assert stream.stats.polls == 0 and stream.stats.poll_errors >= 2  # counted, and tried again
            assert stream.health()["status"] == "down"
        await eventually(lambda: len(huge.sent) >= 2)
    # Each answer was abandoned near the cap: socket buffers hold a few MB, never the 64 MB.
    assert max(huge.sent) < total // 4
    assert stream.stats.frames == 0 and sink.events == []
    lines = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
    assert lines and f"answer over {cap} bytes" in lines[0]


async def test_connection_attempts_are_spaced_by_min_connect_interval():
    async with FeedServer() as feed:
        feed.refuse_websocket(True)
        stream = StreamManager(
            feed.url, parse_alert_frame, Sink(), **{**FAST, "min_connect_interval": 0.2, "backoff_max": 0.01}
        )
        started = time.monotonic()
        async with stream:
            await stream.wait_for(lambda: stream.stats.connect_failures >= 4, TIMEOUT)
            elapsed = time.monotonic() - started
        assert feed.refused_count >= 4
        assert stream.last_error == "handshake refused: HTTP 503"
    # four attempts need at least three intervals between them, however fast the machine
    assert elapsed >= 3 * 0.2 * 0.99


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    stream = StreamManager(
        "ws://127.0.0.1:9",
        parse_alert_frame,
        Sink(),
        backoff_base=1.0,
        backoff_factor=2.0,
        backoff_max=60.0,
        backoff_jitter=0.25,
        min_connect_interval=0.0,
    )
    assert stream._connect_delay() == 0.0  # the first attempt is immediate
    stream._last_attempt = time.monotonic()
    for failures, full in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 60.0)]:
        stream._failures = failures
        delays = [stream._connect_delay() for _ in range(50)]
        assert all(0.75 * full <= d <= full for d in delays), (failures, delays[:3])


# --- lifecycle and health -------------------------------------------------------------------------


async def test_health_goes_off_down_ok_off_and_stop_closes_the_socket(sample):
    async with FeedServer(sample[:5]) as feed:
        feed.refuse_websocket(True)
        stream = StreamManager(feed.url + "/data?api-key=SECRET", parse_alert_frame, Sink(), **FAST)
        assert stream.health()["status"] == "off"
        await stream.start()
        await stream.start()  # idempotent
        await stream.wait_for(lambda: stream.stats.connect_failures >= 1, TIMEOUT)
        health = stream.health()
        assert health["status"] == "down" and health["connected"] is False
        assert "SECRET" not in json.dumps(health)
        feed.refuse_websocket(False)
        await stream.wait_for(lambda: stream.connected, TIMEOUT)
        assert stream.health()["status"] == "ok"
        await feed.wait_for_clients(1)
        await stream.stop()
        await eventually(lambda: feed.clients == 0)
        assert stream.health()["status"] == "off" and not stream.connected
        await stream.stop()  # idempotent


async def test_stop_returns_while_a_handshake_hangs():
    async with FeedServer() as feed:
        feed.pause()  # handshakes hang
        stream = StreamManager(feed.url, parse_alert_frame, Sink(), **{**FAST, "open_timeout": 60.0})
        await stream.start()
        await asyncio.sleep(0.05)
        async with asyncio.timeout(TIMEOUT):
            await stream.stop()
        assert stream.health()["status"] == "off"


async def test_an_invalid_url_is_reported_not_retried():
    stream = StreamManager("not a websocket url", parse_alert_frame, Sink(), **FAST)
    async with stream:
        await stream.wait_for(lambda: stream.last_error is not None, TIMEOUT)
        assert stream.health()["status"] == "down"
        assert stream.last_error == "invalid url"
        assert stream.stats.connect_failures == 1


def test_redact_url_hides_the_password_and_the_api_key():
    assert (
        redact_url("wss://user:pw@pumpportal.fun:443/api/data?api-key=K")
        == "wss://user:***@pumpportal.fun:443/api/data?api-key=***"
    )


# --- subscriptions and dedup, as units ---------------------------------------------------------------


def test_subscriptions_split_keys_at_5000_per_message_and_drop_repeats():
    subs = SubscriptionSet()
    keys = [f"mint{i}" for i in range(12_001)]
    sent = subs.add("subscribeTokenTrade", keys)
    assert [len(m["keys"]) for m in sent] == [5000, 5000, 2001]
    assert [k for m in sent for k in m["keys"]] == keys
    assert subs.add("subscribeTokenTrade", keys[:10]) == []  # nothing new
    assert subs.add("subscribeTokenTrade", ["mint0", "fresh"]) == [{"method": "subscribeTokenTrade", "keys": ["fresh"]}]
    assert subs.add("subscribeNewToken") == [{"method": "subscribeNewToken"}]
    assert subs.add("subscribeNewToken") == []
    everything = subs.messages()
    assert everything[0] == {"method": "subscribeNewToken"}
    assert [len(m["keys"]) for m in everything[1:]] == [5000, 5000, 2002]
    assert subs.remove("subscribeTokenTrade", ["mint1", "absent"]) == [
        {"method": "unsubscribeTokenTrade", "keys": ["mint1"]}
    ]
    assert subs.remove("subscribeNewToken") == [{"method": "unsubscribeNewToken"}]
    assert len(subs) == 12_001


def test_refused_trades_are_dropped_for_good():
    subs = SubscriptionSet()
    subs.add("subscribeMigration")
    subs.add("subscribeTokenTrade", ["a"])
    subs.add("subscribeAccountTrade", ["w"])
    subs.refuse_trades()
    assert subs.trades_refused
    assert subs.messages() == [{"method": "subscribeMigration"}]
    assert subs.add("subscribeTokenTrade", ["b"]) == [] and subs.add("subscribeAccountTrade", ["x"]) == []
    assert subs.messages() == [{"method": "subscribeMigration"}]


def test_recent_keys_forget_after_the_ttl_and_beyond_the_bound():
    now = [0.0]
    recent = RecentKeys(max_keys=3, ttl=600.0, clock=lambda: now[0])
    assert not recent.check_and_add("a")
    assert recent.check_and_add("a")
    now[0] = 599.0
    assert recent.check_and_add("a")  # refreshed at 599
    now[0] = 1198.0
    assert recent.check_and_add("a")
    now[0] = 1800.0
    assert not recent.check_and_add("a")  # more than 10 minutes since last seen
    for key in "bcd":
        recent.check_and_add(key)
    assert len(recent) == 3
    assert not recent.check_and_add("a")  # pushed out by b, c, d


# --- PumpPortal ------------------------------------------------------------------------------------


def pumpportal_stream(feed: FeedServer, sink: Sink, subscriptions: SubscriptionSet) -> StreamManager:
    return StreamManager(
        feed.url + "/api/data?api-key=k",
        pumpportal_parser(lambda: SOL_USD),
        sink,
        subscriptions=subscriptions,
        name="pumpportal",
        **FAST,
    )


async def test_pumpportal_subscriptions_are_split_at_5000_keys_on_the_wire():
    tokens = [f"{i:044d}" for i in range(12_001)]
    subs = SubscriptionSet()
    subs.add("subscribeNewToken")
    subs.add("subscribeTokenTrade", tokens)
    async with FeedServer(on_message=PumpPortalReplies(trades_allowed=True)) as feed:
        async with pumpportal_stream(feed, Sink(), subs) as stream:
            await eventually(lambda: len(methods(feed.received, "subscribeTokenTrade")) >= 3)
            await stream.wait_for(lambda: stream.stats.notices >= 4, TIMEOUT)  # 4 acknowledgements
            assert await stream.subscribe("subscribeTokenTrade", ["late", tokens[0]])
            await eventually(lambda: len(methods(feed.received, "subscribeTokenTrade")) >= 4)
            assert not stream.trades_refused
    sent = methods(feed.received, "subscribeTokenTrade")
    assert [len(m["keys"]) for m in sent] == [5000, 5000, 2001, 1]
    assert [k for m in sent[:3] for k in m["keys"]] == tokens
    assert sent[3]["keys"] == ["late"]


async def test_pumpportal_refusal_stops_trade_subscriptions_without_a_reconnect():
    replies = PumpPortalReplies(trades_allowed=False)
    subs = SubscriptionSet()
    subs.add("subscribeNewToken")
    subs.add("subscribeMigration")
    subs.add("subscribeTokenTrade", [MINT])
    sink = Sink()
    async with FeedServer([pp_create()], on_message=replies) as feed:
        async with pumpportal_stream(feed, sink, subs) as stream:
            await stream.wait_for(lambda: stream.trades_refused, TIMEOUT)
            await feed.push(pp_migrate())
            await stream.wait_for(lambda: any(isinstance(e, MigrateEvent) for e in sink.events), TIMEOUT)
            assert feed.connection_count == 1 and stream.stats.reconnects == 0 and stream.connected
            assert await stream.subscribe("subscribeTokenTrade", ["another"]) is False
            assert stream.health()["trades_refused"] is True
            # a reconnect for another reason asks for everything again, except trades
            await feed.drop_connections()
            await feed.wait_for_connections(2)
            await eventually(lambda: len(methods(feed.received, "subscribeMigration")) == 2)
            await stream.unsubscribe("subscribeMigration")  # a marker sent after the resubscription
            await eventually(lambda: len(methods(feed.received, "unsubscribeMigration")) == 1)
    assert len(methods(feed.received, "subscribeNewToken")) == 2
    assert methods(feed.received, "subscribeTokenTrade") == [{"method": "subscribeTokenTrade", "keys": [MINT]}]
    assert replies.refusals == 1
    assert stream.stats.reconnects == 1


async def test_pumpportal_frames_flow_through_the_stream_as_events():
    frames = [
        pp_create(),
        pp_trade("buy", n=10, solAmount=3, tokenAmount=3_000_000),  # an integer solAmount
        pp_trade("sell", n=11, solAmount=0.5, tokenAmount=1_000_000, marketCapSol=40.0),
        pp_migrate(),
        pp_bonk_create(),
        "{garbage",
    ]
    sink = Sink()
    subs = SubscriptionSet()
    subs.add("subscribeNewToken")
    async with FeedServer(frames, on_message=PumpPortalReplies()) as feed:
        async with pumpportal_stream(feed, sink, subs) as stream:
            await stream.wait_for(lambda: stream.stats.frames >= len(frames) + 1, TIMEOUT)  # + the ack
            assert stream.stats.notices == 1 and stream.stats.malformed == 1
    create, buy, sell, migrate, bonk = sink.events
    assert isinstance(create, CreateEvent) and create.token.name == "Moon Dog" and create.token.symbol == "MDOG"
    assert create.token.market_cap_usd == pytest.approx(33.830382106244144 * SOL_USD)
    assert isinstance(buy, PriceEvent) and buy.price_usd == pytest.approx(1e-6 * SOL_USD)
    assert isinstance(sell, PriceEvent) and sell.market_cap_usd == pytest.approx(40.0 * SOL_USD)
    assert isinstance(migrate, MigrateEvent) and migrate.address == MINT and migrate.pool == "pump-amm"
    assert isinstance(bonk, CreateEvent) and bonk.token.address == BONK_MINT
