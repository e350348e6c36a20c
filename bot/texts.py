"""Every sentence the bot says, per language; plain data so tests can check no text is missing."""

from __future__ import annotations

DEFAULT_LANGUAGE = "en"

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
