"""/start and /help: what every user sees first."""

from __future__ import annotations

import html

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from bot.texts import pick_language, text


async def start(message: Message, language: str | None = None) -> None:
    user = message.from_user
    # `language` comes from the subscriber middleware (their stored choice); Telegram's as a fallback.
    language = language or pick_language(user.language_code if user else None)
    name = html.escape(user.first_name if user and user.first_name else "there")
    await message.answer(text("welcome", language, name=name))


async def help_command(message: Message, language: str | None = None) -> None:
    language = language or pick_language(message.from_user.language_code if message.from_user else None)
    await message.answer(text("help", language))


def build_router() -> Router:
    router = Router(name="common")
    router.message(CommandStart())(start)
    router.message(Command("help"))(help_command)
    return router
