"""The composition root: opens the stores, builds the bot and the dispatcher, serves HTTP, stops cleanly.

`alertbot run` and `alertbot demo` both go through `Runtime`, so the demo always exercises the
real start-up, handlers and shut-down. `start` builds every part once and keeps them in `Parts`;
handlers get the services of `bot.container.Services` through the dispatcher.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import logging
import signal
import socket
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, BotCommandScopeChat
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from bot.broadcasts import BroadcastProgress
from bot.config import Settings, SettingsError, require
from bot.container import Services, build_services
from bot.followups import FollowUpNotifier, FollowUps
from bot.fsm_storage import ManagedRedisStorage
from bot.middlewares.counting import UpdateCounter
from bot.middlewares.flood_control import PacedRequestsMiddleware
from bot.middlewares.throttling import FloodGate, attach_throttling
from bot.notices import NoticeDelivery
from bot.reports import ReportJobs, utc_now
from bot.routers import get_routers
from bot.texts import DEFAULT_LANGUAGE, TEXTS, duration, text
from domain.alert_text import DigestPart, render_digest
from domain.feed_adapters import parse_alert_frame, pumpportal_parser, pumpportal_url
from domain.matching import SubscriberIndex
from domain.messages import Alert
from managers.circuit_breaker import CircuitState
from managers.embedded_postgres import start_embedded_postgres
from managers.embedded_redis import EmbeddedRedisUnavailable, start_embedded_redis
from managers.migrations import apply_migrations
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager, RedisOptions
from managers.stream import StreamManager, SubscriptionSet
from payments.ledger import PaymentLedger
from payments.nowpayments import NowPaymentsClient, invoice_maker, ipn_callback_url
from payments.nowpayments_ipn import NowPaymentsIpn, Underpaid
from payments.records import NoticeKind, PaymentNotice
from payments.reminders import PlanReminders
from payments.sol_rpc import SolRpc
from payments.sol_watcher import SolOutcome, SolWatcher
from payments.solana_pay import sol_requester
from services.alert_renderer import AlertRenderer
from services.broadcast import Broadcasts
from services.cache import CacheRegistry
from services.channel_stats import REFRESH_MINUTES, ChannelStatistics
from services.channels import ChannelDirectory
from services.dedup import AlertLedger, seed_from_history
from services.event_queue import EventQueue
from services.http_api import ServingFlag, build_http_app
from services.index_sync import IndexSync
from services.metrics import Metrics, NumbersProvider
from services.monitoring import AdminNotice, Monitor, MonitorSettings
from services.multiplier import MultiplierTracker
from services.outbox import Outbox
from services.persistence import PersistenceWriter
from services.pipeline import CallPipeline, ProcessingWorkers
from services.price_sources import DexScreenerPoller, TradeSubscriptions
from services.reports import ReportStore
from services.sender import DigestPolicy, MessageSender
from services.sol_price import SolPriceSource
from services.subscribers import StoreUnavailable, SubscriberStore, UnknownSubscriber

logger = logging.getLogger("alertbot.runtime")

DEFAULT_DATA_DIR = Path("./data")

# The command menu Telegram shows, in the order shown; descriptions are texts "cmd_<command>".
MENU_COMMANDS: tuple[str, ...] = (
    "start",
    "settings",
    "filters",
    "presets",
    "status",
    "plans",
    "channels",
    "pause",
    "resume",
    "language",
    "help",
    "privacy",
    "paysupport",
)


# What admins see besides: descriptions are texts "admincmd_<command>".
ADMIN_MENU_COMMANDS: tuple[str, ...] = (
    "admin",
    "stats",
    "user",
    "payments",
    "channels",
    "export",
    "broadcast",
    "ban",
    "unban",
    "grant",
    "revoke",
    "refund",
)


def bot_commands(language: str) -> list[BotCommand]:
    return [BotCommand(command=name, description=text(f"cmd_{name}", language)) for name in MENU_COMMANDS]


def admin_commands(language: str) -> list[BotCommand]:
    """The subscribers' menu and the admins' commands (a chat's own menu replaces the default)."""
    extra = [name for name in ADMIN_MENU_COMMANDS if name not in MENU_COMMANDS]
    return [
        *bot_commands(language),
        *(BotCommand(command=name, description=text(f"admincmd_{name}", language)) for name in extra),
    ]


PIPELINE_WORKERS = 4
REMINDER_SECONDS = 600  # how often plan ends are checked for reminders
ORDER_SWEEP_SECONDS = 60  # how often orders whose time ran out are closed
API_CONCURRENCY = 10


def create_bot(token: str, api_url: str, pacing: PacedRequestsMiddleware | None = None) -> Bot:
    """The bot's own requests pass `pacing`, which paces them once a sender is attached to it."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
    session.middleware(pacing or PacedRequestsMiddleware())
    return Bot(token=token, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def build_dispatcher(
    services: Services,
    *,
    settings: Settings,
    redis: RedisManager | None = None,
    flood_gate: FloodGate | None = None,
    **dependencies: Any,
) -> Dispatcher:
    """Routers wired in one place; `settings`, each of `services` and `dependencies` (the `sender`)
    reach every handler by parameter name.

    With `redis`, multi-step flows keep their state in Redis for 30 days; without, in memory. The
    handlers never get `redis` itself. Every user's updates pass a per-user flood gate first.
    """
    if "storage" not in dependencies and redis is not None:
        dependencies["storage"] = ManagedRedisStorage(redis)
    dispatcher = Dispatcher(**services.workflow_data(), settings=settings, **dependencies)
    metrics = dependencies.get("metrics")
    if isinstance(metrics, Metrics):
        dispatcher.update.outer_middleware(UpdateCounter(metrics))
    attach_throttling(dispatcher, flood_gate)
    dispatcher.include_routers(*get_routers())
    return dispatcher


def webhook_secret(token: str) -> str:
    """A secret Telegram echoes on every webhook call, derived so the operator need not set one."""
    return hashlib.sha256(f"webhook:{token}".encode()).hexdigest()[:64]


@dataclass(frozen=True)
class NowPaymentsRail:
    client: NowPaymentsClient
    ipn: NowPaymentsIpn
    callback_url: str


@dataclass(frozen=True)
class Parts:
    """Everything `Runtime.start` builds, each once; none of it optional."""

    redis: RedisManager
    postgres: PostgresManager
    bot: Bot
    caches: CacheRegistry
    services: Services
    index_sync: IndexSync
    persistence: PersistenceWriter
    sender: MessageSender
    delivery: Outbox
    broadcasts: Broadcasts
    service: CallPipeline
    workers: ProcessingWorkers
    dispatcher: Dispatcher
    # The payment rails the operator configured (NOWPAYMENTS_*, SOL_RECEIVER); None = off.
    nowpayments: NowPaymentsRail | None
    sol: SolWatcher | None
    reports: ReportJobs


class FeedHelper(Protocol):
    """Something a feed reads while it parses, started before the feed and shown in health."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Feed:
    """One incoming feed: its stream, and the helpers it needs running, by health name
    (PumpPortal's SOL price; the contract's feed needs none)."""

    stream: StreamManager
    helpers: Mapping[str, FeedHelper] = field(default_factory=dict)


@dataclass
class Runtime:
    settings: Settings
    data_dir: Path = DEFAULT_DATA_DIR
    # The demo keeps its embedded database in a throw-away folder, `run` under ./data.
    ephemeral_data: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    serving: ServingFlag = field(default_factory=ServingFlag)
    pipeline_workers: int = PIPELINE_WORKERS
    # Passed to every StreamManager (timings); tests shorten the reconnect delays.
    stream_options: dict[str, Any] = field(default_factory=dict)
    index: SubscriberIndex = field(default_factory=SubscriberIndex)
    # The Redis stream consumer; stable across restarts so a restart resumes its own sends.
    consumer_name: str = field(default_factory=lambda: f"sender-{socket.gethostname()}")
    shutdown_drain_seconds: float = 10.0
    # Calls to outside APIs (Solana RPC, later NOWPayments) share one bound, so a slow provider
    # cannot pile up requests.
    api_limit: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(API_CONCURRENCY))
    queue: EventQueue = field(default_factory=EventQueue)
    feeds: tuple[Feed, ...] = ()  # built once, when receiving begins
    pacing: PacedRequestsMiddleware = field(default_factory=PacedRequestsMiddleware)
    # Timed work (reminders, order expiry, channel statistics, reports), UTC; started with the parts.
    scheduler: AsyncIOScheduler = field(default_factory=lambda: AsyncIOScheduler(timezone=UTC))
    http_port: int | None = None
    # Options for the Redis manager (tests shorten the circuit breaker's cool-down).
    redis_options: RedisOptions | None = None
    followups: FollowUps | None = None  # built by start()
    # What time it is for the reports (which slot is due); tests set it.
    clock: Callable[[], datetime] = utc_now
    _parts: Parts | None = None
    _monitor: Monitor | None = None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _polling: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        if self.settings.consumer_name:
            self.consumer_name = self.settings.consumer_name

    @property
    def streams(self) -> list[StreamManager]:
        return [feed.stream for feed in self.feeds]

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise RuntimeError("the runtime has not started")
        return self._parts

    # The parts most callers want, by name (each raises RuntimeError before `start`).
    @property
    def redis(self) -> RedisManager:
        return self.parts.redis

    @property
    def postgres(self) -> PostgresManager:
        return self.parts.postgres

    @property
    def bot(self) -> Bot:
        return self.parts.bot

    @property
    def dispatcher(self) -> Dispatcher:
        return self.parts.dispatcher

    @property
    def store(self) -> SubscriberStore:
        return self.parts.services.store

    @property
    def ledger(self) -> PaymentLedger:
        return self.parts.services.ledger

    @property
    def index_sync(self) -> IndexSync:
        return self.parts.index_sync

    @property
    def persistence(self) -> PersistenceWriter:
        return self.parts.persistence

    @property
    def sender(self) -> MessageSender:
        return self.parts.sender

    @property
    def delivery(self) -> Outbox:
        return self.parts.delivery

    @property
    def service(self) -> CallPipeline:
        return self.parts.service

    @property
    def workers(self) -> ProcessingWorkers:
        return self.parts.workers

    @property
    def monitor(self) -> Monitor:
        if self._monitor is None:
            raise RuntimeError("the runtime has not started")
        return self._monitor

    @property
    def reports(self) -> ReportJobs:
        return self.parts.reports

    async def health(self) -> dict[str, Any]:
        """Every part's state in detail (URLs and last errors included, for logs and admins);
        /health shows only the public view of it (`services.http_api.public_health`), cached."""
        parts: dict[str, Any] = {}
        running = self._parts
        parts["redis"] = running.redis.health() if running else {"status": "down"}
        parts["postgres"] = await running.postgres.health() if running else {"status": "down"}
        if self.streams:
            states = [stream.health() for stream in self.streams]
            parts["stream"] = (
                states[0]
                if len(states) == 1
                else {"status": "ok" if all(s["status"] == "ok" for s in states) else "degraded", "feeds": states}
            )
        else:
            parts["stream"] = {"status": "off", "reason": "STREAM_URL and PUMPPORTAL_URL are unset"}
        parts["queue"] = self.queue.health()
        for feed in self.feeds:
            for name, helper in feed.helpers.items():
                parts[name] = helper.health()
        return parts

    async def open_stores(self) -> tuple[RedisManager, PostgresManager]:
        """Redis and PostgreSQL started (embedded ones when their URLs are unset), migrations applied."""
        settings = self.settings
        # Redis first: without REDIS_URL and a server to embed, `run` refuses before it has
        # touched PostgreSQL.
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        if redis_url is None and self.ephemeral_data:
            logger.info("REDIS_URL is unset: using the embedded in-memory Redis stand-in")
        elif redis_url is None:
            # The outbox and the dedup records must outlive the process: a real server of our
            # own, its append-only file under the data folder.
            try:
                server = await start_embedded_redis(self.data_dir / "redis")
            except EmbeddedRedisUnavailable as exc:
                raise SettingsError("REDIS_URL", f"missing, and {exc}") from None
            self._stack.push_async_callback(server.stop)
            redis_url = server.url
            logger.info("REDIS_URL is unset: using the embedded Redis server under %s", server.data_dir)

        if settings.database_url is not None:
            dsn = settings.database_url.get_secret_value()
        else:
            folder = Path(tempfile.mkdtemp(prefix="abdemo")) if self.ephemeral_data else self.data_dir
            embedded = await asyncio.to_thread(start_embedded_postgres, folder / "postgres")
            self._stack.callback(embedded.stop)
            dsn = embedded.dsn
            logger.info("using the embedded PostgreSQL under %s", folder)
        applied = await apply_migrations(dsn)
        if applied:
            logger.info("applied migrations: %s", ", ".join(applied))
        postgres = PostgresManager(dsn)
        await postgres.start()
        self._stack.push_async_callback(postgres.close)

        redis = RedisManager.from_url(redis_url, self.redis_options)
        await redis.start()
        self._stack.push_async_callback(redis.close)
        self.metrics.components.add("redis", redis.metrics)
        return redis, postgres

    async def start(self) -> None:
        """Everything up to, not including, receiving updates; on failure, undoes what it opened."""
        require(self.settings, "BOT_TOKEN")
        token = self.settings.bot_token.get_secret_value() if self.settings.bot_token else ""
        try:
            redis, postgres = await self.open_stores()
            bot = create_bot(token, self.settings.telegram_api_url, self.pacing)
            self._stack.push_async_callback(bot.session.close)
            self._parts = await self._start_pipeline(redis, postgres, bot)
            await self._start_followups(self._parts)
            self.scheduler.start()
            self._stack.callback(self.scheduler.shutdown, wait=False)
            self._register_metrics()
            await self._start_http()
            await self._start_monitoring()
            # The default list in English, and each language's own for users whose Telegram
            # speaks it (Telegram picks by the user's language_code).
            await bot.set_my_commands(bot_commands(DEFAULT_LANGUAGE))
            for language in TEXTS:
                if language != DEFAULT_LANGUAGE:
                    await bot.set_my_commands(bot_commands(language), language_code=language)
            await self._set_admin_commands(bot)
        except BaseException:
            await self._stack.aclose()
            raise

    async def _set_admin_commands(self, bot: Bot) -> None:
        """Each admin's chat gets a menu with the admin commands too, in each language."""
        for admin_id in sorted(self.settings.admin_id_set):
            scope = BotCommandScopeChat(chat_id=admin_id)
            try:
                await bot.set_my_commands(admin_commands(DEFAULT_LANGUAGE), scope=scope)
                for language in TEXTS:
                    if language != DEFAULT_LANGUAGE:
                        await bot.set_my_commands(admin_commands(language), scope=scope, language_code=language)
            except TelegramAPIError as exc:
                # Telegram knows no chat with an admin who never wrote to the bot; the commands
                # work all the same, only the menu does not show them.
                logger.warning("command menu of admin %s not set: %s", admin_id, exc)

    async def _start_pipeline(self, redis: RedisManager, postgres: PostgresManager, bot: Bot) -> Parts:
        """Subscribers, matching, dedup, persistence, sending and the dispatcher; the feeds start
        with receiving."""
        caches = CacheRegistry(redis)
        await caches.start()
        self._stack.push_async_callback(caches.stop)
        settings = self.settings
        nowpayments_client = self._nowpayments_client()
        services = build_services(
            redis,
            postgres,
            caches,
            settings.admin_id_set,
            referral_days=settings.referral_days,
            sol_order_minutes=settings.sol_order_minutes,
            sol=sol_requester(settings.sol_receiver) if settings.sol_receiver else None,
            nowpayments=(
                invoice_maker(nowpayments_client, ipn_callback_url(settings.public_base_url or ""))
                if nowpayments_client
                else None
            ),
        )
        writer = services.ledger.writer
        await writer.start()
        self._stack.push_async_callback(writer.stop)
        # Closed before the writer stops: Stars payments still waiting for the stores are logged.
        self._stack.push_async_callback(services.stars.close)
        try:
            # The match index is read from PostgreSQL: let it catch up on plans paid meanwhile.
            await writer.drained(timeout=5)
        except TimeoutError:
            logger.warning("payments queue not yet written to PostgreSQL; plans follow as it is")
        index_sync = IndexSync(services.store, self.index)
        await index_sync.load()
        persistence = PersistenceWriter(postgres)
        await persistence.start()
        self._stack.push_async_callback(persistence.stop)
        ledger = AlertLedger(redis)
        if redis.embedded:
            seeded = await seed_from_history(ledger, postgres)
            logger.info("rebuilt %d alert records from PostgreSQL into the embedded Redis", seeded)
        settings = self.settings
        store = services.store

        async def recipient_gone(chat_id: int, reason: str) -> None:
            await self._recipient_gone(store, chat_id, reason)

        sender = MessageSender(
            bot,
            on_gone=recipient_gone,
            paid_broadcast=settings.paid_broadcast,
            digest=DigestPolicy(
                self._render_digest, threshold=settings.alert_digest_threshold, max_delay=settings.alert_max_delay
            ),
        )
        await sender.start()
        self.pacing.attach(sender)
        delivery = Outbox(redis, postgres, sender, consumer=self.consumer_name)
        await delivery.start()

        async def stop_delivery() -> None:
            await self._stop_delivery(delivery, sender, drain=redis.embedded)

        self._stack.push_async_callback(stop_delivery)
        # Stopped before the sender (the stack unwinds in reverse): no recipient is handed to a
        # sender that is stopping.
        broadcasts = Broadcasts(
            redis,
            sender,
            services.admin_queries.audience,
            on_progress=BroadcastProgress(bot),
            consumer=self.consumer_name,
        )
        await broadcasts.start()
        self._stack.push_async_callback(broadcasts.stop)
        await self._start_payments(services, sender)
        reports = self._start_reports(services, postgres, sender)
        nowpayments = self._nowpayments_rail(services.ledger, nowpayments_client)
        sol = await self._sol_rail(services.ledger)
        channels = ChannelDirectory(redis, postgres, caches, persistence)
        await self._start_channel_stats(postgres, channels)
        service = CallPipeline(
            index=self.index,
            ledger=ledger,
            channels=channels,
            renderer=AlertRenderer(delivery, self.index),
            persistence=persistence,
        )
        workers = ProcessingWorkers(self.queue, service, self.pipeline_workers)
        await workers.start()
        self._stack.push_async_callback(workers.stop)
        dispatcher = build_dispatcher(
            services,
            settings=settings,
            redis=redis,
            metrics=self.metrics,
            sender=sender,
            broadcasts=broadcasts,
            health=self.health,
        )
        return Parts(
            redis=redis,
            postgres=postgres,
            bot=bot,
            caches=caches,
            services=services,
            index_sync=index_sync,
            persistence=persistence,
            sender=sender,
            delivery=delivery,
            broadcasts=broadcasts,
            service=service,
            workers=workers,
            dispatcher=dispatcher,
            nowpayments=nowpayments,
            sol=sol,
            reports=reports,
        )

    async def _start_payments(self, services: Services, sender: MessageSender) -> None:
        """Payment notices to the sender, and the timed work: reminders before plans end, and
        orders whose time ran out."""
        notices = NoticeDelivery(services.ledger.redis, sender, services.store)
        await notices.start()
        self._stack.push_async_callback(notices.stop)
        reminders = PlanReminders(services.ledger.redis, services.ledger.notices.post)
        self._every(REMINDER_SECONDS, reminders.run_once)
        self._every(ORDER_SWEEP_SECONDS, services.ledger.expire_orders)

    async def _start_channel_stats(self, postgres: PostgresManager, channels: ChannelDirectory) -> None:
        """The bot's own channel figures, recomputed every REFRESH_MINUTES (the first soon after
        start); changed ones reach the channel directory, so filters use them at once."""
        statistics = ChannelStatistics(postgres, channels)

        async def refresh() -> None:
            try:
                await statistics.refresh()
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the next run catches up
                logger.warning("channel statistics not refreshed: %s: %s", type(exc).__name__, exc)

        self._every(REFRESH_MINUTES * 60, refresh)

    def _every(self, seconds: float, job: Callable[[], Awaitable[Any]]) -> None:
        """`job` on the runtime's scheduler every `seconds`, the first run soon after start; a run
        still going when the next is due is not doubled, and runs missed while busy are one."""
        soon = datetime.now(UTC) + timedelta(seconds=5)
        self.scheduler.add_job(job, "interval", seconds=seconds, next_run_time=soon, max_instances=1, coalesce=True)

    def _start_reports(self, services: Services, postgres: PostgresManager, sender: MessageSender) -> ReportJobs:
        """The reports on their UTC slots, and at once the ones missed while the bot was down."""
        reports = ReportJobs(
            ReportStore(postgres), services.store, sender, admin_ids=self.settings.admin_id_set, clock=self.clock
        )
        self._stack.push_async_callback(reports.close)
        reports.schedule(self.scheduler)
        # No limit on lateness: the runs themselves check which reports are still due.
        self.scheduler.add_job(reports.catch_up, "date", run_date=datetime.now(UTC), misfire_grace_time=None)
        return reports

    async def _start_followups(self, parts: Parts) -> None:
        """Multiplier follow-ups: every price reaching the queue goes to the tracker; tokens no
        source priced lately are asked of DexScreener (DEXSCREENER_URL), and with a PumpPortal
        key their trades are subscribed on the PumpPortal stream once it runs."""
        settings = self.settings
        tracker = MultiplierTracker(parts.redis, parts.postgres, self.index, rules=settings.tracking_rules)
        tracker.notify = FollowUpNotifier(parts.sender, self.index, tracker)
        self.queue.price_listeners.append(tracker.on_price)
        poller = None
        if settings.dexscreener_url:
            stale_after = timedelta(seconds=settings.price_stale_seconds)
            poller = DexScreenerPoller(
                settings.dexscreener_url,
                lambda: tracker.stale(stale_after),
                self.queue.put,
                rate=settings.dexscreener_rate,
                api_limit=self.api_limit,
            )
        trades = None
        if settings.pumpportal_url and settings.pumpportal_api_key:
            trades = TradeSubscriptions(
                lambda: next((s for s in self.streams if s.name == "pumpportal"), None), tracker.addresses
            )
        self.followups = FollowUps(tracker, poller, trades)
        await self.followups.start()
        self._stack.push_async_callback(self.followups.stop)
        self.metrics.components.add("followups", self.followups.numbers)

    def _nowpayments_client(self) -> NowPaymentsClient | None:
        """With NOWPAYMENTS_API_KEY, NOWPAYMENTS_IPN_SECRET and PUBLIC_BASE_URL, the API client."""
        settings = self.settings
        if not (settings.nowpayments_api_key and settings.nowpayments_ipn_secret and settings.public_base_url):
            return None
        client = NowPaymentsClient(
            settings.nowpayments_api_url, settings.nowpayments_api_key.get_secret_value(), self.api_limit
        )
        self._stack.push_async_callback(client.close)
        return client

    def _nowpayments_rail(self, ledger: PaymentLedger, client: NowPaymentsClient | None) -> NowPaymentsRail | None:
        settings = self.settings
        if client is None or settings.nowpayments_ipn_secret is None or settings.public_base_url is None:
            return None

        async def underpaid(notice: Underpaid) -> None:
            values = {"paid": f"{notice.paid:f}", "missing": f"{notice.missing:f}", "currency": notice.currency}
            await ledger.notices.post(PaymentNotice(notice.telegram_id, NoticeKind.PARTIAL, values))

        ipn = NowPaymentsIpn(ledger, settings.nowpayments_ipn_secret.get_secret_value(), notify_underpaid=underpaid)
        self._stack.push_async_callback(ipn.drain)
        return NowPaymentsRail(client, ipn, ipn_callback_url(settings.public_base_url))

    async def _sol_rail(self, ledger: PaymentLedger) -> SolWatcher | None:
        """With SOL_RECEIVER, a watcher that finds the orders' transactions on chain."""
        settings = self.settings
        if not settings.sol_receiver:
            return None
        rpc = SolRpc(settings.solana_rpc_url, self.api_limit)
        self._stack.push_async_callback(rpc.close)

        async def not_paid(outcome: SolOutcome) -> None:
            values = {"signature": outcome.signature, "verdict": str(outcome.verdict or "")}
            await ledger.notices.post(PaymentNotice(outcome.telegram_id, NoticeKind.NOT_PAID, values))

        watcher = SolWatcher(ledger, rpc, settings.sol_receiver, not_paid, tolerance=settings.sol_amount_tolerance)
        await watcher.start()
        self._stack.push_async_callback(watcher.stop)
        return watcher

    def _render_digest(self, chat_id: int, lines: list[str]) -> list[DigestPart]:
        """The digest's messages in the subscriber's language, every merged alert in one of them."""
        subscriber = self.index.get(chat_id)
        return render_digest(lines, subscriber.language if subscriber else "en")

    async def _stop_delivery(self, delivery: Outbox, sender: MessageSender, *, drain: bool) -> None:
        """Stop handing out queued alerts, let the sends in flight finish and be acknowledged.

        Alerts still queued stay in the Redis stream for the next start, so they are taken back
        unless the Redis is an embedded one, which forgets everything (`drain`). The rest of the
        queue (replies, follow-ups, reports) exists only here: it is sent first, for as long as
        `shutdown_drain_seconds` allows.
        """
        await delivery.stop_reading()
        if not drain:
            sender.withdraw(lambda message: isinstance(message, Alert))
        await sender.stop(drain=True, timeout=self.shutdown_drain_seconds)
        await delivery.close()

    @staticmethod
    async def _recipient_gone(store: SubscriberStore, chat_id: int, reason: str) -> None:
        """Telegram says the chat is gone: stop sending to it until the user comes back."""
        if reason.startswith("migrated to"):
            # A group became a supergroup: the sender moved its queued messages and moves any
            # later one. Subscribers are people (their private chat id is their user id, see the
            # subscriber middleware), so no subscriber record is keyed by a group's id to move.
            logger.warning("chat %s %s; its messages follow it", chat_id, reason)
            return
        try:
            await store.set_status(chat_id, "blocked")
        except (UnknownSubscriber, StoreUnavailable) as exc:
            logger.warning("could not mark %s inactive (%s): %s", chat_id, reason, exc)

    def _build_feeds(self) -> tuple[Feed, ...]:
        settings = self.settings
        feeds: list[Feed] = []
        if settings.stream_url:
            stream = StreamManager(
                settings.stream_url,
                parse_alert_frame,
                self.queue.put,
                poll_url=settings.stream_poll_url,
                name="feed",
                **self.stream_options,
            )
            feeds.append(Feed(stream))
        if settings.pumpportal_url:
            key = settings.pumpportal_api_key.get_secret_value() if settings.pumpportal_api_key else None
            # PumpPortal prices tokens in SOL; the USD figures use Pyth's SOL/USD read through the
            # operator's own SOLANA_RPC_URL (unknown, so None, until the first good read).
            sol_price = SolPriceSource(settings.solana_rpc_url, self.api_limit)
            # New tokens and migrations only: asked again after every reconnect.
            subscriptions = SubscriptionSet()
            subscriptions.add("subscribeNewToken")
            subscriptions.add("subscribeMigration")
            stream = StreamManager(
                pumpportal_url(settings.pumpportal_url, key),
                pumpportal_parser(sol_price.current),
                self.queue.put,
                subscriptions=subscriptions,
                name="pumpportal",
                **self.stream_options,
            )
            feeds.append(Feed(stream, {"sol_price": sol_price}))
        return tuple(feeds)

    async def _start_streams(self) -> None:
        self.feeds = self._build_feeds()
        for feed in self.feeds:
            for helper in feed.helpers.values():
                await helper.start()
                self._stack.push_async_callback(helper.stop)
            await feed.stream.start()
            self._stack.push_async_callback(feed.stream.stop)

    def _register_metrics(self) -> None:
        """What /metrics shows: each component's counters and levels, read at scrape time."""
        parts = self.parts
        components = self.metrics.components
        counters: dict[str, NumbersProvider] = {
            "pipeline": parts.service.stats.numbers,
            "queue": self.queue.stats.numbers,
            "sender": parts.sender.stats,
            "delivery": parts.delivery.stats.numbers,
            "persistence": parts.persistence.stats.numbers,
        }
        for name, provider in counters.items():
            components.add(name, provider)
        redis = parts.redis
        circuit = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
        components.add_levels(
            "redis",
            lambda: {
                "up": redis.available,
                "circuit_state": circuit[redis.breaker.state],  # 0 closed, 1 half-open, 2 open
                "pending_writes": len(redis.pending),
                "fallback_keys": len(redis.fallback),
            },
        )
        components.add_levels("queue", self.queue.health)  # size, capacity
        components.add_levels("persistence", lambda: {"pending": parts.persistence.pending()})
        components.add_each("cache", "cache", lambda: {name: c.stats() for name, c in parts.caches.caches.items()})
        # The feeds start with receiving; read whichever run at scrape time.
        components.add_each("stream", "feed", lambda: {s.name: s.stats.numbers() for s in self.streams})
        components.add_each(
            "stream",
            "feed",
            lambda: {
                s.name: {
                    "connected": s.connected,
                    "polling": s.polling,
                    "last_frame_age_seconds": s.health()["last_frame_age_s"],
                }
                for s in self.streams
            },
            all_levels=True,
        )
        ledger = parts.services.ledger
        components.add_counter(
            "alertbot_payments", "Payments handled, by rail and outcome", ("rail", "outcome"), lambda: ledger.counts
        )
        components.add_histogram(
            "alertbot_frame_to_send_seconds",
            "Seconds from a feed frame's arrival to Telegram's answer to the alert it caused",
            parts.sender.frame_to_send,
        )
        components.add_histogram(
            "alertbot_telegram_answer_seconds", "Seconds Telegram took to answer a send", parts.sender.answer_time
        )

    async def _start_monitoring(self) -> None:
        """Health checks every MONITOR_INTERVAL_SECONDS, the heartbeat, and the admins told of incidents."""
        parts = self.parts
        settings = self.settings
        limit = settings.monitor_memory_limit_mb * 2**20 or None
        monitor = Monitor(
            parts.redis,
            self.queue,
            parts.sender,
            parts.delivery,
            lambda: self.streams,
            admins=settings.admin_id_set,
            words=self._admin_words,
            settings=MonitorSettings(
                interval=settings.monitor_interval_seconds,
                redis_down=settings.monitor_redis_down_seconds,
                stream_down=settings.monitor_stream_down_seconds,
                queue_percent=settings.monitor_queue_percent,
                memory_percent=settings.monitor_memory_percent,
                memory_limit=limit,
                burst_window=settings.monitor_burst_window_seconds,
                rate_limited_count=settings.monitor_rate_limited_count,
                failures_count=settings.monitor_failures_count,
                start_notice=settings.monitor_start_notice,
            ),
            instance=self.consumer_name,
            version=_package_version(),
        )
        await monitor.start()
        self._stack.push_async_callback(monitor.stop)
        self._monitor = monitor
        components = self.metrics.components
        components.add("monitor", lambda: dict(vars(monitor.counts)))
        components.add_levels("monitor", monitor.levels)
        components.add_levels("outbox", lambda: {"pending": monitor.backlog})
        components.add_each("incident", "kind", monitor.open_incidents, all_levels=True)

    def _admin_words(self, chat_id: int, notice: AdminNotice) -> str:
        """A monitoring notice in the admin's language."""
        subscriber = self.index.get(chat_id)
        language = subscriber.language if subscriber else DEFAULT_LANGUAGE
        values = {
            key: duration(value, language) if key in ("duration", "window") else value
            for key, value in notice.values.items()
        }
        if notice.kind == "started":
            previous = text(f"monitor_previous_{values['previous']}", language, at=values["at"])
            return text(
                "monitor_started", language, instance=values["instance"], version=values["version"], previous=previous
            )
        return text(notice.key, language, **values)

    async def _start_http(self) -> None:
        rail = self.parts.nowpayments
        token = self.settings.metrics_token
        app = build_http_app(
            self.health,
            self.serving,
            self.metrics.registry,
            nowpayments_ipn_handler=rail.ipn if rail else None,
            metrics_token=token.get_secret_value() if token else None,
        )
        if self.settings.webhook_url:
            path = urlsplit(self.settings.webhook_url).path or "/webhook"
            secret = webhook_secret(self.bot.token)
            SimpleRequestHandler(dispatcher=self.dispatcher, bot=self.bot, secret_token=secret).register(app, path=path)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        # HTTP_PORT=0 lets the system pick; the runner says which port its socket got.
        self.http_port = int(runner.addresses[0][1]) if runner.addresses else self.settings.http_port
        logger.info("HTTP endpoints on %s:%s", self.settings.http_host, self.http_port)

    async def begin_receiving(self) -> None:
        """Long polling by default; with WEBHOOK_URL, tell Telegram where to post updates."""
        if self.settings.webhook_url:
            await self.bot.set_webhook(
                self.settings.webhook_url,
                secret_token=webhook_secret(self.bot.token),
                allowed_updates=self.dispatcher.resolve_used_update_types(),
                drop_pending_updates=False,
            )
            logger.info("webhook mode: Telegram posts updates to the WEBHOOK_URL")
        else:
            await self.bot.delete_webhook(drop_pending_updates=False)
            self._polling = asyncio.create_task(
                self.dispatcher.start_polling(
                    self.bot,
                    handle_signals=False,
                    close_bot_session=False,
                    allowed_updates=self.dispatcher.resolve_used_update_types(),
                ),
                name="telegram-polling",
            )
            logger.info("long polling %s", self.settings.telegram_api_url)
        await self._start_streams()
        self.serving.serving = True

    async def drained(self, timeout: float = 30.0) -> None:
        """Wait until every frame read so far is processed and every alert handed to Telegram."""

        parts = self.parts

        async def settled() -> None:
            while True:
                busy = (
                    self.queue.qsize()
                    or not parts.workers.idle
                    or parts.sender.pending()
                    or await parts.delivery.backlog()
                )
                if not busy:
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(settled(), timeout)

    async def stop(self) -> None:
        self.serving.serving = False
        if self._polling is not None and self._parts is not None:
            if not self._polling.done():
                try:
                    await self.dispatcher.stop_polling()
                except RuntimeError:
                    pass  # polling had not started yet
            try:
                await asyncio.wait_for(self._polling, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self._polling.cancel()
            self._polling = None
        await self._stack.aclose()
        logger.info("stopped")

    async def serve_until_signalled(self) -> None:
        """`alertbot run`: serve until SIGINT or SIGTERM, then stop cleanly."""
        stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_requested.set)
        await self.start()
        try:
            await self.begin_receiving()
            waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop_requested.wait())]
            if self._polling is not None:
                waiters.append(self._polling)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if self._polling is not None and self._polling.done() and self._polling.exception():
                raise self._polling.exception()  # type: ignore[misc]
        finally:
            await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def _package_version() -> str:
    try:
        return importlib.metadata.version("token-alert-bot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
