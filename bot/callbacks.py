"""Callback data of every inline button, through aiogram's CallbackData factories.

Each prefix carries a version digit: when a factory's fields change, bump it (m1 -> m2) and
buttons on old messages stop matching instead of being misread; a press that matches nothing
is answered by the menu router's fallback ("this button is out of date"). Telegram allows 64
bytes of callback data; `tests/test_menus.py` checks the longest value each factory can make.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData

MAX_CALLBACK_BYTES = 64
PRESET_CODE_MAX = 24  # presets.code is limited to this, so PresetCB always fits


class MenuCB(CallbackData, prefix="m1"):
    """Open a screen: main, filters, presets, plans, status, language, help, privacy."""

    screen: str


class FilterCB(CallbackData, prefix="f1"):
    """edit NAME (asks for a value), reset NAME, reset_all, reset_all_ok, cancel, replay."""

    action: str
    name: str = ""


class PresetCB(CallbackData, prefix="p1"):
    """show CODE, apply CODE, follow CODE, unfollow CODE."""

    action: str
    code: str = ""


class LanguageCB(CallbackData, prefix="l1"):
    code: str


class PrivacyCB(CallbackData, prefix="d1"):
    """ask (show the warning), confirm (delete now), cancel."""

    action: str


class PlanCB(CallbackData, prefix="pl1"):
    code: str


class PayCB(CallbackData, prefix="b1"):
    """buy PLAN RAIL (start an order), monthly PLAN (the Stars subscription), refresh ORDER,
    cancel ORDER, unsub (asks), unsub_ok (cancels auto-renew)."""

    action: str
    plan: str = ""
    rail: str = ""
    order: str = ""


class ReportsCB(CallbackData, prefix="r1"):
    """show (the reports screen), on, off."""

    action: str


class FollowupCB(CallbackData, prefix="u1"):
    """Follow-ups from this multiple on (0: none)."""

    minimum: int
