"""`alertbot demo`: the real service on embedded stores and a local Bot API, shown in the terminal.

Nothing here is a mock of our own code: the demo starts the same `Runtime` as `alertbot run`,
against the protocol-level Bot API double from tests/doubles, and plays a scripted subscriber.
"""

from __future__ import annotations

import html
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from bot.config import Settings
from bot.logs import setup_logging
from bot.runtime import Runtime
from tests.doubles.telegram_api import FakeTelegramServer

DEMO_TOKEN = "123456789:DEMO-token-for-the-local-bot-api-server"
DEMO_USER_ID = 1001
DEMO_USER_NAME = "Alice"
REPLY_TIMEOUT = 15.0

_TAG = re.compile(r"<[^>]+>")


def terminal_text(message_html: str) -> str:
    """What a Telegram client would show for an HTML message, as plain text."""
    return html.unescape(_TAG.sub("", message_html))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _show(out: TextIO, who: str, message: str) -> None:
    lines = message.splitlines() or [""]
    print(f"  {who:>8} │ {lines[0]}", file=out)
    for line in lines[1:]:
        print(f"  {'':>8} │ {line}", file=out)


async def run_demo(out: TextIO = sys.stdout) -> int:
    work = Path(tempfile.mkdtemp(prefix="abdemo"))
    async with FakeTelegramServer() as telegram:
        settings = Settings(
            _env_file=None,
            bot_token=DEMO_TOKEN,
            telegram_api_url=telegram.base_url,
            redis_url=None,
            database_url=None,
            webhook_url=None,
            stream_url=None,
            http_port=_free_port(),
            log_dir=work / "logs",
        )
        setup_logging(settings.log_dir, settings.secrets(), console_level=None)
        runtime = Runtime(settings, data_dir=work, ephemeral_data=True)
        print("Token Alert Bot demo", file=out)
        print(f"  Bot API : local test server at {telegram.base_url}", file=out)
        print("  stores  : embedded PostgreSQL (migrations applied), embedded Redis stand-in", file=out)
        print(f"  logs    : {settings.log_dir}", file=out)
        print("", file=out)
        await runtime.start()
        try:
            await runtime.begin_receiving()
            for command in ("/start", "/help"):
                before = len(telegram.messages_to(DEMO_USER_ID))
                _show(out, DEMO_USER_NAME, command)
                telegram.inject_message(DEMO_USER_ID, command, first_name=DEMO_USER_NAME, username="alice_demo")
                await telegram.wait_for(
                    lambda: len(telegram.messages_to(DEMO_USER_ID)) > before, timeout=REPLY_TIMEOUT
                )
                reply = telegram.messages_to(DEMO_USER_ID)[-1]
                _show(out, "bot", terminal_text(reply.text or ""))
                print("", file=out)
        finally:
            await runtime.stop()
    print("demo finished: the bot answered every message.", file=out)
    return 0
