"""A local Telegram Bot API server that speaks the real wire format and enforces Telegram's limits.

`FakeTelegramServer` serves ``/bot{token}/{method}`` for a real aiogram ``Bot``; the demo, the
benches and the tests run the bot against it.
"""

from standins.telegram.server import (
    DEFAULT_TOKEN,
    AnsweredCallback,
    AnsweredPreCheckout,
    ApiCall,
    EntityParseError,
    FakeTelegramServer,
    LocalAiohttpSession,
    ManualClock,
    PhotoInfo,
    RateLimits,
    SentRecord,
    ServerStats,
    WaitTimeout,
    parse_html,
)

__all__ = [
    "DEFAULT_TOKEN",
    "AnsweredCallback",
    "AnsweredPreCheckout",
    "ApiCall",
    "EntityParseError",
    "FakeTelegramServer",
    "LocalAiohttpSession",
    "ManualClock",
    "PhotoInfo",
    "RateLimits",
    "SentRecord",
    "ServerStats",
    "WaitTimeout",
    "parse_html",
]
