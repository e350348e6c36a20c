"""/presets and the main menu's Presets screen; admins' /setpreset and /delpreset.

A user applies a preset (its filters replace theirs) or follows it (the same, and later admin
changes of the preset replace their filters again, with a notice in their language). Changing a
filter by hand stops following (services/subscribers.py `update_filters`).

Everything admins or presets carry (titles, descriptions) is HTML-escaped before it is shown.
"""

from __future__ import annotations

import html
import logging

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.callbacks import MenuCB, PresetCB
from bot.filters_admin import IsAdmin
from bot.routers.filters import filter_lines
from bot.routers.screens import acknowledge, edit_or_send, with_notice
from bot.texts import pick_language, text
from domain.filters import Filters
from services.presets import (
    Preset,
    PresetDefinitionError,
    PresetStore,
    parse_preset_definition,
    preset_definition,
    valid_code,
)
from services.sender import Lane, MessageSender, OutgoingMessage
from services.subscribers import StoreUnavailable, Subscriber, SubscriberStore, UnknownSubscriber

logger = logging.getLogger("alertbot.presets")

MAX_LISTED = 20  # presets shown (and given buttons) on one screen
MESSAGE_BUDGET = 3800  # of Telegram's 4096 UTF-16 units, leaving room for the markup's overhead
BUTTON_TITLE = 28  # characters of a title on a button


def _filters_block(filters: Filters, language: str) -> str:
    return "\n".join(filter_lines(filters)) or text("preset_no_filters", language)


def _short(title: str, limit: int = BUTTON_TITLE) -> str:
    return title if len(title) <= limit else title[: limit - 1] + "…"


def _utf16_len(html: str) -> int:
    """What Telegram counts (UTF-16 units); of the HTML, which is never shorter than its text."""
    return len(html.encode("utf-16-le")) // 2


def render_presets(presets: list[Preset], subscriber: Subscriber, language: str) -> tuple[str, InlineKeyboardMarkup]:
    """The Presets screen: each preset with its filters, and its Apply and Follow/Unfollow buttons."""
    blocks = [text("presets_title", language)]
    rows: list[list[InlineKeyboardButton]] = []
    length = _utf16_len(blocks[0])
    for preset in presets[:MAX_LISTED]:
        followed = subscriber.preset == preset.code
        lines = [f"<b>{'⭐ ' if followed else ''}{html.escape(preset.title)}</b>"]
        if followed:
            lines.append(f"<i>{text('preset_following', language)}</i>")
        if preset.description:
            lines.append(html.escape(preset.description))
        lines.append(_filters_block(preset.filters, language))
        block = "\n".join(lines)
        if length + _utf16_len(block) + 2 > MESSAGE_BUDGET:
            break  # a screen too long for one message shows the first presets only
        blocks.append(block)
        length += _utf16_len(block) + 2
        rows.append(
            [
                InlineKeyboardButton(
                    text=text("preset_button_apply", language, title=_short(preset.title)),
                    callback_data=PresetCB(action="apply", code=preset.code).pack(),
                ),
                InlineKeyboardButton(
                    text=text("preset_button_unfollow" if followed else "preset_button_follow", language),
                    callback_data=PresetCB(action="unfollow" if followed else "follow", code=preset.code).pack(),
                ),
            ]
        )
    if not presets:
        blocks.append(text("presets_none", language))
    rows.append(
        [InlineKeyboardButton(text=text("preset_button_back", language), callback_data=MenuCB(screen="main").pack())]
    )
    return "\n\n".join(blocks), InlineKeyboardMarkup(inline_keyboard=rows)


# ------------------------------------------------------------------ subscribers


async def presets_command(
    message: Message,
    subscriber: Subscriber,
    language: str,
    presets: PresetStore,
) -> None:
    try:
        listed = await presets.list()
    except StoreUnavailable:
        await message.answer(text("unavailable", language))
        return
    # Without the stored subscriber the list still shows; only the "followed" mark is unknown.
    body, markup = render_presets(listed, subscriber, language)
    await message.answer(body, reply_markup=markup)


async def presets_screen(
    callback: CallbackQuery,
    subscriber: Subscriber,
    language: str,
    presets: PresetStore,
) -> None:
    await acknowledge(callback)
    try:
        listed = await presets.list()
    except StoreUnavailable:
        await edit_or_send(callback, text("unavailable", language), _back_to_menu(language))
        return
    body, markup = render_presets(listed, subscriber, language)
    await edit_or_send(callback, body, markup)


async def preset_action(
    callback: CallbackQuery,
    callback_data: PresetCB,
    subscriber: Subscriber,
    language: str,
    store: SubscriberStore,
    presets: PresetStore,
    subscriber_loaded: bool = True,
) -> None:
    """apply / follow / unfollow CODE (and show: the list again). The press is answered first;
    the screen shows the new "followed" mark and the result comes as a message of its own."""
    if not subscriber_loaded:
        await acknowledge(callback, text("unavailable", language), alert=True)
        return
    action, code = callback_data.action, callback_data.code
    if action == "unfollow" and subscriber.preset != code:
        await acknowledge(callback, text("preset_not_followed", language))
        return
    await acknowledge(callback)
    try:
        if action in ("apply", "follow"):
            preset = await presets.get(code)
            if preset is None:
                # Deleted since the screen was shown: show what there is now.
                presets.forget()
                body, markup = render_presets(await presets.list(), subscriber, language)
                await edit_or_send(callback, with_notice(text("preset_gone", language), body), markup)
                return
            # Applying a preset ends following another one (the filters are no longer its), but
            # applying the one followed is a no-op, not a silent unfollow.
            following = code if action == "follow" or subscriber.preset == code else None
            updated = await store.apply_filters(
                subscriber.telegram_id, preset.filters, source="preset", preset=following
            )
            result_key = "preset_followed" if following else "preset_applied"
            title = preset.title
        elif action == "unfollow":
            preset = await presets.get(code)
            updated = await store.set_following(subscriber.telegram_id, None, source="menu")
            result_key = "preset_unfollowed"
            title = preset.title if preset is not None else code
        else:  # "show", or an action a newer version of the bot offers
            await edit_or_send(callback, *render_presets(await presets.list(), subscriber, language))
            return
        listed = await presets.list()
    except (StoreUnavailable, UnknownSubscriber):
        await edit_or_send(callback, text("unavailable", language), _back_to_menu(language))
        return
    # The screen shows the new "followed" mark; the result goes below it as a message of its own,
    # so the filters just set stay in the chat.
    await edit_or_send(callback, *render_presets(listed, updated, language))
    if callback.bot is not None:
        await callback.bot.send_message(
            callback.from_user.id,
            text(result_key, language, title=html.escape(title), filters=_filters_block(updated.filters, language)),
        )


def _back_to_menu(language: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=text("preset_button_back", language), callback_data=MenuCB(screen="main").pack()
                )
            ]
        ]
    )


# ------------------------------------------------------------------ admins


def _admin_id(message: Message) -> int | None:
    return message.from_user.id if message.from_user else None


def _notify(sender: MessageSender, chat_id: int, body: str) -> None:
    """Queued in the sender, paced with the alerts; a user who blocked the bot is the sender's to
    note, and stops no one else being told."""
    sender.submit(OutgoingMessage(chat_id, body, lane=Lane.ADMIN))


async def _sync_followers(
    sender: MessageSender, store: SubscriberStore, presets: PresetStore, preset: Preset
) -> tuple[int, int]:
    """Give every follower the preset's filters, and tell those whose filters changed; returns
    (updated, failed). Followers already in step are left alone, so running it again (after a
    failure) only finishes what was missed."""
    await store.flush_pending()  # PostgreSQL must know every follow Redis already holds
    updated = failed = 0
    for telegram_id in await presets.followers(preset.code):
        try:
            current = await store.get(telegram_id)
            # Redis is the latest word: someone who has just stopped following is not pulled back.
            if current is None or current.preset != preset.code or current.filters == preset.filters:
                continue
            subscriber = await store.apply_filters(telegram_id, preset.filters, source="preset", preset=preset.code)
        except (StoreUnavailable, UnknownSubscriber) as exc:
            failed += 1
            logger.warning("preset %s: follower %s not updated: %r", preset.code, telegram_id, exc)
            continue
        updated += 1
        if subscriber.status == "active":
            language = pick_language(subscriber.language)
            _notify(
                sender,
                telegram_id,
                text(
                    "preset_changed_notice",
                    language,
                    title=html.escape(preset.title),
                    filters=_filters_block(preset.filters, language),
                ),
            )
    return updated, failed


async def _setpreset_help(message: Message, language: str, presets: PresetStore) -> None:
    body = text("setpreset_usage", language)
    try:
        listed = await presets.list()
    except StoreUnavailable:
        listed = []
    if listed:
        definitions = "\n".join(
            f"<code>/setpreset {html.escape(preset_definition(p))}</code>" for p in listed[:MAX_LISTED]
        )
        body += "\n\n" + text("setpreset_current", language, definitions=definitions)
    await message.answer(body)


async def set_preset(
    message: Message,
    command: CommandObject,
    language: str,
    store: SubscriberStore,
    presets: PresetStore,
    sender: MessageSender,
) -> None:
    """/setpreset CODE ["Title" ["Description"]] NAME=VALUE ...: create or change a preset."""
    args = (command.args or "").strip()
    if not args:
        await _setpreset_help(message, language, presets)
        return
    try:
        definition = parse_preset_definition(args)
    except PresetDefinitionError as exc:
        await message.answer(
            text("setpreset_error", language, reason=html.escape(str(exc)), usage=text("setpreset_usage", language))
        )
        return
    admin_id = _admin_id(message)
    try:
        old, new = await presets.upsert(
            definition.code,
            title=definition.title,
            description=definition.description,
            filters=definition.filters,
            updated_by=admin_id,
        )
    except ValueError as exc:  # a new preset without a title
        await message.answer(
            text("setpreset_error", language, reason=html.escape(str(exc)), usage=text("setpreset_usage", language))
        )
        return
    except StoreUnavailable:
        await message.answer(text("unavailable", language))
        return
    await store.log_activity(
        admin_id,
        "preset_set",
        {
            "code": new.code,
            "title": new.title,
            "filters": new.filters.to_dict(),
            "old_filters": None if old is None else old.filters.to_dict(),
        },
    )
    filters = _filters_block(new.filters, language)
    title = html.escape(new.title)
    if old is None:
        await message.answer(text("setpreset_created", language, code=new.code, title=title, filters=filters))
        return
    try:
        updated, failed = await _sync_followers(sender, store, presets, new)
        incomplete = failed > 0
    except StoreUnavailable:
        updated, incomplete = 0, True
    reply = text("setpreset_changed", language, code=new.code, title=title, filters=filters, updated=updated)
    if incomplete:
        # Saving the same definition again updates only the followers still out of step.
        reply += "\n" + text("setpreset_followers_failed", language, code=new.code)
    await message.answer(reply)


async def delete_preset(
    message: Message,
    command: CommandObject,
    language: str,
    store: SubscriberStore,
    presets: PresetStore,
    sender: MessageSender,
) -> None:
    """/delpreset CODE: its followers keep their filters and follow nothing."""
    parts = (command.args or "").split()
    code = parts[0].lower() if len(parts) == 1 else ""
    if not valid_code(code):
        await message.answer(text("delpreset_usage", language))
        return
    try:
        await store.flush_pending()
        # Read before the delete: PostgreSQL's ON DELETE SET NULL forgets who followed.
        followers = await presets.followers(code)
        deleted = await presets.delete(code)
    except StoreUnavailable:
        await message.answer(text("unavailable", language))
        return
    if deleted is None:
        await message.answer(text("delpreset_unknown", language, code=code))
        return
    admin_id = _admin_id(message)
    await store.log_activity(admin_id, "preset_deleted", {"code": code, "followers": len(followers)})
    told = 0
    for telegram_id in followers:
        try:
            current = await store.get(telegram_id)
            if current is None or current.preset != code:
                continue
            # PostgreSQL already follows nothing; Redis, the cache and the history catch up here.
            subscriber = await store.set_following(telegram_id, None, source="admin")
        except (StoreUnavailable, UnknownSubscriber) as exc:
            logger.warning("preset %s deleted: follower %s not updated: %r", code, telegram_id, exc)
            continue
        told += 1
        if subscriber.status == "active":
            follower_language = pick_language(subscriber.language)
            _notify(
                sender,
                telegram_id,
                text("preset_deleted_notice", follower_language, title=html.escape(deleted.title)),
            )
    await message.answer(text("delpreset_done", language, code=code, title=html.escape(deleted.title), followers=told))


def build_router() -> Router:
    router = Router(name="presets")
    router.message(Command("presets"))(presets_command)
    router.callback_query(MenuCB.filter(F.screen == "presets"))(presets_screen)
    router.callback_query(PresetCB.filter())(preset_action)
    # Non-admins are refused by the admin router (its ADMIN_COMMANDS include these).
    router.message(Command("setpreset"), IsAdmin())(set_preset)
    router.message(Command("delpreset"), IsAdmin())(delete_preset)
    return router
