"""Inline keyboards. Pure builders: labels from bot.texts, callback data from bot.callbacks."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import FilterCB, LanguageCB, MenuCB, PlanCB, PrivacyCB
from bot.texts import LANGUAGE_NAMES, text
from domain.filters import FILTER_SPECS, Filters

MAIN_SCREENS = ("filters", "presets", "plans", "status", "language", "help")


def _button(label: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=label, callback_data=data)


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
