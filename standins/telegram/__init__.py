"""A local Telegram Bot API server that speaks the real wire format.

`FakeTelegramServer` is an aiohttp web server answering ``/bot{token}/{method}`` exactly the way
api.telegram.org does (``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N,
"description": "...", "parameters": {...}}`` with the matching HTTP status), so a real aiogram
``Bot`` talks to it through ``AiohttpSession(api=server.api_server())`` with no mocking at all.

It is shared by the test suite, by ``alertbot demo`` and by the benchmarks, which is why it is
importable without pytest and why its rate limits and clock are configurable.

What it models, and why:

* the send limits Telegram enforces (~30 messages/s per bot, 1/s per private chat after a short
  burst of 3, 20/min per group), answering 429 with ``retry_after`` exactly like Telegram,
  because the bot's broadcaster must survive them (`limits`);
* recipients that went away (blocked, deactivated, kicked, deleted, migrated group), answering the
  403/400 errors the bot must use to clean up its subscriber list (`state`, `methods`);
* Telegram's HTML parser (a port of tdlib's ``parse_html``) and the length limits, because a bad
  alert template is a 400 in production and should be one in the tests too (`html`);
* the update queue with getUpdates offset / long-poll semantics, and webhook delivery (`methods`);
* an injection API (`inject_message`, `inject_callback`, ...) for what users do (`state`), and an
  observation API (`sent`, `wait_for_sent`, `stats`, ...) for what the bot did (`server`,
  `records`).

Everything runs on the event loop that started the server; the injection and observation helpers
are plain methods that must be called from that loop's thread.
"""

from standins.telegram.html import EntityParseError, parse_html
from standins.telegram.limits import ManualClock, RateLimits
from standins.telegram.records import (
    AnsweredCallback,
    AnsweredPreCheckout,
    ApiCall,
    DocumentInfo,
    PhotoInfo,
    SentRecord,
    ServerStats,
)
from standins.telegram.server import DEFAULT_TOKEN, FakeTelegramServer, LocalAiohttpSession, WaitTimeout

__all__ = [
    "DEFAULT_TOKEN",
    "AnsweredCallback",
    "AnsweredPreCheckout",
    "ApiCall",
    "DocumentInfo",
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
