"""All routers, in the order the dispatcher tries them.

Each module builds its router in `build_router()` rather than at import, because an aiogram
router can belong to one dispatcher only, and tests and the demo build several.
"""

from __future__ import annotations

from aiogram import Router

from bot.routers import common, errors


def get_routers() -> list[Router]:
    return [errors.build_router(), common.build_router()]
