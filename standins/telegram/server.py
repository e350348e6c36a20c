"""`FakeTelegramServer`: the local Bot API as an aiohttp server, and what tests read from it.

This part holds the server's lifecycle, tokens, the HTTP layer (routes, request parsing, the
gateway pages of a Telegram that is down) and the observation API (`sent`, `wait_for_sent`,
`describe`, ...); the methods, limits and state it serves come from the modules beside it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Final

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from standins.telegram.limits import RateLimits, _ForcedErrors
from standins.telegram.methods import BotApiMethods
from standins.telegram.records import AnsweredCallback, AnsweredPreCheckout, ApiCall, PhotoInfo, SentRecord, ServerStats
from standins.telegram.state import _BotState, _Pulse
from standins.telegram.wire import JsonDict, _ApiError, _bad_request, _Params, _Upload

#: A well-formed token; any ``<digits>:<secret>`` token is accepted unless `tokens=` restricts it.
DEFAULT_TOKEN: Final[str] = "123456789:AAFakeTokenForTests-0123456789abcdefghij"

#: Telegram accepts multipart uploads of up to 50 MB; a bit more leaves room for the other fields.
MAX_REQUEST_BYTES: Final[int] = 52 * 1024 * 1024

_TOKEN_RE: Final[re.Pattern[str]] = re.compile(r"^(\d{1,20}):([A-Za-z0-9_-]{1,200})$")


class WaitTimeout(AssertionError):
    """Raised by the ``wait_for*`` helpers; an AssertionError so pytest reports it as a failure."""


class LocalAiohttpSession(AiohttpSession):
    """aiogram's AiohttpSession, minus the 0.25 s pause in close().

    aiogram waits that long for TLS connections to shut down gracefully; plain HTTP to a local
    server needs no such wait, and dozens of tests each closing a bot would add seconds.
    """

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class FakeTelegramServer(BotApiMethods):
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
        # createInvoiceLink's invoices (with "url" and "subscription_period"), oldest first.
        self.invoice_links: list[JsonDict] = []
        # editUserStarSubscription calls: (user id, charge id, is_canceled).
        self.subscription_edits: list[tuple[int, str, bool]] = []
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
        self._subscription_charges: set[str] = set()  # charges of recurring payments
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
            ("sendDocument", self._send_document),
            ("sendInvoice", self._send_invoice),
            ("editMessageText", self._edit_message_text),
            ("editMessageReplyMarkup", self._edit_message_reply_markup),
            ("deleteMessage", self._delete_message),
            ("sendChatAction", self._send_chat_action),
            ("answerCallbackQuery", self._answer_callback_query),
            ("answerPreCheckoutQuery", self._answer_pre_checkout_query),
            ("createInvoiceLink", self._create_invoice_link),
            ("refundStarPayment", self._refund_star_payment),
            ("editUserStarSubscription", self._edit_user_star_subscription),
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
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
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
        self.invoice_links.clear()
        self.subscription_edits.clear()
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
            await self.wait_for(lambda: len(self.sent) >= wanted, timeout, description=f"{wanted} sent message(s)")
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
        await self.wait_for(
            lambda: self.requests[canonical] >= count, timeout, description=f"{count} {canonical} request(s)"
        )

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
        self._gateway_errors = [
            f
            for f in self._gateway_errors
            if (f.until is None or now < f.until) and (f.remaining is None or f.remaining > 0)
        ]
        if self._gateway_errors:
            page = self._gateway_errors[0]
            if page.remaining is not None:
                page.remaining -= 1
            self._count_error(page.status)
            self.calls.append(ApiCall(method, 0, raw, page.status, page.description, now))
            return web.Response(
                status=page.status,
                content_type="text/html",
                text=f"<html><body><h1>{page.status} Bad Gateway</h1></body></html>",
            )
        status, body = await self._execute(self._authorize(token), method, raw, files)
        return self._json_response(status, body)

    @staticmethod
    def _json_response(status: int, body: JsonDict) -> web.Response:
        return web.Response(status=status, text=json.dumps(body, ensure_ascii=False), content_type="application/json")

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
