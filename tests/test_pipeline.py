"""The token pipeline's decisions against real Redis: who is alerted, and never twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from domain.events import CallEvent, Channel, ChannelStatsEvent, TokenInfo
from domain.filters import Filters
from domain.matching import SubscriberIndex
from domain.messages import Lane, RenderedAlert
from domain.subscriber import Subscriber
from managers.redis_manager import RedisManager
from services.alert_renderer import AlertRenderer
from services.cache import CacheRegistry
from services.channels import ChannelDirectory
from services.dedup import AlertLedger, ClaimRequest
from services.outbox import STREAM_KEY, decode_alert, encode_alert
from services.pipeline import AlertBatch, CallPipeline


def _split(batch: AlertBatch) -> list[AlertBatch]:
    return [
        AlertBatch((one,), batch.token, batch.callers, batch.seen_at, batch.received_at) for one in batch.telegram_ids
    ]


T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
GOOD = Channel(id="-1001", name="Good Calls", username="goodcalls", win_rate=0.6, avg_gain=3.0, calls=50)
POOR = Channel(id="-1002", name="Poor Calls", username="poorcalls", win_rate=0.1, avg_gain=1.1, calls=80)
OTHERS = [Channel(id=f"-10{i}", name=f"Other {i}", win_rate=0.3, avg_gain=1.5) for i in range(10, 15)]

SUBSCRIBERS = [
    Subscriber(telegram_id=1, filters=Filters(min_mcap=20_000), is_admin=True),  # loose
    Subscriber(telegram_id=2, filters=Filters(min_win_rate=50), plan_expires_at=T0 + timedelta(days=30)),
    Subscriber(
        telegram_id=3, filters=Filters(max_mcap=30_000, min_holders=100), plan_expires_at=T0 + timedelta(days=30)
    ),
    Subscriber(telegram_id=4, filters=Filters()),  # no plan: never alerted
]


def call(address: str, channel: Channel, minutes: int, mcap: float = 41_250, holders: int | None = 212) -> CallEvent:
    token = TokenInfo(
        address=address,
        symbol="TKN",
        name="Token",
        market_cap_usd=mcap,
        holders=holders,
        created_at=T0 - timedelta(minutes=30),
    )
    return CallEvent(
        token=token,
        channel=Channel(channel.id, channel.name, channel.username),  # a call names its channel only
        called_at=T0 + timedelta(minutes=minutes),
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisManager]:
    manager = RedisManager.from_url(redis_url)
    await manager.start()
    yield manager
    await manager.close()


async def build(redis: RedisManager, sent: list[AlertBatch]) -> CallPipeline:
    caches = CacheRegistry(redis)
    channels = ChannelDirectory(redis, None, caches)
    service = CallPipeline(
        index=SubscriberIndex(SUBSCRIBERS),
        ledger=AlertLedger(redis),
        channels=channels,
        deliver=lambda batch: sent.extend(_split(batch)),
        clock=lambda: T0 + timedelta(hours=1),
    )
    for stats in (GOOD, POOR, *OTHERS):
        await service.handle(ChannelStatsEvent(stats))
    return service


async def test_each_subscriber_gets_what_their_filters_pass(redis: RedisManager) -> None:
    sent: list[AlertBatch] = []
    service = await build(redis, sent)
    assert sorted(await service.on_call(call("A" * 44, GOOD, 1))) == [1, 2]  # 3: mcap above 30k
    assert sorted(await service.on_call(call("B" * 44, POOR, 2, mcap=25_000))) == [1, 3]  # 2: win rate
    assert await service.on_call(call("C" * 44, POOR, 3, mcap=25_000, holders=None)) == [1]  # 3 needs holders
    assert {a.telegram_ids[0] for a in sent} == {1, 2, 3}
    alert = next(a for a in sent if a.telegram_ids[0] == 2)
    assert alert.callers[0].channel.name == "Good Calls" and alert.callers[0].channel.win_rate == 0.6


async def test_five_channels_one_alert(redis: RedisManager) -> None:
    sent: list[AlertBatch] = []
    service = await build(redis, sent)
    for minute, channel in enumerate([GOOD, *OTHERS[:4]]):
        await service.on_call(call("D" * 44, channel, minute))
    assert sorted(a.telegram_ids[0] for a in sent) == [1, 2]
    assert service.stats.calls == 5 and service.stats.alerts == 2


async def test_rejected_then_upgraded_by_a_passing_channel(redis: RedisManager) -> None:
    sent: list[AlertBatch] = []
    service = await build(redis, sent)
    assert 2 not in await service.on_call(call("E" * 44, POOR, 1))
    assert await service.on_call(call("E" * 44, GOOD, 5)) == [2]
    assert await service.on_call(call("E" * 44, OTHERS[0], 9)) == []
    assert [a.telegram_ids[0] for a in sent].count(2) == 1
    upgraded = next(a for a in sent if a.telegram_ids[0] == 2)
    assert [c.channel.id for c in upgraded.callers] == [POOR.id, GOOD.id]  # both callers, in call order


async def test_min_channels_counts_channels_across_calls(redis: RedisManager) -> None:
    sent: list[AlertBatch] = []
    service = await build(redis, sent)
    service.index.upsert(Subscriber(telegram_id=5, filters=Filters(min_channels=3), is_admin=True))
    assert 5 not in await service.on_call(call("F" * 44, OTHERS[0], 1))
    assert 5 not in await service.on_call(call("F" * 44, OTHERS[0], 2))  # same channel again: still one
    assert 5 not in await service.on_call(call("F" * 44, OTHERS[1], 3))
    assert 5 in await service.on_call(call("F" * 44, OTHERS[2], 4))


async def test_a_restart_between_two_calls_never_repeats_an_alert(redis: RedisManager) -> None:
    sent: list[AlertBatch] = []
    first = await build(redis, sent)
    await first.on_call(call("G" * 44, GOOD, 1))
    restarted = await build(redis, sent)  # new process: nothing in memory, same Redis
    await restarted.on_call(call("G" * 44, OTHERS[0], 2))
    assert sorted(a.telegram_ids[0] for a in sent) == [1, 2]


async def test_two_workers_racing_on_one_token_alert_once(redis: RedisManager) -> None:
    sent: list[AlertBatch] = []
    services = [await build(redis, sent) for _ in range(4)]
    await asyncio.gather(
        *(
            s.on_call(call("H" * 44, channel, i))
            for i, (s, channel) in enumerate(zip(services, [GOOD, OTHERS[0], OTHERS[1], OTHERS[2]]))
        )
    )
    assert sorted(a.telegram_ids[0] for a in sent) == [1, 2]


async def test_redis_outage_keeps_alerting_without_repeats(redis_url: str) -> None:
    from urllib.parse import urlsplit

    from standins.tcp_proxy import TcpProxy

    parts = urlsplit(redis_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        manager = RedisManager.from_url(f"redis://127.0.0.1:{proxy.port}{parts.path}")
        await manager.start()
        try:
            sent: list[AlertBatch] = []
            service = await build(manager, sent)
            await proxy.stop_forwarding()
            await service.on_call(call("J" * 44, GOOD, 1))
            await service.on_call(call("J" * 44, OTHERS[0], 2))
            assert sorted(a.telegram_ids[0] for a in sent) == [1, 2]
        finally:
            await manager.close()


async def test_min_channels_counts_callers_seen_by_another_process(redis: RedisManager) -> None:
    sent: list[AlertBatch] = []
    first, second = await build(redis, sent), await build(redis, sent)
    for service in (first, second):
        service.index.upsert(Subscriber(telegram_id=6, filters=Filters(min_channels=2), is_admin=True))
    assert 6 not in await first.on_call(call("K" * 44, OTHERS[0], 1))
    # The second process has never seen the first call: Redis tells it, and it alerts.
    assert 6 in await second.on_call(call("K" * 44, OTHERS[1], 2))
    assert [a.telegram_ids[0] for a in sent].count(6) == 1


async def test_callers_redis_lost_are_not_counted(redis: RedisManager) -> None:
    sent: list[AlertBatch] = []
    service = await build(redis, sent)
    service.index.upsert(Subscriber(telegram_id=6, filters=Filters(min_channels=2), is_admin=True))
    assert 6 not in await service.on_call(call("L" * 44, OTHERS[0], 1))
    async with redis.guarded() as client:
        await client.delete("token_calls:" + "L" * 44)  # as if its hour had passed
    # This process still remembers the first caller, but Redis, the shared truth, does not.
    assert 6 not in await service.on_call(call("L" * 44, OTHERS[1], 2))
    assert 6 in await service.on_call(call("L" * 44, OTHERS[2], 3))


async def test_channel_statistics_are_kept_in_redis_for_30_minutes(redis: RedisManager) -> None:
    await build(redis, [])
    async with redis.guarded() as client:
        stored = await client.get(f"channel:{GOOD.id}:info")
        ttl = await client.ttl(f"channel:{GOOD.id}:info")
    assert stored is not None and '"win_rate": 0.6' in stored
    assert 0 < ttl <= 30 * 60


async def test_a_batch_of_calls_decides_as_the_same_calls_one_by_one(redis: RedisManager) -> None:
    calls = [
        call("M" * 44, OTHERS[0], 1),
        call("N" * 44, POOR, 2, mcap=25_000),
        call("M" * 44, OTHERS[1], 3),
        call("M" * 44, GOOD, 4),
        call("N" * 44, GOOD, 5, mcap=25_000),
        call("M" * 44, GOOD, 6),
    ]
    one_by_one: list[AlertBatch] = []
    service = await build(redis, one_by_one)
    for subscriber in (
        Subscriber(telegram_id=6, filters=Filters(min_channels=2), is_admin=True),
        Subscriber(telegram_id=7, filters=Filters(min_channels=3), is_admin=True),
    ):
        service.index.upsert(subscriber)
    expected = [await service.on_call(c) for c in calls]
    async with redis.guarded() as client:
        await client.flushdb()
    batched: list[AlertBatch] = []
    fresh = await build(redis, batched)
    fresh.index = service.index
    assert await fresh.on_calls(calls) == expected
    assert sorted((a.token.address, a.telegram_ids[0]) for a in batched) == sorted(
        (a.token.address, a.telegram_ids[0]) for a in one_by_one
    )
    assert fresh.ledger.round_trips <= 2  # the batch's round trip (+ loading the script once)


async def test_a_script_flushed_from_redis_is_loaded_again(redis: RedisManager) -> None:
    sent: list[AlertBatch] = []
    service = await build(redis, sent)
    await service.on_call(call("P" * 44, OTHERS[0], 1))
    async with redis.guarded() as client:
        await client.script_flush()  # what a Redis restart does to loaded scripts
    assert sorted(await service.on_calls([call("Q" * 44, GOOD, 2), call("R" * 44, GOOD, 3)])) == [[1, 2], [1, 2]]


async def test_one_failing_call_in_a_batch_loses_none_of_the_others(redis: RedisManager) -> None:
    from services.event_queue import EventQueue
    from services.pipeline import ProcessingWorkers

    sent: list[AlertBatch] = []

    def deliver(batch: AlertBatch) -> None:
        if batch.token.address == "S" * 44:
            raise RuntimeError("the outbox refused this one")
        sent.extend(_split(batch))

    service = await build(redis, sent)
    service.deliver = deliver
    queue = EventQueue()
    for address in ("T" * 44, "S" * 44, "U" * 44):
        await queue.put(call(address, GOOD, 1))
    workers = ProcessingWorkers(queue, service, workers=1, batch=32)
    await workers.start()
    while not workers.idle:
        await asyncio.sleep(0.01)
    await workers.stop()
    assert sorted((a.token.address[0], a.telegram_ids[0]) for a in sent) == [("T", 1), ("T", 2), ("U", 1), ("U", 2)]
    assert service.stats.errors >= 1


def test_the_outbox_routes_paid_plans_first_and_keeps_the_frames_wall_clock_time() -> None:
    # Not the pipeline's own Redis work: the rendering before the claim. An admin whose plan ran
    # out is alerted, but in the free lane; the frame's receive time reaches the entry unchanged.
    subscribers = [
        Subscriber(telegram_id=21, plan_expires_at=T0 + timedelta(days=1)),
        Subscriber(telegram_id=22, is_admin=True, plan_expires_at=T0 - timedelta(days=1)),
        Subscriber(telegram_id=23, is_admin=True),
    ]
    renderer = AlertRenderer(None, SubscriberIndex(subscribers))  # type: ignore[arg-type]  # render needs no queue
    received_at = 1_795_000_000.25
    alert = renderer.render(AlertBatch((21, 22, 23), TokenInfo("R" * 40 + "pump"), (), T0, received_at))
    assert {chat: lane for chat, (_, lane) in alert.routes.items()} == {
        21: Lane.PAID_ALERT,
        22: Lane.FREE_ALERT,
        23: Lane.FREE_ALERT,
    }
    assert alert.received_at == received_at
    assert alert.for_chat(22).received_at == received_at


async def test_the_claim_script_writes_the_entries_the_outbox_encodes(redis: RedisManager) -> None:
    # The script builds each won chat's entry itself; it must be the one encode_alert gives,
    # so the outbox reads it like an entry it wrote, photo and receive time included.
    texts = (("<b>en</b>", "en line"), ("<b>ru</b>", "ru line"))
    routes = {31: (0, int(Lane.PAID_ALERT)), 32: (1, int(Lane.FREE_ALERT))}
    alert = RenderedAlert("W" * 40 + "pump", texts, routes, "https://img.example/w.png", 1_795_000_000.125)
    request = ClaimRequest(alert.token, GOOD.id, T0, {GOOD.id: T0}, [31, 32], alert)
    [result] = await AlertLedger(redis).record_and_claim_many([request])
    assert result.won == [31, 32]
    async with redis.guarded() as client:
        entries = await client.xrange(STREAM_KEY)
    assert sorted((fields for _, fields in entries), key=lambda f: f["chat"]) == [
        encode_alert(alert.for_chat(31)),
        encode_alert(alert.for_chat(32)),
    ]
    assert [decode_alert(fields) for _, fields in entries] == alert.for_chats([31, 32])
