"""Log files under LOG_DIR, the ones operators of this kind of bot expect, rotated, secrets redacted.

Modules never open files themselves: they log to a named logger and this module routes it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from logging.handlers import RotatingFileHandler
from pathlib import Path

# logger name -> file it goes to (besides bot.log, which gets everything at INFO and above).
LOG_FILES: dict[str, str] = {
    "alertbot.payments": "payments.log",
    "alertbot.redis.errors": "rediserror.log",
    "alertbot.redis.performance": "redisperformance.log",
    "alertbot.sent": "sent_notifications.log",
    "alertbot.settings": "user_settings.log",
}
MAIN_LOG = "bot.log"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5

# Shapes of secrets that can reach a log line without being a configured value:
# bot tokens inside Bot API URLs, and passwords inside connection URLs.
_TOKEN_RE = re.compile(r"(?<!\d)\d{5,}:[A-Za-z0-9_-]{20,}")
_URL_PASSWORD_RE = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _TOKEN_RE.sub("***", text)
    return _URL_PASSWORD_RE.sub(r"\g<scheme>\g<user>:***@", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message so no secret reaches any handler."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def setup_logging(log_dir: Path, secrets: Iterable[str] = (), *, console_level: int | None = logging.INFO) -> None:
    """Route every alertbot logger to its file; `console_level=None` keeps the terminal quiet."""
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    redaction = RedactingFilter(secrets)

    def file_handler(name: str, level: int) -> RotatingFileHandler:
        handler = RotatingFileHandler(log_dir / name, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        handler.setLevel(level)
        handler.setFormatter(formatter)
        handler.addFilter(redaction)
        return handler

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_alertbot", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.INFO)
    main = file_handler(MAIN_LOG, logging.INFO)
    main._alertbot = True  # type: ignore[attr-defined]
    root.addHandler(main)
    if console_level is not None:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(console_level)
        console.setFormatter(formatter)
        console.addFilter(redaction)
        console._alertbot = True  # type: ignore[attr-defined]
        root.addHandler(console)

    for logger_name, file_name in LOG_FILES.items():
        logger = logging.getLogger(logger_name)
        for handler in list(logger.handlers):
            if getattr(handler, "_alertbot", False):
                logger.removeHandler(handler)
                handler.close()
        handler = file_handler(file_name, logging.DEBUG)
        handler._alertbot = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    # aiogram logs every update at INFO; keep it out of the operator's way.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    # solana-py's HTTP client logs each request's full URL at INFO, and RPC URLs carry API keys.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
