"""The message the sender takes, the lanes it goes out in (lower first), and which lane a
subscriber's alert takes."""

from __future__ import annotations

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
    Telegram cannot use the photo); `digest_line` lets it be merged into
    a digest (see services.sender.DigestPolicy). `received_at` is the wall-clock time (time.time()) the feed frame
    behind it arrived: its send's latency is measured from it. `kind` and `token` name it in the
    sent log line, which never shows the body.
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
    token: str = ""

    def log_fields(self) -> str:
        """key=value pairs for the log line; never the message body, never a raw newline."""
        return log_pairs(("kind", self.kind), ("token", self.token))


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
