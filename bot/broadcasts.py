"""Shows a broadcast's progress to its admin: the confirmed preview becomes the progress message,
edited as recipients are handled (services.broadcast decides how often) and a last time with
the final counts."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest

from bot.keyboards import AUDIENCE_LABELS
from bot.texts import text
from services.broadcast import DONE, Broadcast

logger = logging.getLogger("alertbot.broadcast")


def progress_text(broadcast: Broadcast) -> str:
    key = "broadcast_done" if broadcast.status == DONE else "broadcast_progress"
    return text(
        key,
        broadcast.language,
        audience=text(AUDIENCE_LABELS[broadcast.audience], broadcast.language),
        handled=broadcast.handled,
        total=broadcast.total,
        sent=broadcast.sent,
        blocked=broadcast.blocked,
        failed=broadcast.failed,
    )


class BroadcastProgress:
    """`Broadcasts.on_progress`: edits the admin's message (no buttons left on it). The final
    counts go in a new message when that one cannot be edited any more (deleted, say)."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def __call__(self, broadcast: Broadcast) -> bool:
        body = progress_text(broadcast)
        try:
            await self.bot.edit_message_text(text=body, chat_id=broadcast.admin_chat, message_id=broadcast.message_id)
        except TelegramBadRequest as exc:
            if "message is not modified" in exc.message:
                return True
            logger.info("progress of broadcast %s not shown: %s", broadcast.id, exc.message)
            if broadcast.status != DONE:
                return True  # the final counts will say it
            return await self._send(broadcast, body)
        except TelegramAPIError as exc:
            logger.info("progress of broadcast %s not shown: %r", broadcast.id, exc)
            return False
        return True

    async def _send(self, broadcast: Broadcast, body: str) -> bool:
        try:
            await self.bot.send_message(broadcast.admin_chat, body)
        except TelegramBadRequest as exc:
            logger.warning("final counts of broadcast %s not shown: %s", broadcast.id, exc.message)
            return True  # the chat itself refuses: nothing to wait for
        except TelegramAPIError as exc:
            logger.info("final counts of broadcast %s not shown: %r", broadcast.id, exc)
            return False
        return True
