"""What the local Bot API observed, as plain values for tests and benches to read.

Accepted sends and edits (`SentRecord`, with the photo a sendPhoto carried as `PhotoInfo`),
answered callback and pre-checkout queries, every API call as answered (`ApiCall`), and the
counters in `ServerStats`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from standins.telegram.wire import JsonDict


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

    @property
    def reply_to(self) -> int | None:
        """The id of the message this one replies to (None: a plain message)."""
        replied = self.message.get("reply_to_message")
        return int(replied["message_id"]) if isinstance(replied, dict) else None


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
