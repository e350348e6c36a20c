"""/start (with its deep links), the main menu, /help, and buttons nobody handles any more.

Deep links: `t.me/<bot>?start=ref_<code>` credits the user whose invite code it is (only on the
user's first contact, and never themselves); `?start=plan_<code>` opens that plan after the
welcome. A payload that means nothing gets the plain welcome.
"""

from __future__ import annotations

import html
import logging

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot import keyboards
from bot.callbacks import MenuCB
from bot.config import Settings
from bot.routers.account import plan_screen
from bot.routers.screens import acknowledge, show
from bot.routers.trial import trial_button, with_button
from bot.texts import pick_language, text
from payments.checkout import CheckoutService
from payments.ledger import PaymentLedger
from services.accounts import AccountService, parse_start_payload
from services.subscribers import Subscriber

logger = logging.getLogger("alertbot.handlers")


async def start(
    message: Message,
    command: CommandObject,
    subscriber: Subscriber,
    language: str,
    state: FSMContext,
    accounts: AccountService,
    checkout: CheckoutService,
    settings: Settings,
    ledger: PaymentLedger,
    first_contact: bool = False,
) -> None:
    await state.clear()
    user = message.from_user
    name = html.escape(user.first_name if user and user.first_name else "there")
    link = parse_start_payload(command.args)
    if link is not None and link[0] == "ref" and first_contact:
        referrer = await accounts.record_referral(subscriber.telegram_id, link[1])
        logger.info("user %s came by invite %r (referrer %s)", subscriber.telegram_id, link[1], referrer)
    await message.answer(
        f"{text('welcome', language, name=name)}\n\n{text('menu_title', language)}",
        reply_markup=with_button(
            keyboards.main_menu(language), await trial_button(subscriber, language, settings, ledger)
        ),
    )
    if link is not None and link[0] == "plan":
        card, markup = await plan_screen(accounts, checkout, link[1], language)
        await message.answer(card, reply_markup=markup)


async def main_menu(event: Message | CallbackQuery, language: str, state: FSMContext) -> None:
    await acknowledge(event)
    await state.clear()
    await show(event, text("menu_title", language), keyboards.main_menu(language))


async def help_screen(event: Message | CallbackQuery, language: str | None = None) -> None:
    if language is None:  # no subscriber middleware (cannot happen in get_routers; kept for safety)
        user = event.from_user
        language = pick_language(user.language_code if user else None)
    await acknowledge(event)
    await show(event, text("help", language), keyboards.back_only(language))


async def stale_button(callback: CallbackQuery, language: str) -> None:
    """A press no handler took: a button of an older version, or of a screen that is gone."""
    await acknowledge(callback, text("stale_button", language))
    await show(callback, text("menu_title", language), keyboards.main_menu(language))


def build_router() -> Router:
    router = Router(name="common")
    router.message(CommandStart())(start)
    router.message(Command("help"))(help_screen)
    router.callback_query(MenuCB.filter(F.screen == "main"))(main_menu)
    router.callback_query(MenuCB.filter(F.screen == "help"))(help_screen)
    return router


def build_fallback_router() -> Router:
    """Last of all: answers the presses of buttons that nothing else handles."""
    router = Router(name="fallback")
    router.callback_query()(stale_button)
    return router
