"""Every sentence the bot says, per language; plain data so tests can check no text is missing."""

from __future__ import annotations

from services.filters import FILTER_SPECS

DEFAULT_LANGUAGE = "en"

# English "what a filter accepts" comes from the filter specs themselves, so it cannot drift.
_ACCEPTED_EN: dict[str, str] = {name: spec.accepted for name, spec in FILTER_SPECS.items()}

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "welcome": (
            "<b>Welcome to Token Alert Bot, {name}!</b>\n\n"
            "I watch the Solana token calls of Telegram channels in real time, check every token "
            "against <i>your</i> filters, and alert you once per token that passes, then tell "
            "you when it does 2x, 5x and 10x.\n\n"
            "Set your filters with /set, see them with /filters, and read /help for everything else."
        ),
        "help": (
            "<b>What I can do</b>\n"
            "/start: welcome and main menu\n"
            "/filters: your filters\n"
            "/set NAME VALUE: set a filter, e.g. <code>/set min_mcap 50k</code>\n"
            "/unset NAME: remove a filter\n"
            "/pause, /resume: stop and restart alerts\n"
            "/plans: plans and prices\n"
            "/status: your plan and settings\n"
            "/language: choose the language\n"
            "/paysupport: help with a payment\n"
            "/privacy: what is stored about you"
        ),
        "error": "Something went wrong on our side. Please try again in a moment.",
        "unavailable": "Your settings cannot be reached right now. Please try again in a minute.",
        "filters_title": "<b>Your filters</b>",
        "filters_none": "You have no filters set: every called token passes.",
        "filters_hint": "Change one with <code>/set NAME VALUE</code>, remove one with <code>/unset NAME</code>.",
        "set_usage": (
            "<b>Usage:</b> <code>/set NAME VALUE</code>, e.g. <code>/set min_mcap 50k</code>\n\n"
            "<b>Filters and the values they accept:</b>\n{filters}"
        ),
        "unset_usage": "<b>Usage:</b> <code>/unset NAME</code>, e.g. <code>/unset min_mcap</code>\nFilters: {names}",
        "filter_set": "✅ Saved: <code>{name}</code> = {value}",
        "filter_unset": "✅ Removed: <code>{name}</code>",
        "filter_not_set": "<code>{name}</code> was not set; nothing changed.",
        "filter_unknown": (
            "❌ There is no filter called <code>{name}</code>. Nothing was saved.\n"
            "Filters are: {names}\nSee <code>/set</code> for what each accepts."
        ),
        "filter_bad_value": (
            "❌ Cannot set <code>{name}</code> to <code>{value}</code>: {reason}.\n"
            "Accepted: {accepted}\nNothing was saved."
        ),
        "filter_conflict": (
            "❌ Cannot set <code>{name}</code> to <code>{value}</code>: it contradicts your other filters "
            "(min_mcap must not be above max_mcap).\nNothing was saved."
        ),
        "paused": "⏸ Alerts paused. Send /resume to get them again.",
        "already_paused": "Alerts are already paused. Send /resume to get them again.",
        "resumed": "▶️ Alerts resumed.",
        "already_active": "Alerts are already on.",
        "resumed_no_plan": "You have no active plan, so no alerts will come yet: see /plans.",
        "admin_only": "⛔ This command is for admins only.",
        "grant_usage": "<b>Usage:</b> <code>/grant USER_ID DAYS</code>: a numeric Telegram user id and 1..3650 days.",
        "revoke_usage": "<b>Usage:</b> <code>/revoke USER_ID</code>: a numeric Telegram user id.",
        "user_unknown": "User <code>{user_id}</code> is unknown: they have to send /start to the bot first.",
        "grant_done": "✅ Granted {days} days to <code>{user_id}</code>. Plan active until {expires}.",
        "grant_notice": "🎁 You were given {days} days of alerts. Your plan is active until {expires}.",
        "revoke_done": "✅ Revoked the plan of <code>{user_id}</code>.",
        "revoke_none": "<code>{user_id}</code> has no active plan; nothing changed.",
        "accepted_min_mcap": _ACCEPTED_EN["min_mcap"],
        "accepted_max_mcap": _ACCEPTED_EN["max_mcap"],
        "accepted_min_liquidity": _ACCEPTED_EN["min_liquidity"],
        "accepted_min_holders": _ACCEPTED_EN["min_holders"],
        "accepted_max_age": _ACCEPTED_EN["max_age"],
        "accepted_min_win_rate": _ACCEPTED_EN["min_win_rate"],
        "accepted_min_avg_gain": _ACCEPTED_EN["min_avg_gain"],
        "accepted_channels": _ACCEPTED_EN["channels"],
        "accepted_exclude_channels": _ACCEPTED_EN["exclude_channels"],
        "accepted_min_channels": _ACCEPTED_EN["min_channels"],
    },
    "ru": {
        "welcome": (
            "<b>Добро пожаловать в Token Alert Bot, {name}!</b>\n\n"
            "Я в реальном времени слежу за коллами токенов Solana в Telegram-каналах, проверяю "
            "каждый токен по <i>вашим</i> фильтрам и присылаю одно оповещение на токен, а потом "
            "сообщаю, когда он сделает 2x, 5x и 10x.\n\n"
            "Настройте фильтры командой /set, посмотрите их в /filters, а всё остальное есть в /help."
        ),
        "help": (
            "<b>Что я умею</b>\n"
            "/start: приветствие и главное меню\n"
            "/filters: ваши фильтры\n"
            "/set ИМЯ ЗНАЧЕНИЕ: задать фильтр, например <code>/set min_mcap 50k</code>\n"
            "/unset ИМЯ: убрать фильтр\n"
            "/pause, /resume: остановить и возобновить оповещения\n"
            "/plans: тарифы и цены\n"
            "/status: ваш тариф и настройки\n"
            "/language: выбрать язык\n"
            "/paysupport: помощь с оплатой\n"
            "/privacy: какие данные о вас хранятся"
        ),
        "error": "У нас что-то пошло не так. Пожалуйста, попробуйте ещё раз чуть позже.",
        "unavailable": "Ваши настройки сейчас недоступны. Пожалуйста, попробуйте через минуту.",
        "filters_title": "<b>Ваши фильтры</b>",
        "filters_none": "Фильтры не заданы: проходит каждый токен из коллов.",
        "filters_hint": "Изменить: <code>/set ИМЯ ЗНАЧЕНИЕ</code>, убрать: <code>/unset ИМЯ</code>.",
        "set_usage": (
            "<b>Как использовать:</b> <code>/set ИМЯ ЗНАЧЕНИЕ</code>, например <code>/set min_mcap 50k</code>\n\n"
            "<b>Фильтры и допустимые значения:</b>\n{filters}"
        ),
        "unset_usage": (
            "<b>Как использовать:</b> <code>/unset ИМЯ</code>, например <code>/unset min_mcap</code>\n"
            "Фильтры: {names}"
        ),
        "filter_set": "✅ Сохранено: <code>{name}</code> = {value}",
        "filter_unset": "✅ Убрано: <code>{name}</code>",
        "filter_not_set": "Фильтр <code>{name}</code> не был задан; ничего не изменилось.",
        "filter_unknown": (
            "❌ Фильтра <code>{name}</code> нет. Ничего не сохранено.\n"
            "Фильтры: {names}\nЧто принимает каждый, смотрите в <code>/set</code>."
        ),
        "filter_bad_value": (
            "❌ Нельзя установить <code>{name}</code> = <code>{value}</code>: значение не подходит.\n"
            "Допустимо: {accepted}\nНичего не сохранено."
        ),
        "filter_conflict": (
            "❌ Нельзя установить <code>{name}</code> = <code>{value}</code>: это противоречит другим вашим "
            "фильтрам (min_mcap не может быть больше max_mcap).\nНичего не сохранено."
        ),
        "paused": "⏸ Оповещения приостановлены. Отправьте /resume, чтобы снова их получать.",
        "already_paused": "Оповещения уже приостановлены. Отправьте /resume, чтобы снова их получать.",
        "resumed": "▶️ Оповещения возобновлены.",
        "already_active": "Оповещения уже включены.",
        "resumed_no_plan": "У вас нет активного тарифа, поэтому оповещения пока не придут: смотрите /plans.",
        "admin_only": "⛔ Эта команда только для администраторов.",
        "grant_usage": (
            "<b>Как использовать:</b> <code>/grant USER_ID ДНИ</code>: числовой id пользователя Telegram "
            "и от 1 до 3650 дней."
        ),
        "revoke_usage": "<b>Как использовать:</b> <code>/revoke USER_ID</code>: числовой id пользователя Telegram.",
        "user_unknown": "Пользователь <code>{user_id}</code> неизвестен: сначала он должен отправить боту /start.",
        "grant_done": "✅ Пользователю <code>{user_id}</code> выдано дней: {days}. Тариф активен до {expires}.",
        "grant_notice": "🎁 Вам выдано дней оповещений: {days}. Ваш тариф активен до {expires}.",
        "revoke_done": "✅ Тариф пользователя <code>{user_id}</code> отозван.",
        "revoke_none": "У <code>{user_id}</code> нет активного тарифа; ничего не изменилось.",
        "accepted_min_mcap": "сумма в USD, например 50000, 50k или 1.5m",
        "accepted_max_mcap": "сумма в USD, например 500k или 2m",
        "accepted_min_liquidity": "сумма в USD, например 10k",
        "accepted_min_holders": "целое число, например 100",
        "accepted_max_age": "минуты, например 30, 90m или 2h",
        "accepted_min_win_rate": "проценты от 0 до 100, например 40",
        "accepted_min_avg_gain": "множитель, например 2 или 2x",
        "accepted_channels": "id каналов или @username через запятую",
        "accepted_exclude_channels": "id каналов или @username через запятую",
        "accepted_min_channels": "целое число от 1 до 100, по умолчанию 1",
    },
}


def pick_language(language_code: str | None) -> str:
    """The bot's language for a Telegram `language_code` such as 'ru' or 'en-GB'."""
    if language_code:
        base = language_code.split("-")[0].lower()
        if base in TEXTS:
            return base
    return DEFAULT_LANGUAGE


def text(key: str, language: str | None = None, **values: object) -> str:
    table = TEXTS.get(language or DEFAULT_LANGUAGE, TEXTS[DEFAULT_LANGUAGE])
    template = table.get(key, TEXTS[DEFAULT_LANGUAGE][key])
    return template.format(**values) if values else template
