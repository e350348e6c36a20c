"""The reports end to end: rows written as the pipeline writes them (PersistenceWriter), the
report job on a clock the test sets, the real sender, and the Telegram double receiving photos.

Each report goes once per subscriber and day: run twice, by two processes at once, or caught up
by a bot that was down at its hour."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import Settings
from bot.reports import ReportJobs
from bot.runtime import Runtime
from domain.events import CallEvent, Channel, PriceEvent, TokenInfo
from domain.reports import SCHEDULES, CallResult, ReportKind, best_channels, channel_results
from services.channel_stats import ChannelStatistics
from services.charts import Chart, ChartPainter, ChartRow
from services.persistence import PersistenceWriter
from services.reports import ReportStore
from services.sender import MessageSender
from services.subscribers import SubscriberStore
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, SentRecord
from tests.bot_env import Chat, running_bot
from tests.conftest import Stores
from tests.plans import grant

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SLOT = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)  # a Wednesday's daily report
MORNING = SLOT - timedelta(hours=10)
ANN, BORIS, CARL, DORA = 501, 502, 503, 504  # English; Russian; reports off; no alerts

PEPE = TokenInfo("Pepe111111111111111111111111111111111111", symbol="PEPE", market_cap_usd=100_000, price_usd=1e-4)
WIF = TokenInfo("Wif2222222222222222222222222222222222222", symbol="WIF", market_cap_usd=200_000, price_usd=2e-4)
OLD = TokenInfo("Old3333333333333333333333333333333333333", symbol="OLD", market_cap_usd=50_000, price_usd=5e-5)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def price_path(writer: PersistenceWriter, token: TokenInfo, start: datetime, path: list[tuple[int, float]]) -> None:
    """Price frames `minutes` after `start` at each market cap (the price follows it)."""
    assert token.market_cap_usd and token.price_usd
    for minutes, mcap in path:
        price = token.price_usd * mcap / token.market_cap_usd
        writer.price(PriceEvent(token.address, price, mcap, start + timedelta(minutes=minutes)))


async def register(store: SubscriberStore, telegram_id: int, language: str = "en") -> None:
    await store.register(telegram_id, username=None, first_name="Test", language_code=language)


async def seed_day(stores: Stores) -> SubscriberStore:
    """Ann: PEPE (peak 3x, now 1.5x) and WIF (peak 1.2x, now 0.5x) today, OLD yesterday; Boris
    (Russian): PEPE; Carl: WIF, reports off; Dora: nothing."""
    store = SubscriberStore(stores.redis, stores.postgres, stores.caches, frozenset())
    for user, language in ((ANN, "en"), (BORIS, "ru"), (CARL, "en"), (DORA, "en")):
        await register(store, user, language)
    await store.set_preferences(CARL, reports=False)
    writer = PersistenceWriter(stores.postgres)
    for token, at in ((PEPE, MORNING), (WIF, MORNING + timedelta(hours=1)), (OLD, SLOT - timedelta(hours=25))):
        writer.token(token, at)
    writer.alerts([ANN, BORIS], PEPE, ["-1001"], MORNING)
    writer.alerts([ANN, CARL], WIF, ["-1001"], MORNING + timedelta(hours=1))
    writer.alerts([ANN], OLD, ["-1001"], SLOT - timedelta(hours=25))
    price_path(writer, PEPE, MORNING, [(30, 250_000), (60, 300_000), (120, 150_000)])
    price_path(writer, WIF, MORNING + timedelta(hours=1), [(10, 240_000), (300, 100_000)])
    price_path(writer, OLD, SLOT - timedelta(hours=25), [(60, 500_000)])
    # After the report was due: a run caught up later measures up to its own moment.
    price_path(writer, PEPE, SLOT, [(60, 600_000)])
    await writer.flush()
    return store


@dataclass
class Reporting:
    server: FakeTelegramServer
    sender: MessageSender
    store: SubscriberStore
    clock: Clock

    def jobs(self, stores: Stores, **options: object) -> ReportJobs:
        return ReportJobs(ReportStore(stores.postgres), self.store, self.sender, clock=self.clock, **options)  # type: ignore[arg-type]


@pytest.fixture
async def reporting(stores: Stores) -> AsyncIterator[Reporting]:
    store = await seed_day(stores)
    async with FakeTelegramServer() as server:
        bot = server.create_bot()
        sender = MessageSender(bot)
        await sender.start()
        try:
            yield Reporting(server, sender, store, Clock(SLOT))
        finally:
            await sender.stop(drain=True, timeout=10)
            await bot.session.close()


def photos(server: FakeTelegramServer, chat_id: int) -> list[SentRecord]:
    return [record for record in server.messages_to(chat_id) if record.method == "sendPhoto"]


def assert_png_upload(record: SentRecord) -> None:
    assert record.method == "sendPhoto" and record.photo is not None
    assert record.photo.source == "upload" and record.photo.content is not None
    assert record.photo.content.startswith(PNG_SIGNATURE)
    assert (record.photo.width, record.photo.height) == (640, 360)
    assert record.message["photo"][0]["file_id"]  # Telegram's answer: a photo it keeps


async def test_the_daily_report_run_twice_sends_each_subscriber_one_photo_in_their_language(
    stores: Stores, reporting: Reporting
) -> None:
    jobs = reporting.jobs(stores)
    try:
        first = await jobs.run(ReportKind.DAILY, SLOT)
        second = await jobs.run(ReportKind.DAILY, SLOT)
        reporting.clock.now = SLOT + timedelta(hours=2)
        third = await jobs.run_due(ReportKind.DAILY)  # the scheduler's own call, later the same evening
    finally:
        await jobs.close()
    assert (first.candidates, first.claimed, first.sent) == (2, 2, 2)
    assert second.candidates == second.claimed == 0
    assert third is not None and third.claimed == 0
    server = reporting.server
    [ann] = server.messages_to(ANN)
    assert_png_upload(ann)
    caption = ann.caption or ""
    assert "Your alerts of the day" in caption and "24 h to 2026-12-02 20:00 UTC" in caption
    assert "Alerts: 2 · reached 2x: 1" in caption and "Best: PEPE 3.0x" in caption
    assert "1. PEPE: peak 3.0x · now 1.5x" in caption and "2. WIF: peak 1.2x · now 0.50x" in caption
    assert "OLD" not in caption  # alerted before the period
    [boris] = server.messages_to(BORIS)
    assert_png_upload(boris)
    assert "Ваши оповещения за день" in (boris.caption or "") and "пик 3.0x · сейчас 1.5x" in (boris.caption or "")
    assert server.messages_to(CARL) == []  # reports switched off
    assert server.messages_to(DORA) == []  # no alerts that day: no report
    rows = await stores.postgres.fetch(
        "SELECT u.telegram_id, r.status, r.message_id FROM report_deliveries r JOIN users u ON u.id = r.user_id"
        " WHERE r.kind = 'daily' AND r.day = $1 ORDER BY u.telegram_id",
        SLOT.date(),
    )
    assert [(r["telegram_id"], r["status"], r["message_id"]) for r in rows] == [
        (ANN, "sent", ann.message_id),
        (BORIS, "sent", boris.message_id),
    ]


async def test_a_daily_report_too_long_for_a_caption_sends_the_chart_then_the_text(
    stores: Stores, reporting: Reporting
) -> None:
    writer = PersistenceWriter(stores.postgres)
    for i in range(40):
        token = TokenInfo(f"Many{i:036d}", symbol=f"TOKEN{i:02d}", market_cap_usd=10_000 + i, price_usd=1e-5)
        at = MORNING + timedelta(minutes=i)
        writer.token(token, at)
        writer.alerts([DORA], token, ["-1001"], at)
        price_path(writer, token, at, [(5, 10_000 + i + 1_000 * i)])
    await writer.flush()
    jobs = reporting.jobs(stores)
    try:
        await jobs.run(ReportKind.DAILY, SLOT)
    finally:
        await jobs.close()
    chart, listing = reporting.server.messages_to(DORA)
    assert_png_upload(chart)
    assert "Alerts: 40" in (chart.caption or "") and "TOKEN" not in (chart.caption or "").split("Best:")[0]
    assert listing.method == "sendMessage"
    assert (listing.text or "").startswith("1. TOKEN39: peak") and "…and 10 more" in (listing.text or "")


async def test_two_processes_running_the_daily_report_at_once_send_it_once(
    stores: Stores, reporting: Reporting
) -> None:
    crowd = list(range(7000, 7030))
    for user in crowd:
        await register(reporting.store, user)
    writer = PersistenceWriter(stores.postgres)
    writer.alerts(crowd, PEPE, ["-1001"], MORNING + timedelta(minutes=5))
    await writer.flush()
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG")}
    env.update(
        DATABASE_URL=stores.database_url,
        REDIS_URL=stores.redis_url,
        TELEGRAM_API_URL=reporting.server.base_url,
        PYTHONPATH=str(ROOT),
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.report_process",
            "daily",
            SLOT.isoformat(),
            env=env,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:  # both connected before either runs
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line.strip() == b"ready", line
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        results = [await asyncio.wait_for(process.communicate(), 60) for process in processes]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    summaries = []
    for process, (out, err) in zip(processes, results):
        assert process.returncode == 0, err.decode()
        summaries.append(json.loads(out.decode().strip().splitlines()[-1]))
    everyone = [ANN, BORIS, *crowd]
    assert sum(s["claimed"] for s in summaries) == sum(s["sent"] for s in summaries) == len(everyone)
    for user in everyone:
        assert len(photos(reporting.server, user)) == 1, user


def settings_for(server: FakeTelegramServer, stores: Stores, tmp_path: Path) -> Settings:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return Settings(
        _env_file=None,
        bot_token=DEFAULT_TOKEN,
        telegram_api_url=server.base_url,
        redis_url=stores.redis_url,
        database_url=stores.database_url,
        http_port=port,
        log_dir=tmp_path / "logs",
    )


async def test_a_bot_down_at_20_sends_the_daily_report_when_it_starts_and_not_again_after_a_restart(
    stores: Stores, tmp_path: Path
) -> None:
    await seed_day(stores)
    async with FakeTelegramServer() as server:
        late = Clock(SLOT + timedelta(minutes=40))  # down at 20:00, started at 20:40
        runtime = Runtime(settings_for(server, stores, tmp_path), clock=late)
        await runtime.start()
        try:
            await server.wait_for_sent(lambda r: r.chat_id in (ANN, BORIS) and r.method == "sendPhoto", 30, count=2)
        finally:
            await runtime.stop()
        again = Runtime(settings_for(server, stores, tmp_path), clock=Clock(SLOT + timedelta(hours=1)))
        await again.start()
        try:
            summaries = await again.reports.catch_up()
        finally:
            await again.stop()
    # At 21:00 the best of the day is due as well: no call was measured, so it has nothing to say.
    assert [(s.kind, s.claimed) for s in summaries] == [(ReportKind.DAILY, 0), (ReportKind.BEST, 0)]
    assert len(photos(server, ANN)) == len(photos(server, BORIS)) == 1
    assert server.messages_to(CARL) == server.messages_to(DORA) == []


async def test_a_report_more_than_its_grace_late_is_not_sent(stores: Stores, reporting: Reporting) -> None:
    reporting.clock.now = SLOT + SCHEDULES[ReportKind.DAILY].grace + timedelta(minutes=1)
    jobs = reporting.jobs(stores)
    try:
        assert await jobs.run_due(ReportKind.DAILY) is None
    finally:
        await jobs.close()
    assert reporting.server.messages_to(ANN) == []


async def test_the_reports_switch_on_status_stops_and_restarts_the_reports(stores: Stores) -> None:
    await seed_day(stores)
    async with running_bot(stores) as env:
        chat = Chat(env.server, ANN, handled=env.handled)
        await chat.say("/status")
        screen = await chat.press("Reports: on")
        assert "Reports are <b>on</b>" in screen.text or "Reports are on" in screen.text
        screen = await chat.press("Turn reports off")
        assert "Reports are off" in screen.text and "Turn reports on" in screen.labels()
        assert (await env.store.get(ANN)).reports is False  # type: ignore[union-attr]
        saved = await stores.postgres.fetchval(
            "SELECT s.reports FROM user_settings s JOIN users u ON u.id = s.user_id WHERE u.telegram_id = $1", ANN
        )
        assert saved is False
        jobs = ReportJobs(ReportStore(stores.postgres), env.store, env.sender, clock=Clock(SLOT))
        try:
            off = await jobs.run(ReportKind.DAILY, SLOT)
            assert off.claimed == 1 and photos(env.server, ANN) == []  # Boris's only
            await chat.press("Turn reports on")  # back on the same evening: the report is still due
            on = await jobs.run(ReportKind.DAILY, SLOT)
        finally:
            await jobs.close()
        assert on.claimed == 1
        [report] = photos(env.server, ANN)
        assert "PEPE" in (report.caption or "")


async def test_best_of_the_day_and_the_weekly_channels_go_to_subscribers_with_a_plan(
    stores: Stores, reporting: Reporting
) -> None:
    store = reporting.store
    for user in (ANN, BORIS):
        await grant(store, user, 30, clock=lambda: SLOT - timedelta(days=10))
    writer = PersistenceWriter(stores.postgres)
    alpha, beta = Channel("-1001", name="Alpha Calls"), Channel("-1002", username="beta")
    for channel in (alpha, beta):
        writer.channel(channel)
    # Alpha: 5 calls over the week before Monday 09:00, 3 of them reaching 2x; Beta: 2 calls.
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    for i, peak in enumerate((3.0, 2.5, 1.5, 2.0, 1.1)):
        token = TokenInfo(f"Week{i:036d}", symbol=f"W{i}", market_cap_usd=50_000, price_usd=5e-5)
        at = monday - timedelta(days=6, hours=-i)
        writer.token(token, at)
        writer.call(CallEvent(token, alpha, at))
        price_path(writer, token, at, [(30, 50_000 * peak), (90, 40_000)])
        if i < 2:
            writer.call(CallEvent(token, beta, at + timedelta(minutes=1)))
    # Best of Wednesday: PEPE called by both at 10:00 (6x by 21:00), WIF by Alpha at 11:00.
    writer.call(CallEvent(PEPE, alpha, MORNING))
    writer.call(CallEvent(PEPE, beta, MORNING + timedelta(minutes=2)))
    writer.call(CallEvent(WIF, alpha, MORNING + timedelta(hours=1)))
    await writer.flush()
    # The week's calls are measured by the channel statistics job, as every 15 minutes live.
    await ChannelStatistics(stores.postgres).refresh(now=monday + timedelta(minutes=50))
    best_slot = SLOT.replace(hour=21)
    reporting.clock.now = best_slot
    jobs = reporting.jobs(stores)
    try:
        best = await jobs.run(ReportKind.BEST, best_slot)
        again = await jobs.run(ReportKind.BEST, best_slot)
        reporting.clock.now = monday + timedelta(hours=1)
        weekly = await jobs.run(ReportKind.WEEKLY, monday)
    finally:
        await jobs.close()
    assert (best.claimed, again.claimed, weekly.claimed) == (2, 0, 2)
    server = reporting.server
    best_ann, weekly_ann = photos(server, ANN)
    assert_png_upload(best_ann)
    best_text = best_ann.caption or ""
    assert "Best of the day" in best_text and "24 h to 2026-12-02 21:00 UTC" in best_text
    assert "1. PEPE: 6.0x · now 6.0x · channels: 2\n2. WIF: 1.2x · now 0.50x · channels: 1" in best_text
    assert "1. Alpha Calls: 1/2 · best 6.0x" in best_text and "@beta" not in best_text  # one call that day
    assert_png_upload(weekly_ann)
    weekly_text = weekly_ann.caption or ""
    assert "Channels of the week" in weekly_text and "7 days to 2026-11-30 09:00 UTC" in weekly_text
    assert "1. Alpha Calls: 60% won (3/5) · mean 2.0x · median 2.0x" in weekly_text
    assert "@beta" not in weekly_text  # two calls: too few to rank
    best_boris, weekly_boris = photos(server, BORIS)
    assert "Лучшее за день" in (best_boris.caption or "") and "Каналы за неделю" in (weekly_boris.caption or "")
    assert server.messages_to(CARL) == server.messages_to(DORA) == []  # no plan; Carl also switched off


def test_the_schedules_slots_and_grace() -> None:
    daily, weekly = SCHEDULES[ReportKind.DAILY], SCHEDULES[ReportKind.WEEKLY]
    assert daily.latest_slot(SLOT - timedelta(seconds=1)) == SLOT - timedelta(days=1)
    assert daily.due(SLOT + timedelta(hours=5)) == SLOT
    assert daily.due(SLOT + timedelta(hours=7)) is None
    assert daily.window(SLOT) == (SLOT - timedelta(days=1), SLOT)
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert weekly.latest_slot(SLOT) == monday and weekly.due(SLOT) is None
    assert weekly.due(monday + timedelta(hours=23)) == monday
    assert weekly.latest_slot(monday - timedelta(minutes=1)) == monday - timedelta(days=7)


async def test_the_scheduler_runs_each_report_on_its_utc_cron_slot(stores: Stores, reporting: Reporting) -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

    scheduler = AsyncIOScheduler(timezone=UTC)
    jobs = reporting.jobs(stores)
    jobs.schedule(scheduler)
    after = datetime(2026, 12, 2, 20, 30, tzinfo=UTC)  # a Wednesday evening
    expected = {
        "report-daily": datetime(2026, 12, 3, 20, 0, tzinfo=UTC),
        "report-best": datetime(2026, 12, 2, 21, 0, tzinfo=UTC),
        "report-weekly": datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
    }
    for job_id, when in expected.items():
        job = scheduler.get_job(job_id)
        assert job.trigger.get_next_fire_time(None, after) == when
        assert job.coalesce and job.max_instances == 1 and job.misfire_grace_time >= 6 * 3600
    await jobs.close()


def test_channel_results_by_hand() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)

    def call(channel: str, peak: float | None, n: int) -> CallResult:
        return CallResult(f"T{n}", None, channel, None, at + timedelta(minutes=n), peak, None)

    calls = [call("a", 2.0, 1), call("a", 30.0, 2), call("a", 1.0, 3), call("a", None, 4), call("b", 5.0, 5)]
    a, b = sorted(channel_results(calls), key=lambda r: r.channel_id)
    # a: 4 calls, 3 measured; won 2 (2x and 30x); median 2x; mean with 30x capped at 10x.
    assert (a.calls, a.measured, a.won, a.median_peak, a.best_peak) == (4, 3, 2, 2.0, 30.0)
    assert a.mean_peak == pytest.approx((2.0 + 10.0 + 1.0) / 3) and a.win_rate == pytest.approx(2 / 3)
    assert best_channels([a, b], min_calls=2) == [a]  # b has one call


def test_a_chart_is_a_png_and_survives_symbols_matplotlib_would_misread() -> None:
    painter = ChartPainter()
    rows = (ChartRow("$PEPE 🐸", 3.0, 1.5, "3.0x"), ChartRow("", None, None), ChartRow("x" * 40, 1e9, 0.0, "1e9x"))
    chart = Chart("Your alerts · $5 🐸", rows, "multiple", ("peak", "now"))
    png = painter.render(chart)
    assert png.startswith(PNG_SIGNATURE) and int.from_bytes(png[16:20], "big") == 640
    assert painter.render(chart) == png  # drawn again from the kept layout and texts: the same picture
