"""/channels: the calling channels with the best win rate, as the bot itself measured them.

Only channels with enough resolved calls (CHANNELS_MIN_RESOLVED) are ranked, each with its
number of resolved calls, its capped average gain and its median beside the win rate; channels
with fewer are listed apart, so three lucky calls do not make an oracle. The figures are the
bot's own (services.channel_stats), never the feed's.
"""

from __future__ import annotations

import html
import logging

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.config import Settings
from bot.routers.replay import format_multiple
from bot.texts import text
from domain.channel_stats import GAIN_CAP, ChannelBoard, RatedChannel, best_channels
from services.channel_stats import ChannelStatistics
from services.subscribers import PG_FAILURES

logger = logging.getLogger("alertbot.handlers")

TOP_COUNT = 10


def channel_name(channel: RatedChannel) -> str:
    """'<b>Alpha Calls</b> @alphacalls', or whichever of the two is known, or the id (escaped)."""
    c = channel.channel
    parts = []
    if c.name:
        parts.append(f"<b>{html.escape(c.name)}</b>")
    if c.username:
        parts.append(f"@{html.escape(c.username)}")
    return " ".join(parts) or f"<code>{html.escape(c.id)}</code>"


def _multiple(value: float | None) -> str:
    return "–" if value is None else format_multiple(value)


def render_board(board: ChannelBoard, language: str) -> str:
    """The /channels reply in `language` (HTML)."""
    lines = [text("channels_title", language), ""]
    if not board.ranked:
        lines.append(text("channels_none", language, min=board.min_resolved))
    for rank, entry in enumerate(board.ranked, start=1):
        f = entry.figures
        assert f is not None and f.win_rate is not None  # best_channels ranks only measured channels
        still_open = text("channels_open", language, count=f.unresolved) if f.unresolved else ""
        lines.append(
            text(
                "channels_line",
                language,
                rank=rank,
                name=channel_name(entry),
                rate=f"{f.win_rate * 100:.0f}%",
                resolved=f.resolved,
                avg=_multiple(f.avg_gain),
                median=_multiple(f.median_gain),
                open=still_open,
            )
        )
    if board.too_few:
        lines += ["", text("channels_few_title", language, min=board.min_resolved)]
        for entry in board.too_few:
            f = entry.figures
            assert f is not None
            lines.append(
                text("channels_few_line", language, name=channel_name(entry), resolved=f.resolved, wins=f.wins)
            )
    lines += ["", text("channels_rules", language, cap=format_multiple(GAIN_CAP))]
    return "\n".join(lines)


async def channels_command(
    message: Message, language: str, settings: Settings, channel_stats: ChannelStatistics
) -> None:
    try:
        rated = await channel_stats.rated()
    except PG_FAILURES as exc:  # PostgresNotStarted among them
        logger.warning("/channels could not read the channel figures: %r", exc)
        await message.answer(text("channels_unavailable", language))
        return
    board = best_channels(rated, settings.channels_min_resolved, limit=TOP_COUNT)
    await message.answer(render_board(board, language))


def build_router() -> Router:
    router = Router(name="channels")
    router.message(Command("channels"))(channels_command)
    return router
