"""The feed double itself: the committed sample (standins/feedgen.py) and the WebSocket /
poll server that plays it (standins/feed_server.py).

Nothing here waits on the clock to pass: the server's wait_for_* helpers wake on events, and
the few "nothing arrives while paused" checks only get stronger on a slow machine.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from standins import feedgen
from standins.feed_server import FeedServer

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0  # generous: only a broken double ever waits this long
UNKNOWN_TYPES = {"hello", "heartbeat"}


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    return feedgen.load_sample()


def calls_of(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [frame for frame in frames if frame["type"] == "call"]


# --- the committed sample --------------------------------------------------------------------


def test_sample_is_big_and_every_frame_is_an_object_of_a_known_or_ignorable_type(sample):
    assert len(sample) >= 1000
    assert all(isinstance(frame, dict) for frame in sample)
    types = Counter(frame["type"] for frame in sample)
    assert set(types) == feedgen.KNOWN_TYPES | UNKNOWN_TYPES
    assert 0 < types["hello"] + types["heartbeat"] < 50  # a few, for consumers to ignore


def test_sample_lines_are_json_objects_in_time_order():
    lines = feedgen.SAMPLE_PATH.read_text(encoding="ascii").splitlines()
    frames = [json.loads(line) for line in lines]
    assert all(isinstance(frame, dict) and frame.get("type") for frame in frames)
    stamps = [feedgen.frame_time(frame) for frame in frames if feedgen.frame_time(frame)]
    assert stamps == sorted(stamps)


def test_calls_have_the_required_fields_and_plausible_values(sample):
    calls = calls_of(sample)
    assert len(calls) >= 200
    for call in calls:
        token, channel = call["token"], call["channel"]
        address = token["address"]
        assert 43 <= len(address) <= 44 and set(address) <= set(feedgen.BASE58)
        assert len(feedgen.b58decode(address)) == 32  # a real public key
        assert isinstance(token["symbol"], str) and token["symbol"]
        assert isinstance(channel["id"], str) and channel["id"].startswith("-100")
        called_at = feedgen.parse_ts(call["called_at"])
        assert token["chain"] == "solana"
        assert 5_000 <= token["market_cap_usd"] <= 5_000_000
        assert math.isclose(token["price_usd"] * feedgen.SUPPLY, token["market_cap_usd"], rel_tol=1e-9)
        if token.get("created_at"):
            age = called_at - feedgen.parse_ts(token["created_at"])
            assert 60 <= age.total_seconds() <= 9 * 3600  # minutes to hours old
        if token.get("liquidity_usd") is not None:
            assert 0 < token["liquidity_usd"] < token["market_cap_usd"]
        if token.get("holders") is not None:
            assert isinstance(token["holders"], int) and token["holders"] > 0
    pump = sum(call["token"]["address"].endswith("pump") for call in calls)
    assert len(calls) / 2 < pump < len(calls)  # most, not all


def test_optional_fields_are_sometimes_missing_and_sometimes_null(sample):
    calls = calls_of(sample)
    for key in ("name", "liquidity_usd", "holders", "created_at"):
        assert any(key not in call["token"] for call in calls), key
        assert any(key in call["token"] and call["token"][key] is None for call in calls), key
    assert any("username" not in call["channel"] for call in calls)
    assert any("username" in call["channel"] and call["channel"]["username"] is None for call in calls)


def test_channels_are_announced_before_their_calls_and_updated_later(sample):
    seen: dict[str, int] = Counter()
    for frame in sample:
        if frame["type"] == "channel":
            seen[frame["id"]] += 1
            assert 0.0 <= frame["win_rate"] <= 1.0
            assert frame["avg_gain"] > 0 and frame["calls"] > 0
        elif frame["type"] == "call":
            assert frame["channel"]["id"] in seen
    assert len(seen) >= 20
    assert any(count > 1 for count in seen.values())  # statistics change during the stream
    rates = [frame["win_rate"] for frame in sample if frame["type"] == "channel"]
    assert min(rates) <= 0.1 and max(rates) >= 0.9


def test_tokens_are_called_by_one_to_eight_channels_at_different_times(sample):
    callers: dict[str, set[str]] = defaultdict(set)
    times: dict[str, set[str]] = defaultdict(set)
    for call in calls_of(sample):
        callers[call["token"]["address"]].add(call["channel"]["id"])
        times[call["token"]["address"]].add(call["called_at"])
    counts = Counter(len(ids) for ids in callers.values())
    assert counts[1] > 0
    assert sum(n for size, n in counts.items() if size >= 5) > 0
    assert max(counts) <= 8
    assert any(len(stamps) >= 5 for stamps in times.values())


def test_hostile_names_and_symbols_are_present(sample):
    texts = [call["token"].get(key) or "" for call in calls_of(sample) for key in ("name", "symbol")]
    texts += [frame["name"] for frame in sample if frame["type"] == "channel"]

    def present(check) -> bool:
        return any(check(text) for text in texts)

    assert present(lambda t: "<b>" in t)
    assert present(lambda t: "<script>alert(1)</script>" in t)
    assert present(lambda t: "&amp;" in t)
    assert present(lambda t: "</a>" in t)
    assert present(lambda t: "\x00" in t)
    assert present(lambda t: any(0 < ord(c) < 0x20 for c in t))
    assert present(lambda t: "\u202e" in t)
    assert present(lambda t: len(t) >= 300)
    assert present(lambda t: any(ord(c) >= 0x1F300 for c in t))  # emoji
    assert present(lambda t: any("\u0590" <= c <= "\u06ff" for c in t))  # Hebrew / Arabic
    assert feedgen.summary(sample)["hostile_tokens"] == len(feedgen.HOSTILE_NAMES)


def test_price_paths_reach_2x_5x_10x_and_some_tokens_die(sample):
    multiples = feedgen.token_multiples(sample)
    highs = [high for high, _ in multiples.values()]
    assert any(2 <= high < 5 for high in highs)
    assert any(5 <= high < 10 for high in highs)
    assert any(high >= 10 for high in highs)
    assert any(low <= 0.1 for _, low in multiples.values())
    first_call: dict[str, str] = {}
    for frame in sample:
        if frame["type"] == "call":
            first_call.setdefault(frame["token"]["address"], frame["called_at"])
        elif frame["type"] == "price":
            assert frame["address"] in first_call  # prices follow the first call
            assert frame["ts"] >= first_call[frame["address"]]
            assert math.isclose(frame["price_usd"] * feedgen.SUPPLY, frame["market_cap_usd"], rel_tol=1e-9)


def test_summary_reports_the_ground_truth(sample):
    facts = feedgen.summary(sample)
    assert facts["frames"] == len(sample)
    assert facts["calls"] == len(calls_of(sample))
    assert facts["tokens"] == len({call["token"]["address"] for call in calls_of(sample)})
    assert facts["channels"] >= 20
    assert 5 <= facts["max_channels_per_token"] <= 8
    assert facts["tokens_2x"] > facts["tokens_5x"] > facts["tokens_10x"] > 0
    assert facts["tokens_died"] > 0
    assert facts["unknown_frames"] == sum(frame["type"] in UNKNOWN_TYPES for frame in sample)
    json.dumps(facts)  # printable as is


def test_generator_is_deterministic_and_reproduces_the_committed_file():
    frames = feedgen.generate()
    assert frames == feedgen.generate(seed=feedgen.DEFAULT_SEED, tokens=feedgen.DEFAULT_TOKENS)
    assert frames != feedgen.generate(seed=8)
    assert feedgen.dumps(frames).encode("ascii") == feedgen.SAMPLE_PATH.read_bytes()
    assert feedgen.load_sample() == frames


def test_command_line_reproduces_the_committed_file_byte_for_byte(tmp_path):
    out = tmp_path / "feed.jsonl"
    # A different hash seed: nothing may depend on set or dict-of-str iteration order.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-m", "standins.feedgen", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == feedgen.SAMPLE_PATH.read_bytes()
    assert json.loads(result.stderr.strip().splitlines()[-1])["frames"] == len(feedgen.load_sample())


def test_a_small_stream_still_has_every_kind_of_price_path():
    frames = feedgen.generate(seed=1, tokens=5)
    facts = feedgen.summary(frames)
    assert facts["tokens"] == 5
    assert facts["tokens_10x"] >= 1 and facts["tokens_died"] >= 1


# --- the WebSocket / poll server -------------------------------------------------------------


async def receive(ws: ClientConnection, count: int) -> list[Any]:
    async with asyncio.timeout(TIMEOUT):
        return [await ws.recv() for _ in range(count)]


FRAMES: list[dict[str, Any] | str] = [
    {"type": "channel", "id": "-1001", "name": "A", "win_rate": 0.5, "avg_gain": 2.0, "calls": 3},
    "{not json",
    {"type": "heartbeat"},
    {"type": "price", "address": "x", "price_usd": 1e-05, "market_cap_usd": 10000.0, "ts": "2026-11-20T10:00:00Z"},
]


async def test_server_plays_queued_frames_in_order_and_strings_raw():
    async with FeedServer(FRAMES) as feed, connect(feed.url, ping_interval=None) as ws:
        messages = await receive(ws, len(FRAMES))
    assert messages[1] == "{not json"
    parsed = [json.loads(m) for i, m in enumerate(messages) if i != 1]
    assert parsed == [f for f in FRAMES if isinstance(f, dict)]


async def test_server_plays_the_whole_sample_in_order(sample):
    async with FeedServer(sample) as feed, connect(feed.url, ping_interval=None, max_size=None) as ws:
        messages = await receive(ws, len(sample))
        await feed.wait_for_sent(len(sample))
    assert [json.loads(m) for m in messages] == sample
    assert feed.sent_count == len(sample)


async def test_interval_keeps_the_order():
    frames = [{"type": "heartbeat", "n": n} for n in range(5)]
    async with FeedServer(frames, interval=0.01) as feed, connect(feed.url, ping_interval=None) as ws:
        assert [json.loads(m)["n"] for m in await receive(ws, 5)] == list(range(5))


async def test_push_broadcasts_to_every_connected_client():
    async with FeedServer() as feed:
        async with connect(feed.url, ping_interval=None) as one, connect(feed.url, ping_interval=None) as two:
            await feed.wait_for_clients(2)
            assert feed.clients == 2
            await feed.push({"type": "heartbeat", "n": 1})
            await feed.push_many([{"type": "heartbeat", "n": 2}, "raw text"])
            for ws in (one, two):
                messages = await receive(ws, 3)
                assert [json.loads(messages[0]), json.loads(messages[1]), messages[2]] == [
                    {"type": "heartbeat", "n": 1},
                    {"type": "heartbeat", "n": 2},
                    "raw text",
                ]


async def test_drop_connections_closes_abruptly_and_a_reconnect_is_counted():
    async with FeedServer([{"type": "heartbeat"}]) as feed:
        ws = await connect(feed.url, ping_interval=None)
        await receive(ws, 1)
        assert await feed.drop_connections() == 1
        with pytest.raises(ConnectionClosedError):
            async with asyncio.timeout(TIMEOUT):
                await ws.recv()
        assert feed.clients == 0
        async with connect(feed.url, ping_interval=None) as again:
            await feed.wait_for_connections(2)
            assert json.loads(await asyncio.wait_for(again.recv(), TIMEOUT)) == {"type": "heartbeat"}
        assert feed.connection_count == 2


async def test_replay_false_plays_the_queued_frames_to_the_first_connection_only():
    async with FeedServer([{"type": "heartbeat", "n": 0}], replay=False) as feed:
        async with connect(feed.url, ping_interval=None) as first:
            await receive(first, 1)
        async with connect(feed.url, ping_interval=None) as second:
            await feed.wait_for_clients(1)
            await feed.push({"type": "heartbeat", "n": 1})
            assert json.loads((await receive(second, 1))[0])["n"] == 1


async def test_received_records_what_clients_send_and_on_message_can_reply():
    def acknowledge(message: Any) -> list[dict[str, Any]]:
        if isinstance(message, dict) and message.get("method") == "subscribeNewToken":
            return [{"message": "Successfully subscribed to token creation events."}]
        return []

    async with FeedServer(on_message=acknowledge) as feed, connect(feed.url, ping_interval=None) as ws:
        await ws.send(json.dumps({"method": "subscribeNewToken"}))
        await ws.send("plain words")
        found = await feed.wait_for_received(lambda m: isinstance(m, dict) and m.get("method") == "subscribeNewToken")
        assert found == {"method": "subscribeNewToken"}
        assert await feed.wait_for_received(lambda m: m == "plain words") == "plain words"
        assert json.loads((await receive(ws, 1))[0])["message"].startswith("Successfully subscribed")
    assert feed.received == [{"method": "subscribeNewToken"}, "plain words"]


async def test_wait_helpers_time_out_with_timeout_error():
    async with FeedServer() as feed:
        with pytest.raises(TimeoutError):
            await feed.wait_for_clients(1, timeout=0.05)
        with pytest.raises(TimeoutError):
            await feed.wait_for_received(lambda m: True, timeout=0.05)


async def test_poll_endpoint_answers_the_same_frames_as_the_websocket():
    frames = [{"type": "heartbeat", "n": n} for n in range(250)] + ["{not json"]
    async with FeedServer(frames) as feed, aiohttp.ClientSession() as http:
        async with connect(feed.url, ping_interval=None) as ws:
            played = await receive(ws, len(frames))
            async with http.get(feed.poll_url) as response:
                assert response.status == 200
                assert response.content_type == "application/json"
                polled = await response.json()
        assert isinstance(polled, list) and len(polled) == 200  # the last N
        assert polled[:-1] == [json.loads(text) for text in played[-200:-1]]
        assert polled[-1] == "{not json"  # malformed text stays one (string) element
        await feed.push({"type": "price", "address": "x"})
        async with http.get(feed.poll_url) as response:
            assert (await response.json())[-1] == {"type": "price", "address": "x"}
        assert feed.recent()[-1] == {"type": "price", "address": "x"}
        feed.poll.fail(500)
        async with http.get(feed.poll_url) as response:
            assert response.status == 500
        feed.poll.fail(None)
        async with http.get(feed.poll_url) as response:
            assert response.status == 200
        await feed.poll.wait_for_requests(4)


async def test_refuse_websocket_rejects_handshakes_with_503_while_polling_still_answers():
    async with FeedServer([{"type": "heartbeat"}]) as feed, aiohttp.ClientSession() as http:
        feed.refuse_websocket(True)
        with pytest.raises(InvalidStatus) as refused:
            await connect(feed.url, ping_interval=None, open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 503
        assert feed.refused_count == 1 and feed.connection_count == 0
        async with http.get(feed.poll_url) as response:
            assert response.status == 200
            assert await response.json() == [{"type": "heartbeat"}]
        feed.refuse_websocket(False)
        async with connect(feed.url, ping_interval=None) as ws:
            assert json.loads((await receive(ws, 1))[0]) == {"type": "heartbeat"}
        assert feed.connection_count == 1


async def test_pause_goes_silent_and_resume_delivers_what_was_held():
    async with FeedServer() as feed, connect(feed.url, ping_interval=None) as ws:
        await feed.wait_for_clients(1)
        feed.pause()
        assert feed.paused
        await feed.push({"type": "heartbeat", "n": 1})
        pong = await ws.ping()
        # Silence can only be checked by waiting a little; a slow machine makes it no less true.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.2)
        assert not pong.done()  # not even pings are answered
        feed.resume()
        async with asyncio.timeout(TIMEOUT):
            await pong
        assert json.loads((await receive(ws, 1))[0]) == {"type": "heartbeat", "n": 1}


async def test_stop_closes_clients_with_going_away():
    feed = await FeedServer().start()
    ws = await connect(feed.url, ping_interval=None)
    await feed.wait_for_clients(1)
    await feed.stop()
    with pytest.raises(ConnectionClosedOK):
        async with asyncio.timeout(TIMEOUT):
            await ws.recv()
    assert ws.close_code == 1001
    with pytest.raises(RuntimeError):
        feed.url  # noqa: B018 - a stopped server has no address
