"""The "test my filters" button: a subscriber's filters replayed over the last 24 hours of calls.

The press is answered at once (Telegram shows a spinner until then, and the replay reads a day
of history); the result comes as a new message, so the screen the button sits on stays as it is.
The rule itself lives in services/replay.py.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime

from aiogram import Bot, F, Router
from aiogram.types import CallbackQuery

from bot.callbacks import FilterCB
from bot.texts import text
from services.replay import DEFAULT_HOURS, FilterReplay, ReplayAlert, ReplayReport
from services.subscribers import PG_FAILURES, Subscriber

logger = logging.getLogger("alertbot.handlers")

TOP_COUNT = 5


def format_multiple(multiple: float) -> str:
    """3.456 -> '3.5x', 12.3 -> '12x': tenths matter only for small multiples."""
    return f"{multiple:.1f}x" if multiple < 10 else f"{multiple:.0f}x"


def _token_name(alert: ReplayAlert) -> str:
    if alert.symbol:
        return html.escape(alert.symbol)
    address = alert.token_address
    return html.escape(address if len(address) <= 12 else f"{address[:4]}…{address[-4:]}")


def render_report(report: ReplayReport, language: str, hours: int = DEFAULT_HOURS) -> str:
    """The reply to a replay, in `language` (HTML; token symbols come from the feed, so escaped)."""
    result, day = report.result, report.day
    if day.history_start is None:
        return text("replay_no_history", language)
    if result.alerts == 0:
        lines = [text("replay_none", language, hours=hours)]
    else:
        key = "replay_result_one" if result.alerts == 1 else "replay_result"
        lines = [text(key, language, hours=hours, alerts=result.alerts, reached=result.reached_2x)]
        lines += ["", text("replay_top_title", language)]
        for alert in result.top(TOP_COUNT):
            multiple = (
                format_multiple(alert.best_multiple)
                if alert.best_multiple is not None
                else text("replay_no_price", language)
            )
            lines.append(text("replay_top_line", language, symbol=_token_name(alert), multiple=multiple))
    if not day.complete:
        lines += ["", text("replay_partial", language, covered=f"{day.covered_hours:.0f}", hours=hours)]
    return "\n".join(lines)


async def replay_pressed(
    callback: CallbackQuery,
    bot: Bot,
    subscriber: Subscriber,
    language: str,
    replay: FilterReplay,
    subscriber_loaded: bool = True,
) -> None:
    await callback.answer(text("replay_working", language))
    chat_id = callback.message.chat.id if callback.message is not None else callback.from_user.id
    if not subscriber_loaded:
        # Without the stored subscriber the filters are a stand-in's: replaying those would mislead.
        await bot.send_message(chat_id, text("unavailable", language))
        return
    try:
        report = await replay.report(subscriber.filters, datetime.now(UTC))
    except PG_FAILURES as exc:  # PostgresNotStarted among them
        logger.warning("filter replay for %s failed: %r", subscriber.telegram_id, exc)
        await bot.send_message(chat_id, text("replay_unavailable", language))
        return
    await bot.send_message(chat_id, render_report(report, language))


def build_router() -> Router:
    router = Router(name="replay")
    router.callback_query(FilterCB.filter(F.action == "replay"))(replay_pressed)
    return router
