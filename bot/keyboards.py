"""Inline keyboards. Pure builders: labels from bot.texts, callback data from bot.callbacks."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import FilterCB, FollowupCB, LanguageCB, MenuCB, PayCB, PlanCB, PrivacyCB, ReportsCB
from bot.texts import LANGUAGE_NAMES, money, text
from domain.filters import FILTER_SPECS, Filters
from domain.plans import PAID_RAILS, Order, Plan, Rail
from domain.stars import STARS_CURRENCY

MAIN_SCREENS = ("filters", "presets", "plans", "status", "language", "help")


def _button(label: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=label, callback_data=data)


def _link(label: str, url: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=label, url=url)


def _rows(buttons: Sequence[InlineKeyboardButton], per_row: int) -> list[list[InlineKeyboardButton]]:
    return [list(buttons[i : i + per_row]) for i in range(0, len(buttons), per_row)]


def back_row(language: str, screen: str = "main") -> list[InlineKeyboardButton]:
    return [_button(text("button_back", language), MenuCB(screen=screen).pack())]


def main_menu(language: str) -> InlineKeyboardMarkup:
    buttons = [_button(text(f"menu_{screen}", language), MenuCB(screen=screen).pack()) for screen in MAIN_SCREENS]
    return InlineKeyboardMarkup(inline_keyboard=_rows(buttons, 2))


def filters_menu(filters: Filters, language: str, value_of: dict[str, str]) -> InlineKeyboardMarkup:
    """A button per filter (with its value when set), then replay, reset all, back.

    `value_of` holds the display value of each filter that is set.
    """
    buttons = []
    for name in FILTER_SPECS:
        label = text(f"label_{name}", language)
        if name in value_of:
            label = f"{label}: {value_of[name]}"
        buttons.append(_button(label, FilterCB(action="edit", name=name).pack()))
    rows = _rows(buttons, 2)
    rows.append([_button(text("button_replay", language), FilterCB(action="replay").pack())])
    if filters.to_dict():
        rows.append([_button(text("button_reset_all", language), FilterCB(action="reset_all").pack())])
    rows.append(back_row(language))
    return InlineKeyboardMarkup(inline_keyboard=rows)


def value_prompt(name: str, is_set: bool, language: str) -> InlineKeyboardMarkup:
    row = []
    if is_set:
        row.append(_button(text("button_reset_one", language), FilterCB(action="reset", name=name).pack()))
    row.append(_button(text("button_cancel", language), FilterCB(action="cancel").pack()))
    return InlineKeyboardMarkup(inline_keyboard=[row])


def languages(current: str) -> InlineKeyboardMarkup:
    buttons = [
        _button(("✓ " if code == current else "") + name, LanguageCB(code=code).pack())
        for code, name in LANGUAGE_NAMES.items()
    ]
    return InlineKeyboardMarkup(inline_keyboard=[buttons, back_row(current)])


def privacy(language: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_button(text("button_delete_data", language), PrivacyCB(action="ask").pack())],
            back_row(language),
        ]
    )


def privacy_confirm(language: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                _button(text("button_delete_confirm", language), PrivacyCB(action="confirm").pack()),
                _button(text("button_cancel", language), PrivacyCB(action="cancel").pack()),
            ]
        ]
    )


def plans(codes_and_titles: Sequence[tuple[str, str]], language: str) -> InlineKeyboardMarkup:
    buttons = [_button(title, PlanCB(code=code).pack()) for code, title in codes_and_titles]
    return InlineKeyboardMarkup(inline_keyboard=[*_rows(buttons, 3), back_row(language)])


def renew(language: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[_button(text("button_renew", language), MenuCB(screen="plans").pack())]]
    )


def back_only(language: str, screen: str = "main") -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[back_row(language, screen)])


# A buy button's label per rail (literal keys, so the text check finds each one).
BUY_LABELS: dict[Rail, str] = {
    Rail.STARS: "button_buy_stars",
    Rail.SOL: "button_buy_sol",
    Rail.NOWPAYMENTS: "button_buy_nowpayments",
}


def plan_card(plan: Plan, rails: Sequence[Rail], monthly: bool, language: str) -> InlineKeyboardMarkup:
    """A buy button per rail the plan is offered on, the monthly subscription where it is offered,
    and back to the plans."""
    rows = []
    for rail in rails:
        price = plan.price(rail)
        if price is None:
            continue
        label = text(BUY_LABELS[rail], language, amount=money(price, PAID_RAILS[rail]))
        rows.append([_button(label, PayCB(action="buy", plan=plan.code, rail=rail.value).pack())])
    if monthly and plan.price_stars is not None:
        label = text("button_monthly", language, amount=money(Decimal(plan.price_stars), STARS_CURRENCY))
        rows.append([_button(label, PayCB(action="monthly", plan=plan.code).pack())])
    rows.append(back_row(language, "plans"))
    return InlineKeyboardMarkup(inline_keyboard=rows)


def order(order: Order, pay_url: str | None, is_open: bool, language: str) -> InlineKeyboardMarkup:
    """An open order: its payment page (NOWPayments), refresh and cancel; then back to the plans."""
    rows = []
    if is_open:
        if pay_url and pay_url.startswith(("https://", "http://")):
            rows.append([_link(text("button_open_payment_page", language), pay_url)])
        rows.append(
            [
                _button(text("button_refresh", language), PayCB(action="refresh", order=order.id).pack()),
                _button(text("button_cancel_order", language), PayCB(action="cancel", order=order.id).pack()),
            ]
        )
    rows.append([_button(text("button_plans", language), MenuCB(screen="plans").pack())])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def subscribe(link: str, stars: int, plan_code: str, language: str) -> InlineKeyboardMarkup:
    label = text("button_subscribe", language, amount=money(Decimal(stars), STARS_CURRENCY))
    return InlineKeyboardMarkup(
        inline_keyboard=[[_link(label, link)], [_button(text("button_back", language), PlanCB(code=plan_code).pack())]]
    )


def status(
    language: str, cancel_autorenew: bool, reports: bool | None = None, followups: str | None = None
) -> InlineKeyboardMarkup:
    """`reports`: whether the subscriber gets reports (None: unknown, no button); `followups`: the
    follow-up choice as its button shows it (None: no button)."""
    rows = []
    if followups is not None:
        rows.append([_button(text("button_followups", language, choice=followups), MenuCB(screen="followups").pack())])
    if cancel_autorenew:
        rows.append([_button(text("button_cancel_autorenew", language), PayCB(action="unsub").pack())])
    if reports is not None:
        state = text("reports_state_on" if reports else "reports_state_off", language)
        rows.append([_button(text("button_reports", language, state=state), ReportsCB(action="show").pack())])
    rows.append(back_row(language))
    return InlineKeyboardMarkup(inline_keyboard=rows)


def unsubscribe_confirm(language: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                _button(text("button_unsub_confirm", language), PayCB(action="unsub_ok").pack()),
                _button(text("button_keep", language), MenuCB(screen="status").pack()),
            ]
        ]
    )


def reports_menu(language: str, on: bool) -> InlineKeyboardMarkup:
    """The reports switch, then back to /status."""
    switch = ReportsCB(action="off" if on else "on").pack()
    label = text("button_reports_off" if on else "button_reports_on", language)
    return InlineKeyboardMarkup(inline_keyboard=[[_button(label, switch)], back_row(language, "status")])


def followups(choices: Sequence[tuple[int, str]], current: int, language: str) -> InlineKeyboardMarkup:
    """One button per (followup_min, label), the current one ticked; back to /status."""
    buttons = [
        _button(("✓ " if minimum == current else "") + label, FollowupCB(minimum=minimum).pack())
        for minimum, label in choices
    ]
    return InlineKeyboardMarkup(inline_keyboard=[*_rows(buttons, 2), back_row(language, "status")])
