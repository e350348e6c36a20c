"""The whole service selling plans on SOL and NOWPayments: a user taps through /plans, pays at the
local Solana node or NOWPayments stand-in, and gets the plan and a receipt in Telegram."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.runtime import Runtime
from domain.plans import Rail, sol_to_lamports
from standins.nowpayments import NowPaymentsServer
from standins.solana_rpc import SolanaRpcServer
from standins.telegram import DEFAULT_TOKEN, FakeTelegramServer, SentRecord

USER = 4242
RECEIVER = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"
PAYER = "7vfCXTUXx5WJV5JADk17DUJ4ksgau7utNKj4b963voxs"
API_KEY = "np-test-key"
IPN_SECRET = "np-test-ipn-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class User:
    def __init__(self, telegram: FakeTelegramServer, user_id: int) -> None:
        self.telegram = telegram
        self.user_id = user_id

    async def say(self, text: str) -> SentRecord:
        before = len(self.telegram.messages_to(self.user_id))
        self.telegram.inject_message(self.user_id, text, first_name="Payer")
        records = await self.telegram.wait_for_sent(lambda r: r.chat_id == self.user_id, count=before + 1, timeout=15)
        return records[before]

    async def press(self, label: str, *, replies: int = 0) -> None:
        """Press the newest button whose label contains `label`; wait for `replies` new messages
        (or, with none, for the press to be answered)."""
        before = len(self.telegram.messages_to(self.user_id))
        answered = len(self.telegram.answered_callbacks)
        for record in reversed(self.telegram.messages_to(self.user_id)):
            message = self.telegram.message(self.user_id, record.message_id) or {}
            for row in (message.get("reply_markup") or {}).get("inline_keyboard", []):
                for button in row:
                    if label in button["text"] and "callback_data" in button:
                        edited = self._edits(record.message_id)
                        self.telegram.inject_callback(self.user_id, record.message_id, button["callback_data"])
                        await self.telegram.wait_for(
                            lambda: len(self.telegram.answered_callbacks) > answered, timeout=15
                        )
                        if not replies:  # the press is answered first, then its screen edited
                            pressed, before_edits = record.message_id, edited
                            await self.telegram.wait_for(
                                lambda: self._edits(pressed) > before_edits,  # noqa: B023 - awaited here
                                timeout=15,
                            )
                        else:
                            await self.telegram.wait_for_sent(
                                lambda r: r.chat_id == self.user_id, count=before + replies, timeout=15
                            )
                        return
        raise AssertionError(f"no button {label!r} offered to {self.user_id}")

    def _edits(self, message_id: int) -> int:
        return sum(1 for r in self.telegram.edits if r.chat_id == self.user_id and r.message_id == message_id)

    async def next_message_with(self, text: str) -> SentRecord:
        [record] = await self.telegram.wait_for_sent(
            lambda r: r.chat_id == self.user_id and text in (r.text or r.raw_text or ""), timeout=20
        )
        return record


@pytest.fixture
async def running(redis_url: str, database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Runtime, User, Any]]:
    async with (
        FakeTelegramServer() as telegram,
        SolanaRpcServer() as solana,
        NowPaymentsServer(API_KEY, IPN_SECRET) as gateway,
    ):
        port = free_port()
        settings = Settings(
            _env_file=None,
            bot_token=DEFAULT_TOKEN,
            telegram_api_url=telegram.base_url,
            redis_url=redis_url,
            database_url=database_url,
            http_port=port,
            log_dir=tmp_path / "logs",
            sol_receiver=RECEIVER,
            solana_rpc_url=[solana.url],
            nowpayments_api_url=gateway.url,
            nowpayments_api_key=API_KEY,
            nowpayments_ipn_secret=IPN_SECRET,
            public_base_url=f"http://127.0.0.1:{port}",
        )
        runtime = Runtime(settings)
        await runtime.start()
        try:
            await runtime.begin_receiving()
            user = User(telegram, USER)
            await user.say("/start")
            yield runtime, user, (solana, gateway)
        finally:
            await runtime.stop()


async def plan_is_active(runtime: Runtime) -> bool:
    subscriber = await runtime.store.get(USER)
    return subscriber is not None and subscriber.has_active_plan(datetime.now(UTC))


async def test_a_plan_bought_in_sol_from_plans_to_receipt(running: tuple[Runtime, User, Any]) -> None:
    runtime, user, (solana, _) = running
    await user.say("/plans")
    await user.press("1 month")
    await user.press("in SOL", replies=1)  # the order screen: the QR code and the solana: link
    [order] = await runtime.ledger.open_orders(Rail.SOL)
    assert order.reference and order.pay_url and order.pay_url.startswith(f"solana:{RECEIVER}?amount=0.09&")
    screen = telegram_last(user)
    assert screen.method == "sendPhoto" and order.pay_url in (screen.caption or "")
    assert not await plan_is_active(runtime)

    solana.set_balance(PAYER, sol_to_lamports(Decimal(1)))
    solana.add_transfer(PAYER, RECEIVER, sol_to_lamports(order.amount), reference=order.reference, memo=order.id)
    sol = runtime.parts.sol
    assert sol is not None
    sol.poke()
    receipt = await user.next_message_with("Payment received")
    assert "0.09 SOL" in (receipt.text or "")
    assert await plan_is_active(runtime)


async def test_a_plan_bought_through_nowpayments_from_plans_to_receipt(
    running: tuple[Runtime, User, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    runtime, user, (_, gateway) = running
    await user.say("/plans")
    await user.press("1 month")
    await user.press("in crypto")  # the card becomes the order, with a button to the payment page
    [invoice] = gateway.invoices.values()
    assert invoice.request["ipn_callback_url"] == f"{runtime.settings.public_base_url}/ipn/nowpayments"
    assert Decimal(str(invoice.request["price_amount"])) == 15 and invoice.request["price_currency"] == "usd"

    assert await gateway.pay(invoice.id, "confirming") == 200
    assert not await plan_is_active(runtime)
    assert await gateway.pay(invoice.id, "finished") == 200
    receipt = await user.next_message_with("Payment received")
    assert "15 USD" in (receipt.text or "")
    assert await plan_is_active(runtime)
    assert await gateway.pay(invoice.id, "finished", forged=True) == 401
    # Every state change went to the payments log, and no secret to any log.
    payments_log = [r.getMessage() for r in caplog.records if r.name == "alertbot.payments"]
    assert any("created" in line for line in payments_log) and any("credited" in line for line in payments_log)
    assert API_KEY not in caplog.text and IPN_SECRET not in caplog.text


def telegram_last(user: User) -> SentRecord:
    return user.telegram.messages_to(user.user_id)[-1]
