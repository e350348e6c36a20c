"""/filters, /set NAME VALUE and /unset NAME: a subscriber's filters (docs/contract.md, "Filters").

A bad name or value gets a reply saying what is wrong and what is accepted, and nothing is saved.
Everything the user typed is HTML-escaped before it is echoed. A channel list is shown up to a
few hundred characters and the rest counted ("@a, @b … (+37)"), so no screen that lists the
filters can outgrow Telegram's 4,096 characters, whatever the user set.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from typing import Any

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.texts import text
from domain.filters import FILTER_SPECS, Filters, FilterValueError, set_filter, unset_filter
from services.subscribers import StoreUnavailable, Subscriber, SubscriberStore

logger = logging.getLogger("alertbot.handlers")

ECHO_LIMIT = 64  # characters of user input echoed back in an error
# Characters of a channel list shown in a message and on a button; the channels past them are counted.
CHANNELS_SHOWN = 300
CHANNELS_SHOWN_ON_BUTTON = 24


def _trim(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def format_usd(value: float) -> str:
    """Exact enough to recognise what was typed: 50000 -> $50K, 1500000 -> $1.5M, 1234 -> $1.234K."""
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= divisor:
            return f"${_trim(value / divisor)}{suffix}"
    return f"${_trim(value)}"


def format_minutes(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def format_channels(channels: Iterable[str], budget: int = CHANNELS_SHOWN) -> str:
    """Channels in order while they fit in `budget` characters (the first one always), then how
    many more: '@a, @b … (+37)'. Channel refs are ASCII, so characters are UTF-16 units too."""
    ordered = sorted(channels)
    shown: list[str] = []
    used = 0
    for channel in ordered:
        cost = len(channel) + (2 if shown else 0)
        if shown and used + cost > budget:
            break
        shown.append(channel)
        used += cost
    rest = len(ordered) - len(shown)
    return ", ".join(shown) + (f" … (+{rest})" if rest else "")


def format_filter_value(name: str, value: Any, channels_budget: int = CHANNELS_SHOWN) -> str:
    """A filter's value as the user would type it (plain text, not yet escaped); a long channel
    list shortened to `channels_budget` characters and a count."""
    if name in ("min_mcap", "max_mcap", "min_liquidity"):
        return format_usd(float(value))
    if name == "max_age":
        return format_minutes(int(value))
    if name == "min_win_rate":
        return f"{_trim(float(value))}%"
    if name == "min_avg_gain":
        return f"{_trim(float(value))}x"
    if name in ("channels", "exclude_channels"):
        return format_channels(value, channels_budget)
    return str(value)


def filter_lines(filters: Filters) -> list[str]:
    return [
        f"• <code>{name}</code> = {html.escape(format_filter_value(name, value))}"
        for name, value in filters.to_dict().items()
    ]


def filters_body(filters: Filters, language: str) -> str:
    """The title and a line per filter set, or the line that says none is."""
    lines = filter_lines(filters)
    return "\n".join([text("filters_title", language), *lines]) if lines else text("filters_none", language)


def _echo(raw: str) -> str:
    raw = raw.strip()
    return html.escape(raw if len(raw) <= ECHO_LIMIT else raw[: ECHO_LIMIT - 1] + "…")


def _names() -> str:
    return ", ".join(f"<code>{name}</code>" for name in FILTER_SPECS)


def _accepted(name: str, language: str) -> str:
    return html.escape(text(f"accepted_{name}", language))


def set_usage(language: str) -> str:
    lines = "\n".join(f"• <code>{name}</code>: {_accepted(name, language)}" for name in FILTER_SPECS)
    return text("set_usage", language, filters=lines)


async def show_filters(message: Message, subscriber: Subscriber, language: str, subscriber_loaded: bool = True) -> None:
    if not subscriber_loaded:
        await message.answer(text("unavailable", language))
        return
    await message.answer(f"{filters_body(subscriber.filters, language)}\n\n{text('filters_hint', language)}")


async def set_command(
    message: Message,
    command: CommandObject,
    subscriber: Subscriber,
    language: str,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    parts = (command.args or "").split(maxsplit=1)
    if len(parts) < 2:
        await message.answer(set_usage(language))
        return
    raw_name, raw_value = parts
    name = raw_name.lower()
    spec = FILTER_SPECS.get(name)
    if spec is None:
        await message.answer(text("filter_unknown", language, name=_echo(raw_name), names=_names()))
        return
    try:
        updated = set_filter(subscriber.filters, name, raw_value)
    except FilterValueError as exc:
        await message.answer(value_error(name, raw_value, exc, language))
        return
    if not subscriber_loaded:
        await message.answer(text("unavailable", language))
        return
    try:
        saved = await store.update_filters(subscriber.telegram_id, updated, name=name)
    except StoreUnavailable:
        await message.answer(text("unavailable", language))
        return
    value = getattr(saved.filters, name)
    await message.answer(text("filter_set", language, name=name, value=html.escape(format_filter_value(name, value))))


def value_error(name: str, raw_value: str, exc: FilterValueError, language: str) -> str:
    try:
        FILTER_SPECS[name].parse(raw_value)
    except FilterValueError as parse_error:
        return text(
            "filter_bad_value",
            language,
            name=name,
            value=_echo(raw_value),
            reason=reason_text(parse_error, language),
            accepted=_accepted(name, language),
        )
    # The value parses on its own, so it clashes with another filter (min_mcap above max_mcap).
    return text("filter_conflict", language, name=name, value=_echo(raw_value))


def reason_text(exc: FilterValueError, language: str) -> str:
    """What is wrong with a value, in the user's language (the parser's English as a fallback)."""
    if exc.kind:
        return html.escape(text(f"reason_{exc.kind}", language, **exc.values))
    return html.escape(str(exc))


async def unset_command(
    message: Message,
    command: CommandObject,
    subscriber: Subscriber,
    language: str,
    store: SubscriberStore,
    subscriber_loaded: bool = True,
) -> None:
    raw_name = (command.args or "").strip()
    if not raw_name or len(raw_name.split()) != 1:
        await message.answer(text("unset_usage", language, names=_names()))
        return
    name = raw_name.lower()
    try:
        updated = unset_filter(subscriber.filters, name)
    except FilterValueError:
        await message.answer(text("filter_unknown", language, name=_echo(raw_name), names=_names()))
        return
    if not subscriber_loaded:
        await message.answer(text("unavailable", language))
        return
    if updated == subscriber.filters:
        await message.answer(text("filter_not_set", language, name=name))
        return
    try:
        await store.update_filters(subscriber.telegram_id, updated, name=name)
    except StoreUnavailable:
        await message.answer(text("unavailable", language))
        return
    await message.answer(text("filter_unset", language, name=name))


def build_router() -> Router:
    router = Router(name="filters")
    router.message(Command("filters"))(show_filters)
    router.message(Command("set"))(set_command)
    router.message(Command("unset"))(unset_command)
    return router
