"""A test double of the Telegram Bot API server that speaks the real wire format.

`FakeTelegramServer` is an aiohttp web server answering ``/bot{token}/{method}`` exactly the way
api.telegram.org does (``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N,
"description": "...", "parameters": {...}}`` with the matching HTTP status), so a real aiogram
``Bot`` talks to it through ``AiohttpSession(api=server.api_server())`` with no mocking at all.

It is shared by the test suite, by ``alertbot demo`` and by the benchmarks, which is why it is
importable without pytest and why its rate limits and clock are configurable.

What it models, and why:

* the send limits Telegram enforces (~30 messages/s per bot, 1/s per private chat after a short
  burst of 3, 20/min per group), answering 429 with ``retry_after`` exactly like Telegram,
  because the bot's broadcaster must survive them;
* recipients that went away (blocked, deactivated, kicked, deleted, migrated group), answering the
  403/400 errors the bot must use to clean up its subscriber list;
* Telegram's HTML parser (a port of tdlib's ``parse_html``) and the length limits, because a bad
  alert template is a 400 in production and should be one in the tests too;
* the update queue with getUpdates offset / long-poll semantics, and webhook delivery;
* an injection API (`inject_message`, `inject_callback`, ...) for what users do, and an
  observation API (`sent`, `wait_for_sent`, `stats`, ...) for what the bot did.

Everything runs on the event loop that started the server; the injection and observation helpers
are plain methods that must be called from that loop's thread.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from types import TracebackType
from typing import Any, Final

import aiohttp
from aiohttp import web
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

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

JsonDict = dict[str, Any]

#: A well-formed token; any ``<digits>:<secret>`` token is accepted unless `tokens=` restricts it.
DEFAULT_TOKEN: Final[str] = "123456789:AAFakeTokenForTests-0123456789abcdefghij"

MAX_TEXT_LENGTH: Final[int] = 4096
MAX_CAPTION_LENGTH: Final[int] = 1024
MAX_CALLBACK_DATA_BYTES: Final[int] = 64
MAX_CALLBACK_ANSWER_LENGTH: Final[int] = 200
#: Telegram accepts multipart uploads of up to 50 MB; a bit more leaves room for the other fields.
MAX_REQUEST_BYTES: Final[int] = 52 * 1024 * 1024

_TOKEN_RE: Final[re.Pattern[str]] = re.compile(r"^(\d{1,20}):([A-Za-z0-9_-]{1,200})$")
# Telegram marks /commands anywhere in a text, not only at its start.
_COMMAND_RE: Final[re.Pattern[str]] = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?!\w)")
_BOT_COMMAND_RE: Final[re.Pattern[str]] = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET_TOKEN_RE: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# Supergroup and channel ids look like -100xxxxxxxxxx; smaller negative ids are basic groups.
_SUPERGROUP_ID_LIMIT: Final[int] = -1_000_000_000_000

# Update types a bot receives when it never asked for a specific list (Telegram's default).
_DEFAULT_EXCLUDED_UPDATES: Final[frozenset[str]] = frozenset(
    {"chat_member", "message_reaction", "message_reaction_count"}
)
_INLINE_BUTTON_ACTIONS: Final[tuple[str, ...]] = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_ALLOWED_BUTTON_URL_SCHEMES: Final[frozenset[str]] = frozenset({"http", "https", "tg", "ton"})

_NOT_MODIFIED: Final[str] = (
    "message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


# --------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------


class WaitTimeout(AssertionError):
    """Raised by the ``wait_for*`` helpers; an AssertionError so pytest reports it as a failure."""


class EntityParseError(ValueError):
    """Text with parse_mode=HTML that Telegram would reject; the message is Telegram's wording."""


class LocalAiohttpSession(AiohttpSession):
    """aiogram's AiohttpSession, minus the 0.25 s pause in close().

    aiogram waits that long for TLS connections to shut down gracefully; plain HTTP to a local
    server needs no such wait, and dozens of tests each closing a bot would add seconds.
    """

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class ManualClock:
    """A clock for the rate limiter that only moves when told to.

    Tests pass it as ``FakeTelegramServer(clock=clock)`` so that "N sends within one second" is
    true by construction instead of depending on how fast the machine is.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now: float = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RateLimits:
    """Send limits per bot. ``None`` switches one limit off; ``enabled=False`` all of them.

    Defaults are the ones documented in Telegram's bots FAQ. Counted methods: sendMessage,
    sendPhoto, sendInvoice (overall + per chat) and editMessageText/editMessageReplyMarkup
    (overall only: edits have no documented per-chat limit).
    """

    enabled: bool = True
    global_per_second: int | None = 30
    #: Overall limit for sends carrying ``allow_paid_broadcast=true``.
    paid_per_second: int | None = 1000
    private_chat_per_second: int | None = 1
    #: Quick messages a private chat takes before its per-second limit applies (Telegram lets a
    #: short burst through): a bucket of this many, refilled at private_chat_per_second. 1 is a
    #: strict sliding window.
    private_chat_burst: int = 3
    group_per_minute: int | None = 20
    global_window: float = 1.0
    private_window: float = 1.0
    group_window: float = 60.0

    @classmethod
    def unlimited(cls) -> RateLimits:
        return cls(enabled=False)


@dataclass
class ServerStats:
    """Counters of what the server answered; `rejected_*` count error answers by HTTP status."""

    requests: int = 0
    sent: int = 0
    sent_paid_broadcast: int = 0
    edited: int = 0
    deleted: int = 0
    rejected_400: int = 0
    rejected_401: int = 0
    rejected_403: int = 0
    rejected_404: int = 0
    rejected_409: int = 0
    rejected_429: int = 0
    rejected_other: int = 0
    updates_injected: int = 0
    updates_delivered: int = 0
    webhook_posts: int = 0
    webhook_errors: int = 0
    callbacks_answered: int = 0
    pre_checkouts_answered: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class PhotoInfo:
    """What a sendPhoto carried: an upload (``content`` set), a file_id, or an HTTP URL."""

    source: str  # "upload" | "file_id" | "url"
    file_id: str
    file_unique_id: str
    filename: str | None = None
    content_type: str | None = None
    size: int | None = None
    width: int = 0
    height: int = 0
    url: str | None = None
    content: bytes | None = None


@dataclass(frozen=True)
class SentRecord:
    """One accepted send (or edit, in `FakeTelegramServer.edits`), as the server stored it.

    ``text``/``caption`` are what the user sees (markup removed, entities decoded, trimmed);
    ``raw_text`` is the text or caption exactly as the bot sent it.
    """

    method: str
    bot_id: int
    chat_id: int
    message_id: int
    text: str | None
    caption: str | None
    raw_text: str | None
    parse_mode: str | None
    entities: list[JsonDict]
    reply_markup: JsonDict | None
    photo: PhotoInfo | None
    invoice: JsonDict | None
    allow_paid_broadcast: bool
    disable_web_page_preview: bool
    monotonic: float
    wall_time: float
    params: JsonDict
    message: JsonDict

    @property
    def body(self) -> str:
        """Text or caption, whichever the message has ('' for neither, e.g. an invoice)."""
        return self.text if self.text is not None else (self.caption or "")

    @property
    def callback_data(self) -> list[str]:
        """All callback_data values of the inline keyboard, row by row."""
        return _callback_datas(self.reply_markup)


@dataclass(frozen=True)
class AnsweredCallback:
    callback_query_id: str
    update_id: int
    user_id: int
    data: str | None
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int | None
    monotonic: float


@dataclass(frozen=True)
class AnsweredPreCheckout:
    pre_checkout_query_id: str
    update_id: int
    user_id: int
    ok: bool
    error_message: str | None
    currency: str
    total_amount: int
    invoice_payload: str
    monotonic: float


@dataclass(frozen=True)
class ApiCall:
    """One request as answered, kept in `FakeTelegramServer.calls` (bounded) for debugging."""

    method: str
    bot_id: int
    params: JsonDict
    status: int
    description: str | None
    monotonic: float


# --------------------------------------------------------------------------------------------
# Telegram HTML (port of tdlib's parse_html, so error wording and edge cases match)
# --------------------------------------------------------------------------------------------

_HTML_TAGS: Final[frozenset[str]] = frozenset(
    {"a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji",
     "span", "pre", "code", "blockquote"}
)
_SIMPLE_TAG_ENTITIES: Final[dict[str, str]] = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "tg-spoiler": "spoiler", "span": "spoiler",
}
_NAMED_HTML_ENTITIES: Final[dict[str, str]] = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
# tdlib's is_space(): NUL doubles as its end-of-string sentinel.
_HTML_SPACES: Final[frozenset[str]] = frozenset(" \t\r\n\0\v")


@dataclass
class _OpenTag:
    name: str
    argument: str
    utf16_offset: int
    result_index: int


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _decode_html_entity(text: str, pos: int) -> tuple[str, int] | None:
    """Decode ``&...`` at `pos`; returns (character, next index) or None to keep '&' literally."""
    n = len(text)
    end = pos + 1
    value = 0
    if end < n and text[end] == "#":
        end += 1
        if end < n and text[end] == "x":
            end += 1
            while end < n and text[end] in "0123456789abcdefABCDEF":
                value = value * 16 + int(text[end], 16)
                end += 1
                if value >= 0x10FFFF:
                    return None
        else:
            while end < n and "0" <= text[end] <= "9":
                value = value * 10 + int(text[end])
                end += 1
                if value >= 0x10FFFF:
                    return None
        if value == 0 or value >= 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            return None
        char = chr(value)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = _NAMED_HTML_ENTITIES.get(text[pos + 1 : end])
        if named is None:
            return None
        char = named
    # The ';' is optional, as in tdlib.
    if end < n and text[end] == ";":
        end += 1
    return char, end


def parse_html(text: str) -> tuple[str, list[JsonDict]]:
    """Parse Telegram-flavoured HTML into (plain text, entities with UTF-16 offsets).

    Raises `EntityParseError` with tdlib's wording for anything Telegram answers
    "Bad Request: can't parse entities: ..." to. The result is not trimmed (see `_trim`).
    """
    n = len(text)

    def at(index: int) -> str:
        return text[index] if index < n else "\0"

    def error(message: str) -> EntityParseError:
        return EntityParseError(message)

    out: list[str] = []
    utf16 = 0
    stack: list[_OpenTag] = []
    entities: list[JsonDict] = []
    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            decoded = _decode_html_entity(text, i)
            if decoded is not None:
                char, i = decoded
                out.append(char)
                utf16 += 2 if ord(char) > 0xFFFF else 1
                continue
        if c != "<":
            out.append(c)
            utf16 += 2 if ord(c) > 0xFFFF else 1
            i += 1
            continue

        begin = i
        i += 1
        if at(i) != "/":
            while at(i) not in _HTML_SPACES and at(i) != ">":
                i += 1
            if at(i) == "\0":
                raise error(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
            tag_name = text[begin + 1 : i].lower()
            if tag_name not in _HTML_TAGS:
                raise error(
                    f'Unsupported start tag "{tag_name}" at byte offset {_byte_offset(text, begin)}'
                )
            argument = ""
            while at(i) != ">":
                while at(i) != "\0" and at(i) in _HTML_SPACES:
                    i += 1
                if at(i) == ">":
                    break
                attribute_begin = i
                while at(i) not in _HTML_SPACES and at(i) not in "=>":
                    i += 1
                attribute_name = text[attribute_begin:i]
                if not attribute_name:
                    raise error(
                        f'Empty attribute name in the tag "{tag_name}" at byte offset '
                        f"{_byte_offset(text, begin)}"
                    )
                while at(i) != "\0" and at(i) in _HTML_SPACES:
                    i += 1
                if at(i) == "\0":
                    raise error(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
                if at(i) != "=":
                    # A valueless attribute; only <blockquote expandable> means something.
                    if tag_name == "blockquote" and attribute_name == "expandable":
                        argument = "1"
                    continue
                i += 1
                while at(i) != "\0" and at(i) in _HTML_SPACES:
                    i += 1
                if at(i) == "\0":
                    raise error(
                        f'Unclosed start tag "{tag_name}" at byte offset {_byte_offset(text, begin)}'
                    )
                value_chars: list[str] = []
                if at(i) not in "'\"":
                    # An unquoted name token: letters, digits, periods, hyphens; case-insensitive.
                    token_begin = i
                    while at(i).isascii() and (at(i).isalnum() or at(i) in ".-") and at(i) != "\0":
                        i += 1
                    value_chars.append(text[token_begin:i].lower())
                    if at(i) not in _HTML_SPACES and at(i) != ">":
                        raise error(
                            f"Unexpected end of name token at byte offset {_byte_offset(text, token_begin)}"
                        )
                else:
                    quote = text[i]
                    i += 1
                    while at(i) != quote and at(i) != "\0":
                        if text[i] == "&":
                            decoded = _decode_html_entity(text, i)
                            if decoded is not None:
                                value_chars.append(decoded[0])
                                i = decoded[1]
                                continue
                        value_chars.append(text[i])
                        i += 1
                    if at(i) == quote:
                        i += 1
                if at(i) == "\0":
                    raise error(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
                value = "".join(value_chars)
                if tag_name == "a" and attribute_name == "href":
                    argument = value
                elif tag_name == "code" and attribute_name == "class" and value.startswith("language-"):
                    argument = value[len("language-") :]
                elif tag_name == "span" and attribute_name == "class" and value.startswith("tg-"):
                    argument = value[len("tg-") :]
                elif tag_name == "tg-emoji" and attribute_name == "emoji-id":
                    argument = value
                elif tag_name == "blockquote" and attribute_name == "expandable":
                    argument = "1"
            if tag_name == "span" and argument != "spoiler":
                raise error(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(text, begin)}'
                )
            stack.append(_OpenTag(tag_name, argument, utf16, len(out)))
            i += 1  # past '>'
            continue

        # An end tag.
        if not stack:
            raise error(f"Unexpected end tag at byte offset {_byte_offset(text, begin)}")
        while at(i) not in _HTML_SPACES and at(i) != ">":
            i += 1
        end_tag_name = text[begin + 2 : i]
        while at(i) != "\0" and at(i) in _HTML_SPACES:
            i += 1
        if at(i) != ">":
            raise error(f"Unclosed end tag at byte offset {_byte_offset(text, begin)}")
        i += 1
        opened = stack.pop()
        if end_tag_name and end_tag_name != opened.name:
            raise error(
                f'Unmatched end tag at byte offset {_byte_offset(text, begin)}, expected '
                f'"</{opened.name}>", found "</{end_tag_name}>"'
            )
        length = utf16 - opened.utf16_offset
        if length <= 0:
            continue
        entity: JsonDict | None = None
        if opened.name in _SIMPLE_TAG_ENTITIES:
            entity = {"type": _SIMPLE_TAG_ENTITIES[opened.name]}
        elif opened.name == "tg-emoji":
            if not opened.argument.isdigit():
                raise error("Invalid custom emoji identifier specified")
            entity = {"type": "custom_emoji", "custom_emoji_id": opened.argument}
        elif opened.name == "a":
            url = opened.argument or "".join(out[opened.result_index :])
            match = re.fullmatch(r"tg://user\?id=(\d+)", url)
            if match:
                entity = {"type": "text_mention",
                          "user": {"id": int(match.group(1)), "is_bot": False, "first_name": ""}}
            elif url.strip():
                entity = {"type": "text_link", "url": url}
        elif opened.name == "code":
            parent = stack[-1] if stack else None
            if parent is not None and parent.name == "pre" and parent.utf16_offset == opened.utf16_offset:
                # <pre><code class="language-x"> is one "pre" entity with a language.
                if opened.argument and not parent.argument:
                    parent.argument = opened.argument
            else:
                entity = {"type": "code"}
        elif opened.name == "pre":
            entity = {"type": "pre"}
            if opened.argument:
                entity["language"] = opened.argument
        elif opened.name == "blockquote":
            entity = {"type": "expandable_blockquote" if opened.argument else "blockquote"}
        if entity is not None:
            entity["offset"] = opened.utf16_offset
            entity["length"] = length
            entities.append(entity)
    if stack:
        raise error(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _trim(text: str, entities: list[JsonDict]) -> tuple[str, list[JsonDict]]:
    """Strip surrounding whitespace and clip entities, as Telegram does before storing a text."""
    stripped_left = text.lstrip()
    shift = _utf16_len(text) - _utf16_len(stripped_left)
    result = stripped_left.rstrip()
    total = _utf16_len(result)
    clipped: list[JsonDict] = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, total)
        if end > start:
            clipped.append({**entity, "offset": start, "length": end - start})
    return result, clipped


def _command_entities(text: str) -> list[JsonDict]:
    entities: list[JsonDict] = []
    for match in _COMMAND_RE.finditer(text):
        entities.append(
            {
                "type": "bot_command",
                "offset": _utf16_len(text[: match.start()]),
                "length": _utf16_len(match.group(0)),
            }
        )
    return entities


def _callback_datas(markup: JsonDict | None) -> list[str]:
    if not markup or not isinstance(markup.get("inline_keyboard"), list):
        return []
    return [
        button["callback_data"]
        for row in markup["inline_keyboard"]
        if isinstance(row, list)
        for button in row
        if isinstance(button, dict) and isinstance(button.get("callback_data"), str)
    ]


def _image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG/GIF/JPEG, (0, 0) if unknown; enough to fill a PhotoSize."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            segment = int.from_bytes(data[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
            i += 2 + segment
    return 0, 0


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


def _replace_bot_placeholder(value: Any, bot_user: JsonDict) -> None:
    """Swap the id-0 bot user of early injections for the real one, in place."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict) and item.get("is_bot") is True and item.get("id") == 0:
                value[key] = dict(bot_user)
            else:
                _replace_bot_placeholder(item, bot_user)
    elif isinstance(value, list):
        for item in value:
            _replace_bot_placeholder(item, bot_user)


class _ApiError(Exception):
    """An error answer; raised anywhere inside a method handler."""

    def __init__(self, status: int, description: str, parameters: JsonDict | None = None) -> None:
        super().__init__(description)
        self.status: int = status
        self.description: str = description
        self.parameters: JsonDict | None = parameters


def _bad_request(message: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {message}")


@dataclass(frozen=True)
class _Upload:
    filename: str
    content_type: str
    content: bytes


class _Pulse:
    """Wakes everybody waiting for "something changed".

    A fresh Event per generation lets synchronous code (the inject_* helpers) notify waiters
    without taking a lock, and no waiter can miss a change that happens between its check of the
    condition and its wait, because both happen without an await in between.
    """

    def __init__(self) -> None:
        self._event: asyncio.Event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None) -> bool:
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class _Params:
    """Request parameters with Telegram's lenient typing.

    Values are strings when they came from a query string, a urlencoded or a multipart body
    (aiogram JSON-encodes every non-string value, including nested objects), and native JSON
    values when the body was application/json; the accessors accept both.
    """

    _TRUE: Final[frozenset[str]] = frozenset({"true", "1", "yes", "on"})

    def __init__(self, raw: JsonDict, files: dict[str, _Upload]) -> None:
        self.raw: JsonDict = raw
        self.files: dict[str, _Upload] = files

    def present(self, name: str) -> bool:
        value = self.raw.get(name)
        return value is not None and value != ""

    def get_str(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        return json.dumps(value)

    def get_int(self, name: str, default: int | None = None) -> int | None:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise _bad_request(f"invalid {name} specified") from None

    def get_bool(self, name: str) -> bool:
        value = self.raw.get(name)
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value != 0
        if isinstance(value, str):
            return value.strip().lower() in self._TRUE
        return False

    def get_json(self, name: str, error: str) -> Any:
        value = self.raw.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise _bad_request(error) from None
        return value


@dataclass
class _ForcedErrors:
    status: int
    description: str
    parameters: JsonDict | None
    until: float | None
    remaining: int | None
    methods: frozenset[str] | None  # lower-case method names; None = every method


@dataclass
class _BotState:
    """Everything Telegram keeps per bot: its update queue, webhook, messages and counters."""

    bot_id: int
    updates: deque[JsonDict] = field(default_factory=deque)
    pulse: _Pulse = field(default_factory=_Pulse)
    allowed_updates: frozenset[str] | None = None
    poll_generation: int = 0
    webhook_url: str = ""
    webhook_secret: str | None = None
    webhook_max_connections: int = 40
    webhook_last_error: tuple[int, str] | None = None
    webhook_task: asyncio.Task[None] | None = None
    message_ids: dict[int, int] = field(default_factory=dict)
    # (chat_id, message_id) -> (message dict as it is now, sent by the bot?)
    messages: dict[tuple[int, int], tuple[JsonDict, bool]] = field(default_factory=dict)
    callback_queries: dict[str, tuple[int, int, str | None]] = field(default_factory=dict)
    pre_checkouts: dict[str, tuple[int, JsonDict]] = field(default_factory=dict)
    member_status: dict[int, str] = field(default_factory=dict)
    commands: dict[tuple[str, str], list[JsonDict]] = field(default_factory=dict)
    global_window: deque[float] = field(default_factory=deque)
    chat_windows: dict[int, deque[float]] = field(default_factory=dict)
    # Private chats' bursts: when each chat's bucket is full again if nothing more is sent.
    chat_full_at: dict[int, float] = field(default_factory=dict)

    def next_message_id(self, chat_id: int) -> int:
        # Message ids are per chat and shared by both sides of the conversation.
        value = self.message_ids.get(chat_id, 0) + 1
        self.message_ids[chat_id] = value
        return value


@dataclass(frozen=True)
class _WithDescription:
    """A successful result Telegram answers with an extra "description" (setWebhook & co.)."""

    result: Any
    description: str


_GONE_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "blocked": (403, "Forbidden: bot was blocked by the user"),
    "deactivated": (403, "Forbidden: user is deactivated"),
    "deleted": (400, "Bad Request: chat not found"),
}


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class FakeTelegramServer:
    """An in-process Telegram Bot API server for tests, the demo and benchmarks.

    ``async with FakeTelegramServer() as server: bot = server.create_bot()`` is all it takes.
    Several bots (tokens) may share one server; updates, messages and rate limits are per bot,
    while users, chats and their blocked/deleted state are server-wide. Injection helpers take an
    optional ``bot_id``; without it they target the default bot: the first token of `tokens`,
    else the first bot that sends a request (updates injected earlier wait for it).
    """

    def __init__(
        self,
        *,
        limits: RateLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        tokens: Iterable[str] | None = None,
        strict_chats: bool = False,
        bot_first_name: str = "Token Alert",
        bot_username: str = "TokenAlertTestBot",
        webhook_retry_delay: float = 0.2,
        webhook_timeout: float = 10.0,
        call_log_size: int = 1000,
    ) -> None:
        """
        :param limits: send limits; defaults to Telegram's (30/s, 1/s per user, 20/min per group).
        :param clock: monotonic clock used by the rate limiter and forced errors (`ManualClock`).
        :param tokens: accept only these tokens (401 for others); default: any well-formed token.
        :param strict_chats: answer "chat not found" for chats never seen (injected or added);
            by default sending to any id creates the chat, which is what most tests want.
        :param webhook_retry_delay: pause before re-posting an update the webhook did not accept.
        """
        self.limits: RateLimits = limits if limits is not None else RateLimits()
        self.clock: Callable[[], float] = clock
        self.strict_chats: bool = strict_chats
        self.bot_first_name: str = bot_first_name
        self.bot_username: str = bot_username
        self.webhook_retry_delay: float = webhook_retry_delay
        self.webhook_timeout: float = webhook_timeout

        # Observation API.
        self.sent: list[SentRecord] = []
        self.edits: list[SentRecord] = []
        self.deleted: list[tuple[int, int]] = []
        self.answered_callbacks: list[AnsweredCallback] = []
        self.answered_pre_checkouts: list[AnsweredPreCheckout] = []
        self.refunds: list[tuple[int, str]] = []
        self.chat_actions: list[tuple[int, str]] = []
        self.requests: Counter[str] = Counter()
        self.stats: ServerStats = ServerStats()
        self.calls: deque[ApiCall] = deque(maxlen=call_log_size)

        self._allowed_tokens: set[str] | None = set(tokens) if tokens is not None else None
        self._revoked_tokens: set[str] = set()
        self._states: dict[int, _BotState] = {}
        self._default_bot_id: int | None = None
        self._unclaimed: _BotState | None = None  # injections made before any bot showed up
        self._users: dict[int, JsonDict] = {}
        self._chats: dict[int, JsonDict] = {}
        self._gone: dict[int, str] = {}
        self._migrated: dict[int, int] = {}
        self._files: dict[str, PhotoInfo] = {}
        self._charges: dict[str, tuple[int, bool]] = {}  # charge id -> (user id, refunded)
        self._next_update_id: int = 1
        self._next_file_number: int = 1
        self._forced: list[_ForcedErrors] = []
        self._gateway_errors: list[_ForcedErrors] = []  # HTML pages, not Telegram's JSON
        self._changed: _Pulse = _Pulse()
        self._closing: bool = False
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._client: aiohttp.ClientSession | None = None

        self._handlers: dict[str, tuple[str, Callable[[_BotState, _Params], Any]]] = {}
        for name, handler in (
            ("getMe", self._get_me),
            ("getUpdates", self._get_updates),
            ("sendMessage", self._send_message),
            ("sendPhoto", self._send_photo),
            ("sendInvoice", self._send_invoice),
            ("editMessageText", self._edit_message_text),
            ("editMessageReplyMarkup", self._edit_message_reply_markup),
            ("deleteMessage", self._delete_message),
            ("sendChatAction", self._send_chat_action),
            ("answerCallbackQuery", self._answer_callback_query),
            ("answerPreCheckoutQuery", self._answer_pre_checkout_query),
            ("createInvoiceLink", self._create_invoice_link),
            ("refundStarPayment", self._refund_star_payment),
            ("setMyCommands", self._set_my_commands),
            ("getMyCommands", self._get_my_commands),
            ("deleteMyCommands", self._delete_my_commands),
            ("setMyDescription", self._accept),
            ("setMyShortDescription", self._accept),
            ("setWebhook", self._set_webhook),
            ("deleteWebhook", self._delete_webhook),
            ("getWebhookInfo", self._get_webhook_info),
            ("close", self._accept),
            ("logOut", self._accept),
        ):
            self._handlers[name.lower()] = (name, handler)
        if tokens is not None:
            for token in tokens:
                bot_id = self._bot_id_of(token)
                if bot_id is None:
                    raise ValueError(f"malformed bot token {token!r}")
                self._state(bot_id)

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0 = a free port); `base_url` tells where."""
        if self._runner is not None:
            raise RuntimeError("server already started")
        self._closing = False
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_http)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown_path)
        # handler_cancellation: a long poll whose client went away (aiogram stop_polling) ends
        # at once instead of holding the connection; short shutdown_timeout keeps stop() fast.
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self._base_url = f"http://[{host}]:{address[1]}" if ":" in host else f"http://{host}:{address[1]}"

    async def stop(self) -> None:
        """Stop serving; pending long polls return [] first. Safe to call twice."""
        self._closing = True
        for state in self._all_states():
            state.pulse.fire()
            await self._stop_webhook_worker(state)
        self._changed.fire()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeTelegramServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._base_url is None:
            raise RuntimeError("server not started")
        return self._base_url

    def api_server(self) -> TelegramAPIServer:
        """What to give aiogram: ``AiohttpSession(api=server.api_server())``."""
        return TelegramAPIServer.from_base(self.base_url)

    def aiogram_session(self) -> AiohttpSession:
        """An aiogram session for this server (a `LocalAiohttpSession`: closes without delay)."""
        return LocalAiohttpSession(api=self.api_server())

    def create_bot(self, token: str = DEFAULT_TOKEN, **bot_kwargs: Any) -> Bot:
        """A real aiogram Bot pointed at this server. The caller closes ``bot.session``."""
        return Bot(token, session=self.aiogram_session(), **bot_kwargs)

    @property
    def default_bot_id(self) -> int | None:
        return self._default_bot_id

    # ---------------------------------------------------------------- configuration helpers

    def register_token(self, token: str) -> int:
        """Accept `token` (needed only when `tokens=` restricted the accepted ones); returns the bot id."""
        bot_id = self._bot_id_of(token)
        if bot_id is None:
            raise ValueError(f"malformed bot token {token!r}")
        if self._allowed_tokens is not None:
            self._allowed_tokens.add(token)
        self._revoked_tokens.discard(token)
        self._state(bot_id)
        return bot_id

    def revoke_token(self, token: str) -> None:
        """Make `token` answer 401 from now on, as after a token reset in @BotFather."""
        if self._allowed_tokens is not None:
            self._allowed_tokens.discard(token)
        self._revoked_tokens.add(token)

    def reset_limits(self) -> None:
        """Forget all rate-limit windows and forced errors (e.g. between benchmark phases)."""
        for state in self._all_states():
            state.global_window.clear()
            state.chat_windows.clear()
            state.chat_full_at.clear()
        self._forced.clear()

    def force_retry_after(
        self,
        retry_after: int,
        *,
        duration: float | None = None,
        count: int | None = None,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Burst mode: answer 429 "retry after `retry_after`" to every request for a while.

        Lasts `duration` seconds of the server clock (default: `retry_after`), or for the next
        `count` matching requests if `count` is given. `methods` limits it to those methods
        (default: all, getUpdates included). Forced 429s are counted in ``stats.rejected_429``.
        """
        retry_after = max(int(retry_after), 1)
        self.force_error(
            429,
            f"Too Many Requests: retry after {retry_after}",
            parameters={"retry_after": retry_after},
            duration=duration if duration is not None or count is not None else float(retry_after),
            count=count,
            methods=methods,
        )

    def force_error(
        self,
        error_code: int,
        description: str,
        *,
        parameters: JsonDict | None = None,
        duration: float | None = None,
        count: int | None = 1,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Answer any error (e.g. 500, 502) to matching requests; by default to the next one."""
        self._forced.append(
            _ForcedErrors(
                status=error_code,
                description=description,
                parameters=parameters,
                until=self.clock() + duration if duration is not None else None,
                remaining=count,
                methods=frozenset(m.lower() for m in methods) if methods is not None else None,
            )
        )

    def force_gateway_error(self, status: int = 502, *, duration: float | None = None, count: int | None = 1) -> None:
        """Answer as a load balancer in front of a Telegram that is down: `status` with an HTML
        page instead of Telegram's JSON, to every request, for `duration` s or `count` requests."""
        self._gateway_errors.append(_ForcedErrors(
            status=status, description="gateway page", parameters=None,
            until=self.clock() + duration if duration is not None else None, remaining=count, methods=None,
        ))

    def clear_forced_errors(self) -> None:
        self._forced.clear()
        self._gateway_errors.clear()

    # ---------------------------------------------------------------- users, chats, gone recipients

    def add_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        last_name: str | None = None,
        is_premium: bool = False,
    ) -> JsonDict:
        """Create or update a user (and their private chat, whose id is the user id)."""
        if user_id <= 0:
            raise ValueError("user ids are positive")
        user = self._users.get(user_id) or {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}
        if first_name is not None:
            user["first_name"] = first_name
        if last_name is not None:
            user["last_name"] = last_name
        if username is not None:
            user["username"] = username
        if language_code is not None:
            user["language_code"] = language_code
        if is_premium:
            user["is_premium"] = True
        self._users[user_id] = user
        chat: JsonDict = {"id": user_id, "type": "private", "first_name": user["first_name"]}
        for key in ("last_name", "username"):
            if key in user:
                chat[key] = user[key]
        self._chats[user_id] = chat
        return dict(user)

    def add_chat(
        self,
        chat_id: int,
        *,
        type: str | None = None,  # noqa: A002 - Telegram's field name
        title: str | None = None,
        username: str | None = None,
    ) -> JsonDict:
        """Create or update a group/supergroup/channel (or a private chat, see `add_user`)."""
        if chat_id > 0 and type in (None, "private"):
            return self._chat(chat_id)
        chat = self._chats.get(chat_id) or self._default_chat(chat_id)
        if type is not None:
            chat["type"] = type
        if title is not None:
            chat["title"] = title
        if username is not None:
            chat["username"] = username
        self._chats[chat_id] = chat
        return dict(chat)

    def block_chat(self, chat_id: int, *, notify: bool = False, bot_id: int | None = None) -> None:
        """The user blocked the bot: sends answer 403 "bot was blocked by the user".

        With ``notify=True`` the bot also gets the my_chat_member "kicked" update Telegram sends.
        """
        if notify:
            self.inject_my_chat_member(chat_id, "kicked", bot_id=bot_id)
        else:
            self._gone[chat_id] = "blocked"

    def unblock_chat(self, chat_id: int, *, notify: bool = False, bot_id: int | None = None) -> None:
        """Undo `block_chat`; with ``notify=True`` also inject my_chat_member "member"."""
        if notify:
            self.inject_my_chat_member(chat_id, "member", bot_id=bot_id)
        elif self._gone.get(chat_id) == "blocked":
            del self._gone[chat_id]

    def deactivate_chat(self, chat_id: int) -> None:
        """The user deleted their account: 403 "user is deactivated"."""
        self._gone[chat_id] = "deactivated"

    def kick_from_chat(self, chat_id: int) -> None:
        """The bot was removed from a group: 403 "bot was kicked from the group chat"."""
        self._gone[chat_id] = "kicked"

    def delete_chat(self, chat_id: int) -> None:
        """The chat no longer exists: 400 "chat not found"."""
        self._gone[chat_id] = "deleted"

    def migrate_chat(self, old_chat_id: int, new_chat_id: int) -> None:
        """The group became a supergroup: sends to the old id answer 400 with migrate_to_chat_id."""
        self._gone[old_chat_id] = "migrated"
        self._migrated[old_chat_id] = new_chat_id
        self.add_chat(new_chat_id, type="supergroup",
                      title=self._chats.get(old_chat_id, {}).get("title"))

    def restore_chat(self, chat_id: int) -> None:
        """Clear any blocked/deactivated/kicked/deleted/migrated state of the chat."""
        self._gone.pop(chat_id, None)
        self._migrated.pop(chat_id, None)

    def chat_status(self, chat_id: int) -> str | None:
        """None when reachable, else "blocked", "deactivated", "kicked", "deleted" or "migrated"."""
        return self._gone.get(chat_id)

    # ---------------------------------------------------------------- injection API

    def inject_message(
        self,
        user_id: int,
        text: str,
        *,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        chat_id: int | None = None,
        bot_id: int | None = None,
    ) -> int:
        """The user sends `text` to the bot (in their private chat unless `chat_id` is a group).

        /commands carry ``bot_command`` entities as Telegram sets them. Returns the update id.
        """
        state = self._injection_state(bot_id)
        user = self.add_user(user_id, first_name=first_name, username=username, language_code=language_code)
        target = user_id if chat_id is None else chat_id
        message: JsonDict = {
            "message_id": state.next_message_id(target),
            "from": user,
            "chat": self._chat(target),
            "date": int(time.time()),
            "text": text,
        }
        entities = _command_entities(text)
        if entities:
            message["entities"] = entities
        state.messages[(target, message["message_id"])] = (message, False)
        return self._push_update(state, {"message": message})

    def inject_callback(
        self,
        user_id: int,
        message_id: int,
        data: str,
        chat_id: int | None = None,
        *,
        check_button: bool = True,
        bot_id: int | None = None,
    ) -> int:
        """The user presses the inline button with `data` under the bot's message `message_id`.

        The update carries the message as it is now (after edits). With ``check_button`` (the
        default) the message must have a button with that callback_data, which catches tests
        pressing buttons the bot never offered. Returns the update id; the callback query id is
        in `answered_callbacks` once answered (``callback_query_id_of(update_id)`` before).
        """
        state = self._injection_state(bot_id)
        target = user_id if chat_id is None else chat_id
        stored = state.messages.get((target, message_id))
        if stored is None or not stored[1]:
            raise LookupError(f"the bot sent no message {message_id} to chat {target}")
        message = stored[0]
        if check_button and data not in _callback_datas(message.get("reply_markup")):
            raise LookupError(
                f"message {message_id} in chat {target} has no button with callback_data {data!r}; "
                f"it has {_callback_datas(message.get('reply_markup'))!r}"
            )
        user = self.add_user(user_id, language_code=None)
        update_id = self._allocate_update_id()
        query_id = self.callback_query_id_of(update_id)
        state.callback_queries[query_id] = (update_id, user_id, data)
        query = {
            "id": query_id,
            "from": user,
            "message": json.loads(json.dumps(message)),
            "chat_instance": str((target * 2_654_435_761) % (2**62)),
            "data": data,
        }
        return self._push_update(state, {"callback_query": query}, update_id=update_id)

    @staticmethod
    def callback_query_id_of(update_id: int) -> str:
        """The callback query id used for the callback injected as `update_id`."""
        return str(4_000_000_000_000_000 + update_id)

    def inject_pre_checkout(
        self,
        user_id: int,
        currency: str,
        total_amount: int,
        invoice_payload: str,
        *,
        bot_id: int | None = None,
    ) -> int:
        """The user confirmed payment of an invoice; the bot must answerPreCheckoutQuery."""
        state = self._injection_state(bot_id)
        user = self.add_user(user_id, language_code=None)
        update_id = self._allocate_update_id()
        query: JsonDict = {
            "id": str(5_000_000_000_000_000 + update_id),
            "from": user,
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": invoice_payload,
        }
        state.pre_checkouts[query["id"]] = (update_id, query)
        return self._push_update(state, {"pre_checkout_query": query}, update_id=update_id)

    def inject_successful_payment(
        self,
        user_id: int,
        currency: str,
        total_amount: int,
        invoice_payload: str,
        telegram_payment_charge_id: str,
        *,
        provider_payment_charge_id: str = "",
        bot_id: int | None = None,
    ) -> int:
        """The service message Telegram sends after a successful payment (refundable later)."""
        state = self._injection_state(bot_id)
        user = self.add_user(user_id, language_code=None)
        payment: JsonDict = {
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": invoice_payload,
            "telegram_payment_charge_id": telegram_payment_charge_id,
            "provider_payment_charge_id": provider_payment_charge_id,
        }
        message: JsonDict = {
            "message_id": state.next_message_id(user_id),
            "from": user,
            "chat": self._chat(user_id),
            "date": int(time.time()),
            "successful_payment": payment,
        }
        state.messages[(user_id, message["message_id"])] = (message, False)
        self._charges[telegram_payment_charge_id] = (user_id, False)
        return self._push_update(state, {"message": message})

    def inject_my_chat_member(
        self,
        user_id: int,
        new_status: str,
        *,
        chat_id: int | None = None,
        bot_id: int | None = None,
    ) -> int:
        """The bot's membership changed: "kicked" (user blocked the bot / removed it from a group),
        "member" (came back) or "left". Also updates the chat's reachability accordingly."""
        if new_status not in ("member", "kicked", "left"):
            raise ValueError(f"unsupported status {new_status!r}; use member, kicked or left")
        state = self._injection_state(bot_id)
        user = self.add_user(user_id, language_code=None)
        target = user_id if chat_id is None else chat_id
        old_status = state.member_status.get(target, "kicked" if new_status == "member" else "member")
        state.member_status[target] = new_status
        if new_status == "member":
            if self._gone.get(target) in ("blocked", "kicked"):
                del self._gone[target]
        else:
            self._gone[target] = "blocked" if target > 0 else "kicked"
        bot_user = self._bot_user(state.bot_id)
        update = {
            "chat": self._chat(target),
            "from": user,
            "date": int(time.time()),
            "old_chat_member": self._member(old_status, bot_user),
            "new_chat_member": self._member(new_status, bot_user),
        }
        return self._push_update(state, {"my_chat_member": update})

    def inject_update(self, update: JsonDict, *, bot_id: int | None = None) -> int:
        """Queue an arbitrary update (its update_id is assigned here)."""
        state = self._injection_state(bot_id)
        body = {k: v for k, v in update.items() if k != "update_id"}
        return self._push_update(state, body)

    def pending_updates(self, bot_id: int | None = None) -> list[JsonDict]:
        """Updates not yet confirmed by the bot (getUpdates offset) or delivered to its webhook."""
        state = self._injection_state(bot_id)
        return list(state.updates)

    # ---------------------------------------------------------------- observation API

    def messages_to(self, chat_id: int) -> list[SentRecord]:
        """Accepted sends to `chat_id`, oldest first."""
        return [record for record in self.sent if record.chat_id == chat_id]

    def message(self, chat_id: int, message_id: int, *, bot_id: int | None = None) -> JsonDict | None:
        """A message as it is now in the chat (after edits), or None (unknown or deleted)."""
        stored = self._injection_state(bot_id).messages.get((chat_id, message_id))
        return stored[0] if stored else None

    @property
    def commands(self) -> list[JsonDict]:
        """The commands set by setMyCommands for the default scope and all languages."""
        return self.commands_for()

    def commands_for(
        self, scope: JsonDict | None = None, language_code: str = "", *, bot_id: int | None = None
    ) -> list[JsonDict]:
        state = self._injection_state(bot_id)
        return list(state.commands.get((self._scope_key(scope), language_code), []))

    def clear_sent(self) -> None:
        """Forget what was observed (records and counters), keep chats and queues."""
        self.sent.clear()
        self.edits.clear()
        self.deleted.clear()
        self.answered_callbacks.clear()
        self.answered_pre_checkouts.clear()
        self.refunds.clear()
        self.chat_actions.clear()
        self.requests.clear()
        self.calls.clear()
        self.stats = ServerStats()

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 5.0, *, description: str = "condition"
    ) -> None:
        """Wait until `predicate()` holds; re-checked after every request and injection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                raise WaitTimeout(f"timed out after {timeout}s waiting for {description}\n{self.describe()}")
            await self._changed.wait(remaining)

    async def wait_for_sent(
        self,
        condition: int | Callable[[SentRecord], bool] = 1,
        timeout: float = 5.0,
        *,
        count: int = 1,
    ) -> list[SentRecord]:
        """Wait for sends; returns the records.

        An int N waits for at least N accepted sends in total and returns them all; a predicate
        waits for at least `count` records it accepts and returns those.
        """
        if isinstance(condition, int):
            wanted = condition
            await self.wait_for(lambda: len(self.sent) >= wanted, timeout,
                                description=f"{wanted} sent message(s)")
            return list(self.sent)
        predicate = condition
        await self.wait_for(
            lambda: sum(1 for record in self.sent if predicate(record)) >= count,
            timeout,
            description=f"{count} sent message(s) matching {getattr(predicate, '__name__', predicate)}",
        )
        return [record for record in self.sent if predicate(record)]

    async def wait_for_request(self, method: str, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until `method` was requested at least `count` times (any outcome)."""
        canonical = self._handlers.get(method.lower(), (method, None))[0]
        await self.wait_for(lambda: self.requests[canonical] >= count, timeout,
                            description=f"{count} {canonical} request(s)")

    def describe(self, last: int = 20) -> str:
        """A readable summary of recent activity, used in timeout errors."""
        lines = [f"stats: {self.stats.as_dict()}", f"requests: {dict(self.requests)}"]
        lines.append(f"sent ({len(self.sent)}), last {min(last, len(self.sent))}:")
        for record in self.sent[-last:]:
            lines.append(
                f"  {record.method} chat={record.chat_id} id={record.message_id} "
                f"body={record.body[:120]!r} buttons={record.callback_data}"
            )
        errors = [call for call in self.calls if call.status != 200][-last:]
        if errors:
            lines.append("recent errors:")
            lines.extend(f"  {c.method} -> {c.status} {c.description}" for c in errors)
        return "\n".join(lines)

    # ---------------------------------------------------------------- HTTP layer

    async def _handle_unknown_path(self, request: web.Request) -> web.Response:
        return self._json_response(404, {"ok": False, "error_code": 404, "description": "Not Found"})

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        method = request.match_info["method"]
        try:
            raw, files = await self._read_params(request)
        except _ApiError as exc:
            self._count_error(exc.status)
            return self._json_response(exc.status, self._error_body(exc))
        now = self.clock()
        self._gateway_errors = [f for f in self._gateway_errors
                                if (f.until is None or now < f.until) and (f.remaining is None or f.remaining > 0)]
        if self._gateway_errors:
            page = self._gateway_errors[0]
            if page.remaining is not None:
                page.remaining -= 1
            self._count_error(page.status)
            self.calls.append(ApiCall(method, 0, raw, page.status, page.description, now))
            return web.Response(status=page.status, content_type="text/html",
                                text=f"<html><body><h1>{page.status} Bad Gateway</h1></body></html>")
        status, body = await self._execute(self._authorize(token), method, raw, files)
        return self._json_response(status, body)

    @staticmethod
    def _json_response(status: int, body: JsonDict) -> web.Response:
        return web.Response(status=status, text=json.dumps(body, ensure_ascii=False),
                            content_type="application/json")

    @staticmethod
    async def _read_params(request: web.Request) -> tuple[JsonDict, dict[str, _Upload]]:
        """Query string + body (JSON, urlencoded or multipart) as one parameter dict."""
        raw: JsonDict = dict(request.query)
        files: dict[str, _Upload] = {}
        if not request.body_exists:
            return raw, files
        content_type = request.content_type
        try:
            if content_type == "application/json":
                text = await request.text()
                if text.strip():
                    try:
                        body = json.loads(text)
                    except ValueError:
                        raise _bad_request("can't parse JSON") from None
                    if isinstance(body, dict):
                        raw.update(body)
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        content = value.file.read()
                        value.file.close()
                        files[key] = _Upload(value.filename, value.content_type, content)
                    elif isinstance(value, (bytes, bytearray)):
                        # A multipart field with a non-text content type.
                        raw[key] = bytes(value).decode("utf-8", "replace")
                    else:
                        raw[key] = value
        except web.HTTPRequestEntityTooLarge:
            raise _ApiError(413, "Request Entity Too Large") from None
        return raw, files

    def _error_body(self, exc: _ApiError) -> JsonDict:
        body: JsonDict = {"ok": False, "error_code": exc.status, "description": exc.description}
        if exc.parameters:
            body["parameters"] = exc.parameters
        return body

    def _count_error(self, status: int) -> None:
        attribute = {400: "rejected_400", 401: "rejected_401", 403: "rejected_403",
                     404: "rejected_404", 409: "rejected_409", 429: "rejected_429"}.get(status)
        if attribute is None:
            self.stats.rejected_other += 1
        else:
            setattr(self.stats, attribute, getattr(self.stats, attribute) + 1)

    async def _execute(
        self, bot_id: int | None, method: str, raw: JsonDict, files: dict[str, _Upload]
    ) -> tuple[int, JsonDict]:
        """Run one API call for an authorized bot (None = bad token); returns (HTTP status, body)."""
        self.stats.requests += 1
        canonical, handler = self._handlers.get(method.lower(), (method, None))
        self.requests[canonical] += 1
        self._changed.fire()  # lets wait_for_request() see a long poll as soon as it arrives
        status = 200
        description: str | None = None
        try:
            if bot_id is None:
                raise _ApiError(401, "Unauthorized")
            state = self._state(bot_id)
            if handler is None:
                raise _ApiError(404, "Not Found")
            self._apply_forced_errors(canonical)
            result: Any = handler(state, _Params(raw, files))
            if asyncio.iscoroutine(result):
                result = await result
            body: JsonDict = {"ok": True, "result": result}
            if isinstance(result, _WithDescription):
                body = {"ok": True, "result": result.result, "description": result.description}
        except _ApiError as exc:
            status = exc.status
            description = exc.description
            self._count_error(status)
            body = self._error_body(exc)
        except Exception as exc:  # noqa: BLE001 - a bug in the double must reach the test, as JSON
            status = 500
            description = f"Internal Server Error: {type(exc).__name__}: {exc}"
            self._count_error(status)
            body = {"ok": False, "error_code": 500, "description": description}
        self.calls.append(ApiCall(canonical, bot_id or 0, raw, status, description, self.clock()))
        self._changed.fire()
        return status, body

    def _authorize(self, token: str) -> int | None:
        bot_id = self._bot_id_of(token)
        if bot_id is None:
            return None
        if token in self._revoked_tokens:
            return None
        if self._allowed_tokens is not None and token not in self._allowed_tokens:
            return None
        return bot_id

    @staticmethod
    def _bot_id_of(token: str) -> int | None:
        match = _TOKEN_RE.match(token)
        if match is None or int(match.group(1)) == 0:
            return None
        return int(match.group(1))

    def _apply_forced_errors(self, canonical: str) -> None:
        now = self.clock()
        self._forced = [f for f in self._forced
                        if (f.until is None or now < f.until) and (f.remaining is None or f.remaining > 0)]
        for forced in self._forced:
            if forced.methods is not None and canonical.lower() not in forced.methods:
                continue
            if forced.remaining is not None:
                forced.remaining -= 1
            raise _ApiError(forced.status, forced.description,
                            dict(forced.parameters) if forced.parameters else None)

    # ---------------------------------------------------------------- state helpers

    def _state(self, bot_id: int) -> _BotState:
        state = self._states.get(bot_id)
        if state is None:
            state = self._states[bot_id] = _BotState(bot_id)
        if self._default_bot_id is None:
            self._adopt_unclaimed(state)
        return state

    def _adopt_unclaimed(self, state: _BotState) -> None:
        # The first bot becomes the default one and receives what was injected before it came.
        self._default_bot_id = state.bot_id
        if self._unclaimed is not None:
            pending, self._unclaimed = self._unclaimed, None
            state.updates.extend(pending.updates)
            state.messages.update(pending.messages)
            state.message_ids.update(pending.message_ids)
            state.callback_queries.update(pending.callback_queries)
            state.pre_checkouts.update(pending.pre_checkouts)
            state.member_status.update(pending.member_status)
            # my_chat_member updates injected before the bot was known name it with id 0.
            for update in state.updates:
                _replace_bot_placeholder(update, self._bot_user(state.bot_id))
            state.pulse.fire()

    def _injection_state(self, bot_id: int | None) -> _BotState:
        if bot_id is not None:
            return self._state(bot_id)
        if self._default_bot_id is not None:
            return self._states[self._default_bot_id]
        if self._unclaimed is None:
            self._unclaimed = _BotState(0)
        return self._unclaimed

    def _all_states(self) -> list[_BotState]:
        states = list(self._states.values())
        if self._unclaimed is not None:
            states.append(self._unclaimed)
        return states

    def _allocate_update_id(self) -> int:
        update_id = self._next_update_id
        self._next_update_id += 1
        return update_id

    def _push_update(self, state: _BotState, body: JsonDict, *, update_id: int | None = None) -> int:
        if update_id is None:
            update_id = self._allocate_update_id()
        update = {"update_id": update_id, **body}
        state.updates.append(update)
        self.stats.updates_injected += 1
        state.pulse.fire()
        self._changed.fire()
        return update_id

    def _bot_user(self, bot_id: int) -> JsonDict:
        return {"id": bot_id, "is_bot": True, "first_name": self.bot_first_name, "username": self.bot_username}

    @staticmethod
    def _member(status: str, user: JsonDict) -> JsonDict:
        member: JsonDict = {"status": status, "user": user}
        if status == "kicked":
            member["until_date"] = 0
        return member

    def _default_chat(self, chat_id: int) -> JsonDict:
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"}
        if chat_id <= _SUPERGROUP_ID_LIMIT:
            return {"id": chat_id, "type": "supergroup", "title": f"Supergroup {chat_id}"}
        return {"id": chat_id, "type": "group", "title": f"Group {chat_id}"}

    def _chat(self, chat_id: int) -> JsonDict:
        chat = self._chats.get(chat_id)
        if chat is None:
            if chat_id > 0:
                self.add_user(chat_id, language_code=None)
                chat = self._chats[chat_id]
            else:
                chat = self._chats[chat_id] = self._default_chat(chat_id)
        return dict(chat)

    @staticmethod
    def _scope_key(scope: Any) -> str:
        if not scope:
            scope = {"type": "default"}
        return json.dumps(scope, sort_keys=True)

    # ---------------------------------------------------------------- validation helpers

    def _resolve_chat_id(self, params: _Params) -> int:
        raw = params.raw.get("chat_id")
        if raw is None or raw == "":
            raise _bad_request("chat_id is empty")
        if isinstance(raw, bool):
            raise _bad_request("chat not found")
        if isinstance(raw, int):
            return raw
        text = str(raw).strip()
        if text.startswith("@"):
            for chat_id, chat in self._chats.items():
                if chat.get("username", "").lower() == text[1:].lower():
                    return chat_id
            raise _bad_request("chat not found")
        try:
            return int(text)
        except ValueError:
            raise _bad_request("chat not found") from None

    def _check_reachable(self, chat_id: int) -> None:
        """The 400/403 Telegram answers for chats that went away."""
        status = self._gone.get(chat_id)
        if status is None:
            if chat_id == 0 or (self.strict_chats and chat_id not in self._chats):
                raise _bad_request("chat not found")
            return
        if status == "migrated":
            raise _ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                            {"migrate_to_chat_id": self._migrated[chat_id]})
        if status == "kicked":
            kind = self._chats.get(chat_id, self._default_chat(chat_id))["type"]
            if kind == "channel":
                raise _ApiError(403, "Forbidden: bot is not a member of the channel chat")
            if kind == "private":
                raise _ApiError(403, "Forbidden: bot was blocked by the user")
            raise _ApiError(403, f"Forbidden: bot was kicked from the {kind} chat")
        code, description = _GONE_ERRORS[status]
        raise _ApiError(code, description)

    def _formatted_text(
        self, params: _Params, field_name: str, entities_field: str, *, required: bool, max_length: int
    ) -> tuple[str | None, list[JsonDict]]:
        """Parse text/caption with its parse_mode; enforce Telegram's emptiness and length rules."""
        raw_text = params.get_str(field_name)
        is_caption = field_name == "caption"
        if raw_text is None or raw_text == "":
            if required:
                raise _bad_request("message text is empty")
            return None, []
        explicit = params.get_json(entities_field, f"can't parse {entities_field} JSON object")
        parse_mode = (params.get_str("parse_mode") or "").strip()
        if explicit:
            if not isinstance(explicit, list):
                raise _bad_request(f"can't parse {entities_field} JSON object")
            plain, entities = raw_text, [dict(e) for e in explicit if isinstance(e, dict)]
        elif parse_mode.lower() == "html":
            try:
                plain, entities = parse_html(raw_text)
            except EntityParseError as exc:
                raise _bad_request(f"can't parse entities: {exc}") from None
        elif parse_mode == "" or parse_mode.lower() in ("markdown", "markdownv2"):
            # Markdown is passed through unparsed: this bot only uses HTML.
            plain, entities = raw_text, []
        else:
            raise _bad_request("unsupported parse_mode")
        plain, entities = _trim(plain, entities)
        if not plain:
            if required:
                raise _bad_request("message text is empty")
            return None, []
        if _utf16_len(plain) > max_length:  # Telegram counts UTF-16 code units
            raise _bad_request("message caption is too long" if is_caption else "message is too long")
        return plain, entities

    def _reply_markup(self, params: _Params) -> tuple[JsonDict | None, JsonDict | None]:
        """(markup as sent, inline keyboard to echo in the Message) after Telegram's checks."""
        markup = params.get_json("reply_markup", "can't parse reply keyboard markup JSON object")
        if markup is None:
            return None, None
        if not isinstance(markup, dict):
            raise _bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            if not any(key in markup for key in ("keyboard", "remove_keyboard", "force_reply")):
                raise _bad_request("can't parse reply keyboard markup JSON object")
            return markup, None
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list):
            raise _bad_request('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array')
        for row in rows:
            if not isinstance(row, list):
                raise _bad_request('can\'t parse inline keyboard button: field "inline_keyboard" must be an Array of Arrays')
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise _bad_request("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")
                actions = [key for key in _INLINE_BUTTON_ACTIONS if key in button]
                if not actions:
                    raise _bad_request("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")
                if "callback_data" in button:
                    data = button["callback_data"]
                    if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
                        raise _bad_request("BUTTON_DATA_INVALID")
                if "url" in button:
                    url = button["url"]
                    scheme = url.split("://", 1)[0].lower() if isinstance(url, str) and "://" in url else ""
                    if scheme not in _ALLOWED_BUTTON_URL_SCHEMES:
                        raise _bad_request(f"inline keyboard button URL '{url}' is invalid: Unsupported URL protocol")
        return markup, {"inline_keyboard": rows}

    def _check_limits(self, state: _BotState, chat_id: int, *, paid: bool, per_chat: bool) -> None:
        """Raise 429 when this send would exceed a window; nothing is recorded here."""
        limits = self.limits
        if not limits.enabled:
            return
        now = self.clock()
        waits: list[float] = []
        overall = limits.paid_per_second if paid else limits.global_per_second
        if overall is not None:
            wait = self._window_wait(state.global_window, now, limits.global_window, overall)
            if wait is not None:
                waits.append(wait)
        if per_chat:
            if chat_id > 0:
                limit, window = limits.private_chat_per_second, limits.private_window
            else:
                limit, window = limits.group_per_minute, limits.group_window
            chat_window = state.chat_windows.get(chat_id)
            if limit is not None and chat_id > 0 and limits.private_chat_burst > 1:
                wait = self._burst_wait(state.chat_full_at.get(chat_id), now, window / limit,
                                        limits.private_chat_burst)
                if wait is not None:
                    waits.append(wait)
            elif limit is not None and chat_window is not None:
                wait = self._window_wait(chat_window, now, window, limit)
                if wait is not None:
                    waits.append(wait)
        if waits:
            retry_after = max(1, math.ceil(max(waits) - 1e-9))
            raise _ApiError(429, f"Too Many Requests: retry after {retry_after}",
                            {"retry_after": retry_after})

    @staticmethod
    def _window_wait(window: deque[float], now: float, length: float, limit: int) -> float | None:
        """Seconds until a sliding window of `length` has room for one more, None if it has now."""
        while window and window[0] <= now - length:
            window.popleft()
        if limit <= 0:
            return length  # a limit of 0 allows nothing
        if len(window) < limit:
            return None
        # The send that frees the slot is the (len - limit + 1)-th oldest in the window.
        return window[len(window) - limit] + length - now

    @staticmethod
    def _burst_wait(full_at: float | None, now: float, interval: float, burst: int) -> float | None:
        """Seconds until a bucket of `burst` sends, refilled one per `interval`, has one, None if
        it has now; `full_at` is when it is full again if nothing more is sent (GCRA)."""
        if full_at is None:
            return None
        wait = full_at - (burst - 1) * interval - now
        return wait if wait > 1e-9 else None

    def _record_limits(self, state: _BotState, chat_id: int, *, per_chat: bool) -> None:
        if not self.limits.enabled:
            return
        now = self.clock()
        state.global_window.append(now)
        if per_chat:
            state.chat_windows.setdefault(chat_id, deque()).append(now)
            limit = self.limits.private_chat_per_second
            if chat_id > 0 and limit:
                interval = self.limits.private_window / limit
                state.chat_full_at[chat_id] = max(state.chat_full_at.get(chat_id, now), now) + interval
            if len(state.chat_windows) > 50_000:
                # Drop idle chats so long benchmarks don't accumulate a window per recipient.
                horizon = now - max(self.limits.private_window, self.limits.group_window)
                state.chat_windows = {c: w for c, w in state.chat_windows.items() if w and w[-1] > horizon}
                state.chat_full_at = {c: t for c, t in state.chat_full_at.items() if t > now}

    def _deliver(
        self,
        state: _BotState,
        method: str,
        chat_id: int,
        params: _Params,
        content: JsonDict,
        *,
        text: str | None = None,
        caption: str | None = None,
        raw_text: str | None = None,
        entities: list[JsonDict] | None = None,
        markup: JsonDict | None = None,
        echo_markup: JsonDict | None = None,
        photo: PhotoInfo | None = None,
        invoice: JsonDict | None = None,
    ) -> JsonDict:
        """Store and record an accepted send; returns the Message the API answers with."""
        paid = params.get_bool("allow_paid_broadcast")
        self._record_limits(state, chat_id, per_chat=True)
        chat = self._chat(chat_id)
        message: JsonDict = {"message_id": state.next_message_id(chat_id), "date": int(time.time()), "chat": chat}
        if chat["type"] == "channel":
            message["sender_chat"] = chat  # channel posts have no "from"
        else:
            message["from"] = self._bot_user(state.bot_id)
        message.update(content)
        if echo_markup is not None:
            message["reply_markup"] = echo_markup
        state.messages[(chat_id, message["message_id"])] = (message, True)
        disable_preview = params.get_bool("disable_web_page_preview")
        preview = params.get_json("link_preview_options", "can't parse link preview options JSON object")
        if isinstance(preview, dict) and preview.get("is_disabled"):
            disable_preview = True
        record = SentRecord(
            method=method,
            bot_id=state.bot_id,
            chat_id=chat_id,
            message_id=message["message_id"],
            text=text,
            caption=caption,
            raw_text=raw_text,
            parse_mode=params.get_str("parse_mode"),
            entities=entities or [],
            reply_markup=markup,
            photo=photo,
            invoice=invoice,
            allow_paid_broadcast=paid,
            disable_web_page_preview=disable_preview,
            monotonic=self.clock(),
            wall_time=time.time(),
            params=dict(params.raw),
            message=message,
        )
        self.sent.append(record)
        self.stats.sent += 1
        if paid:
            self.stats.sent_paid_broadcast += 1
        return message

    # ---------------------------------------------------------------- methods

    def _accept(self, state: _BotState, params: _Params) -> bool:
        return True

    def _get_me(self, state: _BotState, params: _Params) -> JsonDict:
        return {
            **self._bot_user(state.bot_id),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, state: _BotState, params: _Params) -> list[JsonDict]:
        if state.webhook_url:
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                 "use deleteWebhook to delete the webhook first")
        offset = params.get_int("offset", 0) or 0
        limit = min(max(params.get_int("limit", 100) or 100, 1), 100)
        timeout = max(params.get_int("timeout", 0) or 0, 0)
        allowed = params.get_json("allowed_updates", "can't parse allowed updates JSON object")
        if isinstance(allowed, list):
            # An empty list means "the default set", like not passing it at all.
            state.allowed_updates = frozenset(str(a) for a in allowed) or None
        # A newer getUpdates ends this one with 409, as on Telegram: two pollers are a bug.
        state.poll_generation += 1
        generation = state.poll_generation
        state.pulse.fire()

        # Confirm: updates below a positive offset are forgotten; a negative one keeps the tail.
        if offset > 0:
            while state.updates and state.updates[0]["update_id"] < offset:
                state.updates.popleft()
        elif offset < 0:
            while len(state.updates) > -offset:
                state.updates.popleft()

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._drop_unwanted(state)
            if state.updates or self._closing:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await state.pulse.wait(remaining)
            if state.poll_generation != generation:
                raise _ApiError(409, "Conflict: terminated by other getUpdates request; "
                                     "make sure that only one bot instance is running")
            if state.webhook_url:
                raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                     "use deleteWebhook to delete the webhook first")
        result = list(state.updates)[:limit] if not self._closing else []
        self.stats.updates_delivered += len(result)
        return result

    @staticmethod
    def _drop_unwanted(state: _BotState) -> None:
        # Telegram never creates updates of types the bot did not ask for.
        allowed = state.allowed_updates
        kept = [u for u in state.updates if FakeTelegramServer._wanted(u, allowed)]
        if len(kept) != len(state.updates):
            state.updates = deque(kept)

    @staticmethod
    def _wanted(update: JsonDict, allowed: frozenset[str] | None) -> bool:
        kind = next((key for key in update if key != "update_id"), "")
        if allowed is None:
            return kind not in _DEFAULT_EXCLUDED_UPDATES
        return kind in allowed

    def _send_message(self, state: _BotState, params: _Params) -> JsonDict:
        chat_id = self._resolve_chat_id(params)
        text, entities = self._formatted_text(params, "text", "entities", required=True,
                                              max_length=MAX_TEXT_LENGTH)
        markup, echo = self._reply_markup(params)
        self._check_reachable(chat_id)
        self._check_limits(state, chat_id, paid=params.get_bool("allow_paid_broadcast"), per_chat=True)
        content: JsonDict = {"text": text}
        if entities:
            content["entities"] = entities
        preview = params.get_json("link_preview_options", "can't parse link preview options JSON object")
        if isinstance(preview, dict) and preview:
            content["link_preview_options"] = preview
        elif params.get_bool("disable_web_page_preview"):
            content["link_preview_options"] = {"is_disabled": True}
        return self._deliver(state, "sendMessage", chat_id, params, content, text=text,
                             raw_text=params.get_str("text"), entities=entities, markup=markup, echo_markup=echo)

    def _send_photo(self, state: _BotState, params: _Params) -> JsonDict:
        chat_id = self._resolve_chat_id(params)
        caption, entities = self._formatted_text(params, "caption", "caption_entities", required=False,
                                                 max_length=MAX_CAPTION_LENGTH)
        markup, echo = self._reply_markup(params)
        photo = self._photo(params)
        self._check_reachable(chat_id)
        self._check_limits(state, chat_id, paid=params.get_bool("allow_paid_broadcast"), per_chat=True)
        if photo.source != "file_id":
            # Later sends may reuse the file_id; the registry needn't keep the bytes.
            self._files[photo.file_id] = replace(photo, content=None)
        content: JsonDict = {
            "photo": [{
                "file_id": photo.file_id,
                "file_unique_id": photo.file_unique_id,
                "width": photo.width,
                "height": photo.height,
                **({"file_size": photo.size} if photo.size is not None else {}),
            }]
        }
        if caption is not None:
            content["caption"] = caption
            if entities:
                content["caption_entities"] = entities
        return self._deliver(state, "sendPhoto", chat_id, params, content, caption=caption,
                             raw_text=params.get_str("caption"), entities=entities, markup=markup,
                             echo_markup=echo, photo=photo)

    def _photo(self, params: _Params) -> PhotoInfo:
        """The photo of a sendPhoto: a multipart upload, an attach:// reference, a file_id or URL."""
        upload = params.files.get("photo")
        value = params.get_str("photo")
        if upload is None and value and value.startswith("attach://"):
            upload = params.files.get(value[len("attach://") :])
            if upload is None:
                raise _bad_request("wrong file identifier/HTTP URL specified")
        if upload is not None:
            if not upload.content:
                raise _bad_request("file must be non-empty")
            width, height = _image_size(upload.content)
            number = self._next_file_number
            self._next_file_number += 1
            return PhotoInfo(source="upload", file_id=f"AgACAgFake{number:08d}", file_unique_id=f"AQADFake{number:08d}",
                             filename=upload.filename, content_type=upload.content_type, size=len(upload.content),
                             width=width, height=height, content=upload.content)
        if not value:
            raise _bad_request("there is no photo in the request")
        if value.startswith(("http://", "https://")):
            number = self._next_file_number
            self._next_file_number += 1
            return PhotoInfo(source="url", file_id=f"AgACAgFake{number:08d}", file_unique_id=f"AQADFake{number:08d}",
                             url=value)
        known = self._files.get(value)
        if known is None:
            raise _bad_request("wrong file identifier/HTTP URL specified")
        return PhotoInfo(source="file_id", file_id=known.file_id, file_unique_id=known.file_unique_id,
                         size=known.size, width=known.width, height=known.height)

    def _invoice_fields(self, params: _Params) -> JsonDict:
        """Validate the invoice parameters shared by sendInvoice and createInvoiceLink."""
        title = params.get_str("title") or ""
        description = params.get_str("description") or ""
        payload = params.get_str("payload") or ""
        currency = (params.get_str("currency") or "").upper()
        if not 1 <= len(title) <= 32:
            raise _bad_request("INVOICE_TITLE_INVALID" if title else "title is empty")
        if not 1 <= len(description) <= 255:
            raise _bad_request("INVOICE_DESCRIPTION_INVALID" if description else "description is empty")
        if not 1 <= len(payload.encode("utf-8")) <= 128:
            raise _bad_request("INVOICE_PAYLOAD_INVALID")
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise _bad_request("CURRENCY_INVALID")
        prices = params.get_json("prices", "can't parse prices JSON object")
        if not isinstance(prices, list) or not prices or not all(
            isinstance(p, dict) and isinstance(p.get("label"), str) and isinstance(p.get("amount"), int)
            for p in prices
        ):
            raise _bad_request("can't parse prices JSON object")
        provider_token = params.get_str("provider_token") or ""
        if currency == "XTR":
            # Telegram Stars: no payment provider and exactly one price.
            if provider_token:
                raise _bad_request("PAYMENT_PROVIDER_INVALID")
            if len(prices) != 1:
                raise _bad_request("STARS_INVOICE_INVALID")
        elif not provider_token:
            raise _bad_request("PAYMENT_PROVIDER_INVALID")
        total = sum(p["amount"] for p in prices)
        if total <= 0:
            raise _bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
        return {
            "title": title,
            "description": description,
            "payload": payload,
            "currency": currency,
            "prices": prices,
            "total_amount": total,
            "start_parameter": params.get_str("start_parameter") or "",
        }

    def _send_invoice(self, state: _BotState, params: _Params) -> JsonDict:
        chat_id = self._resolve_chat_id(params)
        invoice = self._invoice_fields(params)
        markup, echo = self._reply_markup(params)
        self._check_reachable(chat_id)
        self._check_limits(state, chat_id, paid=params.get_bool("allow_paid_broadcast"), per_chat=True)
        content = {"invoice": {key: invoice[key] for key in
                               ("title", "description", "start_parameter", "currency", "total_amount")}}
        return self._deliver(state, "sendInvoice", chat_id, params, content, markup=markup,
                             echo_markup=echo, invoice=invoice)

    def _create_invoice_link(self, state: _BotState, params: _Params) -> str:
        invoice = self._invoice_fields(params)
        return f"https://t.me/$FakeInvoice{abs(hash(invoice['payload'])) % 10**12}"

    def _stored_bot_message(self, state: _BotState, params: _Params, missing: str) -> tuple[int, int, JsonDict]:
        if params.present("inline_message_id"):
            raise _bad_request("MESSAGE_ID_INVALID")
        chat_id = self._resolve_chat_id(params)
        message_id = params.get_int("message_id")
        if message_id is None:
            raise _bad_request("message identifier is not specified")
        self._check_reachable(chat_id)
        stored = state.messages.get((chat_id, message_id))
        if stored is None:
            raise _bad_request(missing)
        if not stored[1]:
            raise _bad_request("message can't be edited")
        return chat_id, message_id, stored[0]

    def _record_edit(self, state: _BotState, method: str, chat_id: int, params: _Params,
                     message: JsonDict, markup: JsonDict | None) -> None:
        state.messages[(chat_id, message["message_id"])] = (message, True)
        self._record_limits(state, chat_id, per_chat=False)
        self.edits.append(SentRecord(
            method=method, bot_id=state.bot_id, chat_id=chat_id, message_id=message["message_id"],
            text=message.get("text"), caption=message.get("caption"),
            raw_text=params.get_str("text") if method == "editMessageText" else None,
            parse_mode=params.get_str("parse_mode"), entities=message.get("entities", []),
            reply_markup=markup, photo=None, invoice=None, allow_paid_broadcast=False,
            disable_web_page_preview=False, monotonic=self.clock(), wall_time=time.time(),
            params=dict(params.raw), message=message,
        ))
        self.stats.edited += 1

    def _edit_message_text(self, state: _BotState, params: _Params) -> JsonDict:
        text, entities = self._formatted_text(params, "text", "entities", required=True,
                                              max_length=MAX_TEXT_LENGTH)
        markup, echo = self._reply_markup(params)
        chat_id, _, current = self._stored_bot_message(state, params, "message to edit not found")
        if "text" not in current:
            raise _bad_request("there is no text in the message to edit")
        if (current.get("text") == text and current.get("entities", []) == entities
                and current.get("reply_markup") == echo):
            raise _bad_request(_NOT_MODIFIED)
        self._check_limits(state, chat_id, paid=False, per_chat=False)
        # Copy-on-edit: the SentRecord of the original send keeps the original content.
        message = {k: v for k, v in current.items() if k not in ("entities", "reply_markup")}
        message["text"] = text
        message["edit_date"] = int(time.time())
        if entities:
            message["entities"] = entities
        if echo is not None:  # editing without reply_markup removes the inline keyboard
            message["reply_markup"] = echo
        self._record_edit(state, "editMessageText", chat_id, params, message, markup)
        return message

    def _edit_message_reply_markup(self, state: _BotState, params: _Params) -> JsonDict:
        markup, echo = self._reply_markup(params)
        chat_id, _, current = self._stored_bot_message(state, params, "message to edit not found")
        if current.get("reply_markup") == echo:
            raise _bad_request(_NOT_MODIFIED)
        self._check_limits(state, chat_id, paid=False, per_chat=False)
        message = {k: v for k, v in current.items() if k != "reply_markup"}
        message["edit_date"] = int(time.time())
        if echo is not None:
            message["reply_markup"] = echo
        self._record_edit(state, "editMessageReplyMarkup", chat_id, params, message, markup)
        return message

    def _delete_message(self, state: _BotState, params: _Params) -> bool:
        chat_id = self._resolve_chat_id(params)
        message_id = params.get_int("message_id")
        self._check_reachable(chat_id)
        if message_id is None or state.messages.pop((chat_id, message_id), None) is None:
            raise _bad_request("message to delete not found")
        self.deleted.append((chat_id, message_id))
        self.stats.deleted += 1
        return True

    def _send_chat_action(self, state: _BotState, params: _Params) -> bool:
        chat_id = self._resolve_chat_id(params)
        action = params.get_str("action") or ""
        if not action:
            raise _bad_request("action is empty")
        self._check_reachable(chat_id)
        self.chat_actions.append((chat_id, action))
        return True

    def _answer_callback_query(self, state: _BotState, params: _Params) -> bool:
        query_id = params.get_str("callback_query_id") or ""
        known = state.callback_queries.pop(query_id, None)
        if known is None:
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        text = params.get_str("text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER_LENGTH:
            state.callback_queries[query_id] = known
            raise _bad_request("MESSAGE_TOO_LONG")
        update_id, user_id, data = known
        self.answered_callbacks.append(AnsweredCallback(
            callback_query_id=query_id, update_id=update_id, user_id=user_id, data=data, text=text,
            show_alert=params.get_bool("show_alert"), url=params.get_str("url"),
            cache_time=params.get_int("cache_time"), monotonic=self.clock(),
        ))
        self.stats.callbacks_answered += 1
        return True

    def _answer_pre_checkout_query(self, state: _BotState, params: _Params) -> bool:
        query_id = params.get_str("pre_checkout_query_id") or ""
        if query_id not in state.pre_checkouts:
            raise _bad_request("QUERY_ID_INVALID")
        if not params.present("ok"):
            raise _bad_request("parameter \"ok\" is required")
        ok = params.get_bool("ok")
        error_message = params.get_str("error_message")
        if not ok and not error_message:
            raise _bad_request("error_message is empty")
        update_id, query = state.pre_checkouts.pop(query_id)
        self.answered_pre_checkouts.append(AnsweredPreCheckout(
            pre_checkout_query_id=query_id, update_id=update_id, user_id=query["from"]["id"], ok=ok,
            error_message=error_message, currency=query["currency"], total_amount=query["total_amount"],
            invoice_payload=query["invoice_payload"], monotonic=self.clock(),
        ))
        self.stats.pre_checkouts_answered += 1
        return True

    def _refund_star_payment(self, state: _BotState, params: _Params) -> bool:
        user_id = params.get_int("user_id")
        charge_id = params.get_str("telegram_payment_charge_id") or ""
        charge = self._charges.get(charge_id)
        if charge is None or charge[0] != user_id:
            raise _bad_request("CHARGE_NOT_FOUND")
        if charge[1]:
            raise _bad_request("CHARGE_ALREADY_REFUNDED")
        self._charges[charge_id] = (charge[0], True)
        self.refunds.append((charge[0], charge_id))
        return True

    def _set_my_commands(self, state: _BotState, params: _Params) -> bool:
        commands = params.get_json("commands", "can't parse commands JSON object")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad_request("can't parse commands JSON object")
        cleaned: list[JsonDict] = []
        for command in commands:
            if not isinstance(command, dict):
                raise _bad_request("can't parse commands JSON object")
            name = str(command.get("command", "")).lstrip("/")
            description = str(command.get("description", ""))
            if not _BOT_COMMAND_RE.match(name):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": name, "description": description})
        key = (self._scope_key(params.get_json("scope", "can't parse BotCommandScope JSON object")),
               params.get_str("language_code") or "")
        if cleaned:
            state.commands[key] = cleaned
        else:
            state.commands.pop(key, None)
        return True

    def _get_my_commands(self, state: _BotState, params: _Params) -> list[JsonDict]:
        key = (self._scope_key(params.get_json("scope", "can't parse BotCommandScope JSON object")),
               params.get_str("language_code") or "")
        return list(state.commands.get(key, []))

    def _delete_my_commands(self, state: _BotState, params: _Params) -> bool:
        key = (self._scope_key(params.get_json("scope", "can't parse BotCommandScope JSON object")),
               params.get_str("language_code") or "")
        state.commands.pop(key, None)
        return True

    # ---------------------------------------------------------------- webhooks

    async def _set_webhook(self, state: _BotState, params: _Params) -> _WithDescription:
        url = (params.get_str("url") or "").strip()
        if not url:
            return await self._delete_webhook(state, params)
        if not url.startswith(("http://", "https://")):
            # Telegram insists on HTTPS; plain http is allowed here for local test servers.
            raise _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get_str("secret_token")
        if secret is not None and secret != "" and not _SECRET_TOKEN_RE.match(secret):
            raise _bad_request("secret token contains unallowed characters")
        allowed = params.get_json("allowed_updates", "can't parse allowed updates JSON object")
        if isinstance(allowed, list):
            state.allowed_updates = frozenset(str(a) for a in allowed) or None
        if params.get_bool("drop_pending_updates"):
            state.updates.clear()
        unchanged = state.webhook_url == url and state.webhook_secret == (secret or None)
        state.webhook_url = url
        state.webhook_secret = secret or None
        state.webhook_max_connections = params.get_int("max_connections", 40) or 40
        state.webhook_last_error = None
        await self._stop_webhook_worker(state)
        state.webhook_task = asyncio.create_task(self._webhook_worker(state))
        state.pulse.fire()  # a waiting getUpdates answers 409 now
        return _WithDescription(True, "Webhook is already set" if unchanged else "Webhook was set")

    async def _delete_webhook(self, state: _BotState, params: _Params) -> _WithDescription:
        had = bool(state.webhook_url)
        state.webhook_url = ""
        state.webhook_secret = None
        state.webhook_last_error = None
        await self._stop_webhook_worker(state)
        if params.get_bool("drop_pending_updates"):
            state.updates.clear()
        return _WithDescription(True, "Webhook was deleted" if had else "Webhook is already deleted")

    def _get_webhook_info(self, state: _BotState, params: _Params) -> JsonDict:
        self._drop_unwanted(state)
        info: JsonDict = {
            "url": state.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(state.updates),
        }
        if state.webhook_url:
            info["max_connections"] = state.webhook_max_connections
            info["ip_address"] = "127.0.0.1"
            if state.allowed_updates is not None:
                info["allowed_updates"] = sorted(state.allowed_updates)
        if state.webhook_last_error is not None:
            info["last_error_date"], info["last_error_message"] = state.webhook_last_error
        return info

    async def _stop_webhook_worker(self, state: _BotState) -> None:
        task, state.webhook_task = state.webhook_task, None
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # Our own cancellation must still propagate; the worker's is expected.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:  # noqa: BLE001 - a crashed worker is replaced anyway
            pass

    async def _webhook_worker(self, state: _BotState) -> None:
        """POST queued updates to the webhook one at a time, in order, retrying failures."""
        if self._client is None:
            self._client = aiohttp.ClientSession()
        client = self._client
        while not self._closing and state.webhook_url:
            self._drop_unwanted(state)
            if not state.updates:
                await state.pulse.wait(None)
                continue
            update = state.updates[0]
            headers = {"Content-Type": "application/json"}
            if state.webhook_secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = state.webhook_secret
            self.stats.webhook_posts += 1
            error: str
            try:
                async with client.post(state.webhook_url, data=json.dumps(update, ensure_ascii=False),
                                       headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=self.webhook_timeout)) as response:
                    if 200 <= response.status < 300:
                        if state.updates and state.updates[0] is update:
                            state.updates.popleft()
                        self.stats.updates_delivered += 1
                        await self._run_webhook_reply(state, response)
                        self._changed.fire()
                        continue
                    error = f"Wrong response from the webhook: {response.status} {response.reason}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                error = f"Connection failed: {type(exc).__name__}: {exc}"
            self.stats.webhook_errors += 1
            state.webhook_last_error = (int(time.time()), error)
            self._changed.fire()
            await asyncio.sleep(self.webhook_retry_delay)

    async def _run_webhook_reply(self, state: _BotState, response: aiohttp.ClientResponse) -> None:
        """Telegram executes a method call returned as the webhook's response body (aiogram's
        SimpleRequestHandler does this, as multipart/form-data); its result is discarded."""
        raw: JsonDict = {}
        files: dict[str, _Upload] = {}
        content_type = response.content_type
        try:
            if content_type == "application/json":
                body = await response.json(content_type=None)
                if isinstance(body, dict):
                    raw = body
            elif content_type == "multipart/form-data":
                reader = aiohttp.MultipartReader.from_response(response)
                while (part := await reader.next()) is not None:
                    if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                        continue
                    data = await part.read(decode=True)
                    if part.filename:
                        files[part.name] = _Upload(part.filename,
                                                   part.headers.get("Content-Type", "application/octet-stream"),
                                                   bytes(data))
                    else:
                        raw[part.name] = bytes(data).decode("utf-8", "replace")
        except (ValueError, aiohttp.ClientError):
            return
        method = raw.pop("method", None)
        if isinstance(method, str) and method:
            # No token here: the reply is authenticated by being the webhook's answer.
            await self._execute(state.bot_id, method, raw, files)

