"""All routers, in the order the dispatcher tries them.

Each module builds its router in `build_router()` rather than at import, because an aiogram
router can belong to one dispatcher only, and tests and the demo build several.

Every router after `errors` gets the subscriber middleware, so its message and callback handlers
may ask for `subscriber` and `language` (and `subscriber_loaded`: False when the stores were down
and `subscriber` is a stand-in built from the Telegram user).
"""

from __future__ import annotations

from aiogram import Router

from bot.middlewares.subscriber import attach_subscriber_middleware
from bot.routers import (
    account,
    admin,
    alerts_control,
    channels,
    common,
    errors,
    filters,
    followups,
    membership,
    payments,
    presets,
    replay,
    reports,
    settings,
    trial,
)


def get_routers() -> list[Router]:
    user_routers = [
        # First: a successful payment is credited whatever flow the user is in.
        payments.build_router(),
        settings.build_router(),
        filters.build_router(),
        replay.build_router(),
        alerts_control.build_router(),
        account.build_router(),
        followups.build_router(),
        reports.build_router(),
        channels.build_router(),
        presets.build_router(),
        admin.build_router(),
        trial.build_router(),
        common.build_router(),
        common.build_fallback_router(),  # last: presses of buttons nothing above handles
    ]
    for router in user_routers:
        attach_subscriber_middleware(router)
    return [errors.build_router(), membership.build_router(), *user_routers]
