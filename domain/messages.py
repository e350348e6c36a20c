"""The message the sender takes, the lanes it goes out in (lower first), a token's alert for one
chat (a kind of message), and one call's alert rendered for every chat it may reach."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

from domain.subscriber import Subscriber


class Lane(IntEnum):
    """Priorities, lower first: a user's own answers and payment confirmations, then admin
    messages, then alerts, paid plans before free ones, then reports (they can wait)."""

    REPLY = 0
    PAYMENT = 1
    ADMIN = 2
    PAID_ALERT = 10
    FREE_ALERT = 11
    REPORT = 20


def alert_lane(subscriber: Subscriber | None, now: datetime) -> Lane:
    """An alert goes in the paid lane to a subscriber whose plan is active at `now`, else in the
    free lane (admins without a plan, and anyone the index no longer knows)."""
    return Lane.PAID_ALERT if subscriber is not None and subscriber.has_active_plan(now) else Lane.FREE_ALERT


@dataclass(frozen=True)
class OutgoingMessage:
    """One message for the sender, as `submit` and `send_now` take it.

    With `photo_url`, or `photo_bytes` (an image uploaded with the message, such as a chart), it
    goes as that photo with `html` as its caption (or as text when the caption is too long or
    Telegram cannot use the photo); `digest_line` lets it be merged into a digest (see
    services.sender.DigestPolicy). `received_at` is the wall-clock time (time.time()) the feed
    frame behind it arrived: its send's latency is measured from it. `kind` names it in the sent
    log line, which never shows the body. With `reply_to_message_id` it replies to that message
    of the chat, or goes as a plain message when the chat no longer has it.
    """

    chat_id: int
    html: str
    lane: int = Lane.PAID_ALERT
    reply_markup: Any = None
    photo_url: str | None = None
    photo_bytes: bytes | None = field(default=None, repr=False)
    digest_line: str | None = None
    received_at: float | None = None
    kind: str = ""
    reply_to_message_id: int | None = None

    def log_fields(self) -> str:
        """key=value pairs for the log line; never the message body, never a raw newline."""
        return log_pairs(("kind", self.kind))


@dataclass(frozen=True, kw_only=True)
class Alert(OutgoingMessage):
    """A token's alert for one chat: sent like any message, and kept as one entry of the outbox
    stream until Telegram has answered (services.outbox encodes it). (token, chat) names its
    delivery; it has no keyboard, which the stream could not keep."""

    lane: int = field()  # without the inherited default: paid or free is always decided
    token: str
    reply_markup: Any = field(default=None, init=False)
    kind: str = field(default="alert", init=False)

    def log_fields(self) -> str:
        return log_pairs(("kind", self.kind), ("token", self.token))


@dataclass(frozen=True)
class RenderedAlert:
    """One call's alert rendered once per language, and what each chat it may reach gets.

    `texts` holds (html, digest line) per language; `routes` maps a chat to (index into `texts`,
    lane). Made before the claim, so the claim script (services.dedup) can write the entries of
    the chats it wins itself, each text sent once however many chats share it.
    """

    token: str
    texts: tuple[tuple[str, str], ...]
    routes: dict[int, tuple[int, int]]
    photo_url: str | None = None
    received_at: float | None = None  # wall-clock time of the frame

    def for_chat(self, chat_id: int) -> Alert:
        text, lane = self.routes[chat_id]
        html, digest = self.texts[text]
        return Alert(
            token=self.token,
            chat_id=chat_id,
            html=html,
            lane=lane,
            digest_line=digest,
            photo_url=self.photo_url,
            received_at=self.received_at,
        )

    def for_chats(self, chat_ids: Iterable[int]) -> list[Alert]:
        return [self.for_chat(chat_id) for chat_id in chat_ids]


LOG_VALUE_MAX = 100  # characters of one value in a log line


def log_pairs(*pairs: tuple[str, str]) -> str:
    """key=value pairs for the log line, empty values left out; never a raw newline."""
    parts: list[str] = []
    for key, value in pairs:
        if not value:
            continue
        text = value[:LOG_VALUE_MAX]
        if not text.isprintable() or " " in text or "=" in text:
            text = repr(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)
