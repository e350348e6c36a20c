"""The Bot API methods, with Telegram's checks and error wording.

getMe, getUpdates (offset and long-poll semantics), sendMessage, sendPhoto, sendInvoice,
createInvoiceLink, the edits, deleteMessage, sendChatAction, answerCallbackQuery,
answerPreCheckoutQuery, refundStarPayment, editUserStarSubscription, the command methods and
webhook delivery; and
`_execute`, which runs one call: authorization, forced errors, the handler, the answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

import aiohttp

from standins.telegram.html import EntityParseError, _trim, _utf16_len, parse_html
from standins.telegram.limits import FloodControl
from standins.telegram.records import AnsweredCallback, AnsweredPreCheckout, ApiCall, PhotoInfo, SentRecord
from standins.telegram.state import _BotState
from standins.telegram.wire import JsonDict, _ApiError, _bad_request, _Params, _Upload, _WithDescription

MAX_TEXT_LENGTH: Final[int] = 4096
MAX_CAPTION_LENGTH: Final[int] = 1024
MAX_CALLBACK_DATA_BYTES: Final[int] = 64
MAX_CALLBACK_ANSWER_LENGTH: Final[int] = 200
# Telegram Stars subscriptions: the only period Telegram accepts, and the highest price.
SUBSCRIPTION_PERIOD: Final[int] = 30 * 24 * 3600
MAX_SUBSCRIPTION_STARS: Final[int] = 10_000
_BOT_COMMAND_RE: Final[re.Pattern[str]] = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET_TOKEN_RE: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

# Update types a bot receives when it never asked for a specific list (Telegram's default).
_DEFAULT_EXCLUDED_UPDATES: Final[frozenset[str]] = frozenset(
    {"chat_member", "message_reaction", "message_reaction_count"}
)
# Telegram's words for an inline button without text or without an action.
_TEXT_BUTTONS_UNALLOWED: Final = "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
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

_GONE_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "blocked": (403, "Forbidden: bot was blocked by the user"),
    "deactivated": (403, "Forbidden: user is deactivated"),
    "deleted": (400, "Bad Request: chat not found"),
}


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


class BotApiMethods(FloodControl):
    """The method handlers and the checks they share: one part of `FakeTelegramServer`.

    The attributes are set in ``FakeTelegramServer.__init__``.
    """

    strict_chats: bool
    webhook_retry_delay: float
    webhook_timeout: float
    sent: list[SentRecord]
    edits: list[SentRecord]
    deleted: list[tuple[int, int]]
    answered_callbacks: list[AnsweredCallback]
    answered_pre_checkouts: list[AnsweredPreCheckout]
    refunds: list[tuple[int, str]]
    invoice_links: list[JsonDict]
    subscription_edits: list[tuple[int, str, bool]]
    chat_actions: list[tuple[int, str]]
    requests: Counter[str]
    calls: deque[ApiCall]
    _files: dict[str, PhotoInfo]
    _next_file_number: int
    _closing: bool
    _client: aiohttp.ClientSession | None
    _handlers: dict[str, tuple[str, Callable[[_BotState, _Params], Any]]]

    # ---------------------------------------------------------------- one API call

    def _error_body(self, exc: _ApiError) -> JsonDict:
        body: JsonDict = {"ok": False, "error_code": exc.status, "description": exc.description}
        if exc.parameters:
            body["parameters"] = exc.parameters
        return body

    def _count_error(self, status: int) -> None:
        attribute = {
            400: "rejected_400",
            401: "rejected_401",
            403: "rejected_403",
            404: "rejected_404",
            409: "rejected_409",
            429: "rejected_429",
        }.get(status)
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
            raise _ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self._migrated[chat_id]},
            )
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
                raise _bad_request(
                    'can\'t parse inline keyboard button: field "inline_keyboard" must be an Array of Arrays'
                )
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise _bad_request(_TEXT_BUTTONS_UNALLOWED)
                actions = [key for key in _INLINE_BUTTON_ACTIONS if key in button]
                if not actions:
                    raise _bad_request(_TEXT_BUTTONS_UNALLOWED)
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
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
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
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                )
            if state.webhook_url:
                raise _ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
        result = list(state.updates)[:limit] if not self._closing else []
        self.stats.updates_delivered += len(result)
        return result

    @staticmethod
    def _drop_unwanted(state: _BotState) -> None:
        # Telegram never creates updates of types the bot did not ask for.
        allowed = state.allowed_updates
        kept = [u for u in state.updates if BotApiMethods._wanted(u, allowed)]
        if len(kept) != len(state.updates):
            state.updates = deque(kept)

    @staticmethod
    def _wanted(update: JsonDict, allowed: frozenset[str] | None) -> bool:
        kind = next((key for key in update if key != "update_id"), "")
        if allowed is None:
            return kind not in _DEFAULT_EXCLUDED_UPDATES
        return kind in allowed

    def _reply_to(self, state: _BotState, chat_id: int, params: _Params) -> JsonDict | None:
        """The message a send replies to (reply_parameters, or the older reply_to_message_id),
        as Telegram echoes it in `reply_to_message`; None when it replies to nothing. A missing
        message is a 400 unless the send allows going without the reply."""
        reply = params.get_json("reply_parameters", "can't parse reply parameters JSON object")
        if reply is None and params.present("reply_to_message_id"):
            reply = {
                "message_id": params.get_int("reply_to_message_id"),
                "allow_sending_without_reply": params.get_bool("allow_sending_without_reply"),
            }
        if reply is None:
            return None
        if not isinstance(reply, dict) or not isinstance(reply.get("message_id"), int):
            raise _bad_request("can't parse reply parameters JSON object")
        stored = state.messages.get((chat_id, reply["message_id"]))
        if stored is None:
            if reply.get("allow_sending_without_reply"):
                return None
            raise _bad_request("message to be replied not found")
        return dict(stored[0])

    def _send_message(self, state: _BotState, params: _Params) -> JsonDict:
        chat_id = self._resolve_chat_id(params)
        text, entities = self._formatted_text(params, "text", "entities", required=True, max_length=MAX_TEXT_LENGTH)
        markup, echo = self._reply_markup(params)
        self._check_reachable(chat_id)
        replied = self._reply_to(state, chat_id, params)
        self._check_limits(state, chat_id, paid=params.get_bool("allow_paid_broadcast"), per_chat=True)
        content: JsonDict = {"text": text}
        if replied is not None:
            content["reply_to_message"] = replied
        if entities:
            content["entities"] = entities
        preview = params.get_json("link_preview_options", "can't parse link preview options JSON object")
        if isinstance(preview, dict) and preview:
            content["link_preview_options"] = preview
        elif params.get_bool("disable_web_page_preview"):
            content["link_preview_options"] = {"is_disabled": True}
        return self._deliver(
            state,
            "sendMessage",
            chat_id,
            params,
            content,
            text=text,
            raw_text=params.get_str("text"),
            entities=entities,
            markup=markup,
            echo_markup=echo,
        )

    def _send_photo(self, state: _BotState, params: _Params) -> JsonDict:
        chat_id = self._resolve_chat_id(params)
        caption, entities = self._formatted_text(
            params, "caption", "caption_entities", required=False, max_length=MAX_CAPTION_LENGTH
        )
        markup, echo = self._reply_markup(params)
        photo = self._photo(params)
        self._check_reachable(chat_id)
        replied = self._reply_to(state, chat_id, params)
        self._check_limits(state, chat_id, paid=params.get_bool("allow_paid_broadcast"), per_chat=True)
        if photo.source != "file_id":
            # Later sends may reuse the file_id; the registry needn't keep the bytes.
            self._files[photo.file_id] = replace(photo, content=None)
        content: JsonDict = {
            "photo": [
                {
                    "file_id": photo.file_id,
                    "file_unique_id": photo.file_unique_id,
                    "width": photo.width,
                    "height": photo.height,
                    **({"file_size": photo.size} if photo.size is not None else {}),
                }
            ]
        }
        if caption is not None:
            content["caption"] = caption
            if entities:
                content["caption_entities"] = entities
        if replied is not None:
            content["reply_to_message"] = replied
        return self._deliver(
            state,
            "sendPhoto",
            chat_id,
            params,
            content,
            caption=caption,
            raw_text=params.get_str("caption"),
            entities=entities,
            markup=markup,
            echo_markup=echo,
            photo=photo,
        )

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
            return PhotoInfo(
                source="upload",
                file_id=f"AgACAgFake{number:08d}",
                file_unique_id=f"AQADFake{number:08d}",
                filename=upload.filename,
                content_type=upload.content_type,
                size=len(upload.content),
                width=width,
                height=height,
                content=upload.content,
            )
        if not value:
            raise _bad_request("there is no photo in the request")
        if value.startswith(("http://", "https://")):
            number = self._next_file_number
            self._next_file_number += 1
            return PhotoInfo(
                source="url", file_id=f"AgACAgFake{number:08d}", file_unique_id=f"AQADFake{number:08d}", url=value
            )
        known = self._files.get(value)
        if known is None:
            raise _bad_request("wrong file identifier/HTTP URL specified")
        return PhotoInfo(
            source="file_id",
            file_id=known.file_id,
            file_unique_id=known.file_unique_id,
            size=known.size,
            width=known.width,
            height=known.height,
        )

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
        if (
            not isinstance(prices, list)
            or not prices
            or not all(
                isinstance(p, dict) and isinstance(p.get("label"), str) and isinstance(p.get("amount"), int)
                for p in prices
            )
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
        content = {
            "invoice": {
                key: invoice[key] for key in ("title", "description", "start_parameter", "currency", "total_amount")
            }
        }
        return self._deliver(
            state, "sendInvoice", chat_id, params, content, markup=markup, echo_markup=echo, invoice=invoice
        )

    def _create_invoice_link(self, state: _BotState, params: _Params) -> str:
        invoice = self._invoice_fields(params)
        period = params.get_int("subscription_period")
        if params.present("subscription_period"):
            # A subscription: Stars only, 30 days only, at most 10000 Stars a period.
            if invoice["currency"] != "XTR" or period != SUBSCRIPTION_PERIOD:
                raise _bad_request("SUBSCRIPTION_PERIOD_INVALID")
            if invoice["total_amount"] > MAX_SUBSCRIPTION_STARS:
                raise _bad_request("SUBSCRIPTION_PRICE_INVALID")
        url = f"https://t.me/$FakeInvoice{abs(hash(invoice['payload'])) % 10**12}"
        self.invoice_links.append({**invoice, "subscription_period": period, "url": url})
        return url

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

    def _record_edit(
        self, state: _BotState, method: str, chat_id: int, params: _Params, message: JsonDict, markup: JsonDict | None
    ) -> None:
        state.messages[(chat_id, message["message_id"])] = (message, True)
        self._record_limits(state, chat_id, per_chat=False)
        self.edits.append(
            SentRecord(
                method=method,
                bot_id=state.bot_id,
                chat_id=chat_id,
                message_id=message["message_id"],
                text=message.get("text"),
                caption=message.get("caption"),
                raw_text=params.get_str("text") if method == "editMessageText" else None,
                parse_mode=params.get_str("parse_mode"),
                entities=message.get("entities", []),
                reply_markup=markup,
                photo=None,
                invoice=None,
                allow_paid_broadcast=False,
                disable_web_page_preview=False,
                monotonic=self.clock(),
                wall_time=time.time(),
                params=dict(params.raw),
                message=message,
            )
        )
        self.stats.edited += 1

    def _edit_message_text(self, state: _BotState, params: _Params) -> JsonDict:
        text, entities = self._formatted_text(params, "text", "entities", required=True, max_length=MAX_TEXT_LENGTH)
        markup, echo = self._reply_markup(params)
        chat_id, _, current = self._stored_bot_message(state, params, "message to edit not found")
        if "text" not in current:
            raise _bad_request("there is no text in the message to edit")
        if (
            current.get("text") == text
            and current.get("entities", []) == entities
            and current.get("reply_markup") == echo
        ):
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
        self.answered_callbacks.append(
            AnsweredCallback(
                callback_query_id=query_id,
                update_id=update_id,
                user_id=user_id,
                data=data,
                text=text,
                show_alert=params.get_bool("show_alert"),
                url=params.get_str("url"),
                cache_time=params.get_int("cache_time"),
                monotonic=self.clock(),
            )
        )
        self.stats.callbacks_answered += 1
        return True

    def _answer_pre_checkout_query(self, state: _BotState, params: _Params) -> bool:
        query_id = params.get_str("pre_checkout_query_id") or ""
        if query_id not in state.pre_checkouts:
            raise _bad_request("QUERY_ID_INVALID")
        if not params.present("ok"):
            raise _bad_request('parameter "ok" is required')
        ok = params.get_bool("ok")
        error_message = params.get_str("error_message")
        if not ok and not error_message:
            raise _bad_request("error_message is empty")
        update_id, query = state.pre_checkouts.pop(query_id)
        self.answered_pre_checkouts.append(
            AnsweredPreCheckout(
                pre_checkout_query_id=query_id,
                update_id=update_id,
                user_id=query["from"]["id"],
                ok=ok,
                error_message=error_message,
                currency=query["currency"],
                total_amount=query["total_amount"],
                invoice_payload=query["invoice_payload"],
                monotonic=self.clock(),
            )
        )
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

    def _edit_user_star_subscription(self, state: _BotState, params: _Params) -> bool:
        user_id = params.get_int("user_id")
        charge_id = params.get_str("telegram_payment_charge_id") or ""
        if not params.present("is_canceled"):
            raise _bad_request('parameter "is_canceled" is required')
        charge = self._charges.get(charge_id)
        if charge is None or charge[0] != user_id or charge_id not in self._subscription_charges:
            raise _bad_request("CHARGE_NOT_FOUND")
        self.subscription_edits.append((charge[0], charge_id, params.get_bool("is_canceled")))
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
        key = (
            self._scope_key(params.get_json("scope", "can't parse BotCommandScope JSON object")),
            params.get_str("language_code") or "",
        )
        if cleaned:
            state.commands[key] = cleaned
        else:
            state.commands.pop(key, None)
        return True

    def _get_my_commands(self, state: _BotState, params: _Params) -> list[JsonDict]:
        key = (
            self._scope_key(params.get_json("scope", "can't parse BotCommandScope JSON object")),
            params.get_str("language_code") or "",
        )
        return list(state.commands.get(key, []))

    def _delete_my_commands(self, state: _BotState, params: _Params) -> bool:
        key = (
            self._scope_key(params.get_json("scope", "can't parse BotCommandScope JSON object")),
            params.get_str("language_code") or "",
        )
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
                async with client.post(
                    state.webhook_url,
                    data=json.dumps(update, ensure_ascii=False),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.webhook_timeout),
                ) as response:
                    if 200 <= response.status < 300:
                        if state.updates and state.updates[0] is update:
                            state.updates.popleft()
                        self.stats.updates_delivered += 1
                        await self._run_webhook_reply(state, response)
                        self._changed.fire()
                        continue
                    error = f"Wrong response from the webhook: {response.status} {response.reason}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
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
                        files[part.name] = _Upload(
                            part.filename, part.headers.get("Content-Type", "application/octet-stream"), bytes(data)
                        )
                    else:
                        raw[part.name] = bytes(data).decode("utf-8", "replace")
        except (ValueError, aiohttp.ClientError):
            return
        method = raw.pop("method", None)
        if isinstance(method, str) and method:
            # No token here: the reply is authenticated by being the webhook's answer.
            await self._execute(state.bot_id, method, raw, files)
