"""/metrics as Prometheus reads it: typed families (counters only grow, gauges are levels,
histograms), behind a bearer token when one is set, moving when alerts are sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from domain.filters import Filters
from services.http_api import ServingFlag, bearer_matches, build_http_app
from services.metrics import Metrics, TimingHistogram
from standins.feed_server import FeedServer
from standins.telegram import FakeTelegramServer
from tests.test_token_pipeline_e2e import Member, bot_on_feed, call_frame

TOKEN = "s3cret-scrape-token-0123456789"
Families = dict[str, Any]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def families(text: str) -> Families:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples_of(found: Families, kinds: tuple[str, ...]) -> Samples:
    """Every sample of the families of `kinds`, by (sample name, labels)."""
    out: Samples = {}
    for family in found.values():
        if family.type in kinds:
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: Families, sample_name: str, **labels: str) -> float:
    for family in found.values():
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {sample_name} {labels}")


def test_numbers_are_typed_as_counters_levels_and_histograms() -> None:
    metrics = Metrics()
    counts = {"sent": 3, "alerts_sent": 2, "pending": 4, "telegram_reachable": True, "latency_p50": 0.2, "x": None}
    metrics.components.add("sender", lambda: counts)
    metrics.components.add_levels("queue", lambda: {"size": 7, "capacity": 100})
    metrics.components.add_each("cache", "cache", lambda: {"plans": {"hits": 9, "hit_rate": 0.9}})
    metrics.components.add_counter(
        "alertbot_payments", "payments", ("rail", "outcome"), lambda: {("sol", "credited"): 2}
    )
    histogram = TimingHistogram((0.1, 1.0))
    for seconds in (0.05, 0.5, 0.5, 3.0):
        histogram.observe(seconds)
    metrics.components.add_histogram("alertbot_frame_to_send_seconds", "latency", histogram)
    from prometheus_client import generate_latest

    found = families(generate_latest(metrics.registry).decode())
    assert found["alertbot_sender_sent"].type == "counter"
    assert value(found, "alertbot_sender_sent_total") == 3
    assert value(found, "alertbot_sender_alerts_sent_total") == 2
    assert found["alertbot_sender_pending"].type == "gauge"
    assert value(found, "alertbot_sender_telegram_reachable") == 1
    assert "alertbot_sender_latency_p50" not in found and "alertbot_sender_x" not in found
    assert found["alertbot_queue_size"].type == "gauge" and value(found, "alertbot_queue_capacity") == 100
    assert value(found, "alertbot_cache_hits_total", cache="plans") == 9
    assert found["alertbot_cache_hit_rate"].type == "gauge"
    assert value(found, "alertbot_payments_total", rail="sol", outcome="credited") == 2
    assert found["alertbot_frame_to_send_seconds"].type == "histogram"
    assert value(found, "alertbot_frame_to_send_seconds_bucket", le="0.1") == 1
    assert value(found, "alertbot_frame_to_send_seconds_bucket", le="1.0") == 3
    assert value(found, "alertbot_frame_to_send_seconds_bucket", le="+Inf") == 4
    assert value(found, "alertbot_frame_to_send_seconds_count") == 4
    assert value(found, "alertbot_frame_to_send_seconds_sum") == pytest.approx(4.05)


@pytest.fixture
async def guarded_app() -> AsyncIterator[str]:
    metrics = Metrics()
    metrics.components.add("pipeline", lambda: {"calls": 1})
    serving = ServingFlag()
    serving.serving = True

    async def health() -> dict[str, Any]:
        return {}

    runner = web.AppRunner(build_http_app(health, serving, metrics.registry, metrics_token=TOKEN))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_metrics_token_is_required_when_set_and_health_stays_public(guarded_app: str) -> None:
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            async with http.get(f"{guarded_app}/metrics", headers=headers) as response:
                assert response.status == 401, headers
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert "alertbot" not in await response.text()
        async with http.get(f"{guarded_app}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
            assert value(families(await response.text()), "alertbot_pipeline_calls_total") == 1
        async with http.get(f"{guarded_app}/health") as response:
            assert response.status == 200


def test_bearer_header_matching() -> None:
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN) and bearer_matches(f"bearer  {TOKEN} ", TOKEN)
    assert not bearer_matches(None, TOKEN) and not bearer_matches("Bearer", TOKEN)
    assert not bearer_matches(f"Bearer {TOKEN}x", TOKEN) and not bearer_matches(TOKEN, TOKEN)


async def scrape(http: aiohttp.ClientSession, base: str) -> Families:
    async with http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 200
        return families(await response.text())


FOLLOWER = Member(301, Filters())  # any token
# Counters the running bot must offer, and the levels it must offer as gauges.
COUNTERS = (
    "alertbot_stream_frames",
    "alertbot_stream_reconnects",
    "alertbot_pipeline_calls",
    "alertbot_pipeline_matched",
    "alertbot_sender_alerts_sent",
    "alertbot_sender_rate_limited",
    "alertbot_sender_retried",
    "alertbot_delivery_published",
    "alertbot_redis_operations",
    "alertbot_cache_hits",
    "alertbot_payments",
    "alertbot_monitor_checks",
    "alertbot_telegram_updates",
    "alertbot_handler_errors",
)
GAUGES = (
    "alertbot_queue_size",
    "alertbot_outbox_pending",
    "alertbot_sender_pending",
    "alertbot_redis_circuit_state",
    "alertbot_redis_up",
    "alertbot_stream_connected",
    "alertbot_cache_hit_rate",
    "alertbot_incident_open",
    "alertbot_monitor_memory_limit_bytes",
    "process_resident_memory_bytes",
)


async def test_metrics_of_a_running_bot_only_grow_and_move_when_alerts_are_sent(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    tokens = [f"{letter * 40}pump" for letter in "ABC"]
    async with FakeTelegramServer() as telegram, FeedServer([]) as feed:
        async with bot_on_feed(
            feed, telegram, redis_url, database_url, tmp_path, [FOLLOWER], metrics_token=TOKEN
        ) as runtime:
            base = f"http://127.0.0.1:{runtime.http_port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/metrics") as response:
                    assert response.status == 401
                before = await scrape(http, base)
                for name in COUNTERS:
                    assert before[name].type == "counter", name
                for name in GAUGES:
                    assert before[name].type == "gauge", name
                for name in ("alertbot_frame_to_send_seconds", "alertbot_telegram_answer_seconds"):
                    assert before[name].type == "histogram", name
                # Levels are gauges and nothing else; a counter family's samples all end in _total.
                for family in before.values():
                    if family.type == "counter":
                        assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name

                for minute, token in enumerate(tokens):
                    await feed.push(call_frame(token, "-2010", minute))
                [stream] = runtime.streams
                await stream.wait_for(lambda: stream.stats.events >= len(tokens), 30)
                await runtime.drained()
                await telegram.wait_for_sent(lambda r: r.chat_id == FOLLOWER.telegram_id, count=3, timeout=30)
                after = await scrape(http, base)

    old, new = samples_of(before, ("counter", "histogram")), samples_of(after, ("counter", "histogram"))
    for key, was in old.items():
        assert key in new and new[key] >= was, (key, was, new.get(key))

    def moved(sample_name: str, **labels: str) -> float:
        return value(after, sample_name, **labels) - value(before, sample_name, **labels)

    assert moved("alertbot_stream_frames_total", feed="feed") >= 3
    assert moved("alertbot_pipeline_calls_total") == 3
    assert moved("alertbot_pipeline_matched_total") == 3
    assert moved("alertbot_sender_alerts_sent_total") == 3
    assert moved("alertbot_frame_to_send_seconds_count") == 3
    assert moved("alertbot_telegram_answer_seconds_count") >= 3
    assert value(after, "alertbot_stream_connected", feed="feed") == 1
    assert value(after, "alertbot_redis_circuit_state") == 0 and value(after, "alertbot_redis_up") == 1
    assert value(after, "alertbot_payments_total", rail="grant", outcome="credited") == 1  # the member's plan
