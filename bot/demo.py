"""`alertbot demo`: the real service on embedded stores and a local Bot API, shown in the terminal.

Nothing here is a mock of our own code: the demo starts the same `Runtime` as `alertbot run`,
against the protocol-level stand-ins from standins/ (a Bot API server that enforces
Telegram's limits, and a WebSocket feed playing the bundled recorded stream), and plays a
scripted subscriber plus three subscribers with different filters.
"""

from __future__ import annotations

import asyncio
import html
import re
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bot.config import Settings
from bot.logs import setup_logging
from bot.runtime import Runtime
from domain.filters import Filters, set_filter
from domain.reports import ReportKind
from standins.dexscreener import DexScreenerServer
from standins.feed_server import FeedServer
from standins.feedgen import load_sample
from standins.telegram import FakeTelegramServer, SentRecord

DEMO_TOKEN = "123456789:DEMO-token-for-the-local-bot-api-server"
DEMO_ADMIN = 1000
DEMO_USER_ID = 1001
DEMO_USER_NAME = "Alice"
REPLY_TIMEOUT = 15.0
FEED_TIMEOUT = 120.0
# The recording is replayed at 500 frames a second, as a busy live feed would deliver it, so the
# latency shown is the bot's own, not the wait behind 1,500 frames arriving in one burst.
FEED_INTERVAL = 0.002

# (telegram id, name, filters as a subscriber would type them)
DEMO_SUBSCRIBERS: list[tuple[int, str, dict[str, str]]] = [
    (2001, "Whale Watcher", {"min_mcap": "500k"}),
    (2002, "Consensus Trader", {"min_channels": "7"}),
    (2003, "Quality Hunter", {"min_channels": "5", "min_win_rate": "40", "max_mcap": "1m"}),
]

_TAG = re.compile(r"<[^>]+>")


def terminal_text(message_html: str) -> str:
    """What a Telegram client would show for an HTML message, as plain text."""
    return html.unescape(_TAG.sub("", message_html))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _show(out: TextIO, who: str, message: str, markup: dict[str, Any] | None = None) -> None:
    lines = message.splitlines() or [""]
    for row in (markup or {}).get("inline_keyboard", []):
        lines.append("  ".join(f"[{button['text']}]" for button in row))
    print(f"  {who:>16} │ {lines[0]}", file=out)
    for line in lines[1:]:
        print(f"  {'':>16} │ {line}", file=out)


# Alice types commands and presses the buttons the bot sent her, as a user would; the number is
# how many new messages the bot answers with (a press that edits its message answers with none).
CONVERSATION: tuple[tuple[str, str, int], ...] = (
    ("say", "/start", 1),
    ("press", "🎁 Try 3 days free", 0),
    ("say", "/status", 1),
    ("say", "/start", 1),
    ("press", "🎯 Filters", 0),
    ("press", "Min win rate", 0),
    ("say", "40", 1),
    ("say", "/set min_mcap 50k", 1),
    ("say", "/filters", 1),
)


def _button_data(telegram: FakeTelegramServer, label: str) -> tuple[int, str]:
    """(message id, callback data) of the newest message to Alice with a button labelled `label`."""
    for record in reversed(telegram.messages_to(DEMO_USER_ID)):
        message = telegram.message(DEMO_USER_ID, record.message_id) or {}
        for row in (message.get("reply_markup") or {}).get("inline_keyboard", []):
            for button in row:
                if label in button["text"]:
                    return record.message_id, button["callback_data"]
    raise LookupError(f"the bot offered no button {label!r}")


def _edits(telegram: FakeTelegramServer, message_id: int) -> int:
    return sum(1 for r in telegram.edits if r.chat_id == DEMO_USER_ID and r.message_id == message_id)


async def _conversation(telegram: FakeTelegramServer, out: TextIO) -> None:
    for action, value, replies in CONVERSATION:
        await _exchange(telegram, out, action, value, replies)


# Then Alice buys a month with Telegram Stars: the plan, the invoice, and Telegram's part played
# by the local Bot API (her confirmation, the pre-checkout query, the payment).
PURCHASE: tuple[tuple[str, str, int], ...] = (
    ("say", "/plans", 1),
    ("press", "1 month", 0),
    ("press", "with Telegram Stars", 1),
)


async def _buy_with_stars(telegram: FakeTelegramServer, out: TextIO) -> None:
    for action, value, replies in PURCHASE:
        await _exchange(telegram, out, action, value, replies)
    invoice = next(r for r in reversed(telegram.messages_to(DEMO_USER_ID)) if r.method == "sendInvoice")
    assert invoice.invoice is not None
    amount, payload = int(invoice.invoice["total_amount"]), str(invoice.params.get("payload"))
    _show(out, DEMO_USER_NAME, f"pays {amount} ⭐ in Telegram")
    sent_before = len(telegram.messages_to(DEMO_USER_ID))
    update_id = telegram.inject_pre_checkout(DEMO_USER_ID, "XTR", amount, payload)
    await telegram.wait_for(
        lambda: any(a.update_id == update_id for a in telegram.answered_pre_checkouts), timeout=REPLY_TIMEOUT
    )
    answer = next(a for a in telegram.answered_pre_checkouts if a.update_id == update_id)
    _show(
        out,
        "Telegram",
        "pre-checkout: " + ("confirmed by the bot" if answer.ok else f"refused: {answer.error_message}"),
    )
    telegram.inject_successful_payment(DEMO_USER_ID, "XTR", amount, payload, f"demo-charge-{int(time.time())}")

    def receipt() -> SentRecord | None:
        return next((r for r in telegram.messages_to(DEMO_USER_ID)[sent_before:] if "🧾" in (r.text or "")), None)

    await telegram.wait_for(lambda: receipt() is not None, timeout=REPLY_TIMEOUT)
    record = receipt()
    assert record is not None
    _show(out, "bot", terminal_text(record.raw_text or ""))
    print("", file=out)


async def _exchange(telegram: FakeTelegramServer, out: TextIO, action: str, value: str, replies: int) -> None:
    """One step of the conversation: the user says or presses `value`; show what the bot answered."""
    sent_before = len(telegram.messages_to(DEMO_USER_ID))
    shown: list[int] = []
    if action == "say":
        _show(out, DEMO_USER_NAME, value)
        telegram.inject_message(DEMO_USER_ID, value, first_name=DEMO_USER_NAME, username="alice_demo")
    else:
        _show(out, DEMO_USER_NAME, f"presses [{value}]")
        pressed, data = _button_data(telegram, value)
        answered = len(telegram.answered_callbacks)
        edited = _edits(telegram, pressed)
        telegram.inject_callback(DEMO_USER_ID, pressed, data)
        await telegram.wait_for(lambda: len(telegram.answered_callbacks) > answered, timeout=REPLY_TIMEOUT)
        if not replies:
            # The press is answered first, then its message edited: show it as edited.
            await telegram.wait_for(lambda: _edits(telegram, pressed) > edited, timeout=REPLY_TIMEOUT)
            shown.append(pressed)
    await telegram.wait_for(
        lambda: len(telegram.messages_to(DEMO_USER_ID)) >= sent_before + replies, timeout=REPLY_TIMEOUT
    )
    shown += [record.message_id for record in telegram.messages_to(DEMO_USER_ID)[sent_before:]]
    for message_id in shown:
        message = telegram.message(DEMO_USER_ID, message_id) or {}
        if "invoice" in message:
            invoice = message["invoice"]
            body = f"🧾 invoice: {invoice['title']}, {invoice['total_amount']} ⭐\n[Pay {invoice['total_amount']} ⭐]"
            _show(out, "bot", body)
            continue
        _show(
            out, "bot", terminal_text(message.get("text") or message.get("caption") or ""), message.get("reply_markup")
        )
    print("", file=out)


async def _evening_reports(runtime: Runtime, telegram: FakeTelegramServer, names: dict[int, str], out: TextIO) -> None:
    """The day's reports, run now rather than at 20:00 and 21:00 UTC: each subscriber's alerts with
    their multiples so far, then the day's best tokens and channels, each with its chart."""
    print("Evening reports (run now instead of at their hour)", file=out)
    before = len(telegram.sent)
    now = datetime.now(UTC)
    for kind in (ReportKind.DAILY, ReportKind.BEST):
        await runtime.reports.run(kind, now)
    await runtime.drained()
    shown: set[tuple[int, str]] = set()
    for record in telegram.sent[before:]:
        who = names.get(record.chat_id, DEMO_USER_NAME if record.chat_id == DEMO_USER_ID else None)
        if who is None or record.method != "sendPhoto":
            continue
        title = (record.caption or "").splitlines()[0] if record.caption else ""
        if (record.chat_id, title) in shown:
            continue
        shown.add((record.chat_id, title))
        _show(out, f"→ {who}", f"[chart] {terminal_text(record.raw_text or '')}")
        print("", file=out)


async def _subscribers(runtime: Runtime) -> dict[int, str]:
    assert runtime.store is not None and runtime.index_sync is not None
    names: dict[int, str] = {}
    for telegram_id, name, typed in DEMO_SUBSCRIBERS:
        filters = Filters()
        for key, value in typed.items():
            filters = set_filter(filters, key, value)
        await runtime.store.register(telegram_id, username=None, first_name=name, language_code="en")
        await runtime.store.update_filters(telegram_id, filters, name=",".join(typed))
        await runtime.ledger.grant(telegram_id, 30, granted_by=DEMO_ADMIN)
        names[telegram_id] = name
    await runtime.index_sync.settle()
    return names


def _dexscreener_prices(dexscreener: DexScreenerServer, frames: list[dict[str, Any]]) -> None:
    """The local DexScreener lists each token of the recording at its last recorded price, for
    the follow-ups of tokens the feed stops pricing."""
    for frame in frames:
        if frame.get("type") == "price" and frame.get("price_usd"):
            dexscreener.set_price(frame["address"], frame["price_usd"], frame.get("market_cap_usd"))


RUN_UPS = (2.4, 5.3)  # the multiples (of the highest alert market cap) three tokens then reach


async def _run_ups(runtime: Runtime, feed: FeedServer, out: TextIO, chats: set[int]) -> int:
    """Three tokens alerted to `chats` run up to 2.4x, then 5.3x: price frames on the feed, as the
    feed would send them. Returns the frames pushed."""
    assert runtime.followups is not None
    tracker = runtime.followups.tracker
    await tracker.sync()  # the alerts delivered just now

    def alerted_to_them(address: str) -> bool:
        track = tracker.get(address)
        return track is not None and bool(chats & set(track.chats.tolist()))

    risers = [address for address in tracker.addresses() if alerted_to_them(address)][:3]
    print("Later that day, three of the alerted tokens run up:", file=out)
    print("", file=out)
    [stream] = runtime.streams
    read = stream.stats.frames
    pushed = 0
    for multiple in RUN_UPS:
        for address in risers:
            track = tracker.get(address)
            if track is None:
                continue
            market_cap = float(track.bases.max()) * multiple
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            await feed.push(
                {
                    "type": "price",
                    "address": address,
                    "price_usd": market_cap / 1e9,
                    "market_cap_usd": market_cap,
                    "ts": now,
                }
            )
            pushed += 1
    await stream.wait_for(lambda: stream.stats.frames >= read + pushed, FEED_TIMEOUT)
    await tracker.settled()
    return pushed


async def run_demo(out: TextIO = sys.stdout) -> int:
    work = Path(tempfile.mkdtemp(prefix="abdemo"))
    frames = load_sample()
    dexscreener = DexScreenerServer()
    _dexscreener_prices(dexscreener, frames)
    async with (
        FakeTelegramServer() as telegram,
        FeedServer(frames, interval=FEED_INTERVAL) as feed,
        dexscreener,
    ):
        settings = Settings(
            _env_file=None,
            bot_token=DEMO_TOKEN,
            telegram_api_url=telegram.base_url,
            redis_url=None,
            database_url=None,
            webhook_url=None,
            stream_url=feed.url,
            dexscreener_url=dexscreener.url,
            admin_ids=[DEMO_ADMIN],
            http_port=_free_port(),
            log_dir=work / "logs",
        )
        setup_logging(settings.log_dir, settings.secrets(), console_level=None)
        runtime = Runtime(settings, data_dir=work, ephemeral_data=True)
        print("Token Alert Bot demo", file=out)
        print(f"  Bot API : local test server at {telegram.base_url} (enforces Telegram's limits)", file=out)
        print(f"  feed    : {len(frames):,} recorded frames from {feed.url}", file=out)
        print("  stores  : embedded PostgreSQL (migrations applied), embedded Redis stand-in", file=out)
        print(f"  prices  : the feed's, and a local DexScreener at {dexscreener.url}", file=out)
        print(f"  logs    : {settings.log_dir}", file=out)
        print("", file=out)
        await runtime.start()
        try:
            names = await _subscribers(runtime)
            for telegram_id, name, typed in DEMO_SUBSCRIBERS:
                print(
                    f"  subscriber {name} ({telegram_id}): " + ", ".join(f"{k} {v}" for k, v in typed.items()), file=out
                )
            print("", file=out)
            shown = 0

            def new_alerts() -> list[SentRecord]:
                return [r for r in telegram.sent if r.chat_id in names][shown:]

            started = time.perf_counter()
            await runtime.begin_receiving()
            await _conversation(telegram, out)
            await _buy_with_stars(telegram, out)
            [stream] = runtime.streams
            # Print each alert as it is delivered, until the whole feed is processed and sent.
            expected = len(frames)
            while True:
                for record in new_alerts():
                    shown += 1
                    # A follow-up (2x, 5x...) replies to its alert.
                    arrow = "→" if record.reply_to is None else "↩"
                    _show(out, f"{arrow} {names[record.chat_id]}", terminal_text(record.raw_text or ""))
                    print("", file=out)
                if stream.stats.frames >= expected and not new_alerts():
                    try:
                        await runtime.drained(timeout=0.05)
                    except TimeoutError:
                        continue
                    if not new_alerts():
                        if expected > len(frames):
                            break
                        # Later that day: some alerted tokens run up, and their subscribers hear of it.
                        expected += await _run_ups(runtime, feed, out, set(names))
                        continue
                if time.perf_counter() - started > FEED_TIMEOUT:
                    raise TimeoutError("the demo feed was not processed in time")
                await asyncio.sleep(0.05)
            # Before the reports: alerts, and the follow-ups that reply to them.
            followups = {
                telegram_id: sum(1 for r in telegram.messages_to(telegram_id) if r.reply_to is not None)
                for telegram_id in names
            }
            alerts = {
                telegram_id: len(telegram.messages_to(telegram_id)) - followups[telegram_id] for telegram_id in names
            }
            await _evening_reports(runtime, telegram, names, out)
            assert runtime.service is not None
            stats = runtime.service.stats
            print("Summary", file=out)
            print(
                f"  frames read        : {stream.stats.frames:,} ({stream.stats.events:,} events, "
                f"{stream.stats.malformed} malformed)",
                file=out,
            )
            print(f"  calls processed    : {stats.calls:,}", file=out)
            for telegram_id, name in names.items():
                print(f"  alerts to {name:<17}: {alerts[telegram_id]} (+{followups[telegram_id]} follow-ups)", file=out)
            p50, p99 = (stats.latency_percentile(share) for share in (0.5, 0.99))
            print(
                f"  frame → sender     : p50 {p50 if p50 is not None else float('nan'):.2f} ms, "
                f"p99 {p99 if p99 is not None else float('nan'):.2f} ms",
                file=out,
            )
            print(f"  Telegram 429s      : {telegram.stats.rejected_429}", file=out)
        finally:
            await runtime.stop()
    print("demo finished.", file=out)
    return 0
