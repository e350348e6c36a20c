"""`IsAdmin`: passes for users listed in ADMIN_IDS (the dispatcher's `settings.admin_ids`)."""

from __future__ import annotations

from aiogram.filters import Filter
from aiogram.types import TelegramObject, User

from bot.config import Settings


class IsAdmin(Filter):
    async def __call__(
        self, event: TelegramObject, event_from_user: User | None = None, settings: Settings | None = None
    ) -> bool:
        # No settings means nobody is an admin: refusing is the safe default.
        return event_from_user is not None and settings is not None and event_from_user.id in settings.admin_id_set
