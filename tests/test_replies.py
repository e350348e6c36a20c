"""A user's own actions are answered at once, even while the sender is busy with alerts.

The bot runs as in production: the sender paces the handlers' requests (replies, edits, callback
answers) with the alerts, against the Telegram double with Telegram's limits switched on. What
is compared is the order of what the double accepted (and the count of what it never got), not
how long anything took: where a reply would have to wait for its chat's spacing, the spacing is
made so long that such a reply could never arrive during the test.
"""

from __future__ import annotations

import pytest

from services.sender import Lane, OutgoingMessage
from standins.telegram import RateLimits, SentRecord
from tests.bot_env import REPLY_TIMEOUT, BotEnv, running_bot
from tests.conftest import Stores

pytestmark = pytest.mark.timeout(90)

USER = 101
OTHER_CHATS = range(5_000, 5_200)


def alerts_to(env: BotEnv, chat_id: int) -> list[SentRecord]:
    return [r for r in env.server.messages_to(chat_id) if r.body.startswith("alert")]


async def test_a_press_during_a_broadcast_is_answered_and_edited_before_the_next_alert(stores: Stores) -> None:
    # Two seconds between a chat's alerts; the double enforces Telegram's own limits.
    async with running_bot(stores, paced=True, sender_options={"per_chat_interval": 2.0}, limits=RateLimits()) as env:
        chat = env.chat(USER)
        screen = await chat.ask("/settings")
        for i in range(6):
            env.sender.submit(OutgoingMessage(USER, f"alert {i} for you", lane=Lane.PAID_ALERT))
        for i, other in enumerate(OTHER_CHATS):  # the rest of the broadcast: 200 chats at 30 a second
            env.sender.submit(OutgoingMessage(other, f"alert {i} for someone else", lane=Lane.FREE_ALERT))
        await env.server.wait_for(lambda: len(alerts_to(env, USER)) == 1, REPLY_TIMEOUT, description="an alert")

        data = next(d for label, d in chat.screen(screen.message_id).buttons if label == "Min market cap")
        update_id = env.server.inject_callback(USER, screen.message_id, data)
        query_id = env.server.callback_query_id_of(update_id)
        await env.handled.wait(update_id)
        await env.server.wait_for(lambda: len(alerts_to(env, USER)) == 2, REPLY_TIMEOUT, description="the next alert")

        next_alert = alerts_to(env, USER)[1]
        [answer] = [a for a in env.server.answered_callbacks if a.callback_query_id == query_id]
        [edit] = [r for r in env.server.edits if r.chat_id == USER and r.message_id == screen.message_id]
        assert answer.monotonic <= edit.monotonic < next_alert.monotonic  # answered first, then the screen
        assert edit.text is not None and "Send the new value for Min market cap" in edit.text
        # The press put no new message in the chat: between the alerts there is nothing else.
        assert [r.body for r in env.server.messages_to(USER)][1:] == ["alert 0 for you", "alert 1 for you"]
        # The broadcast to the other chats (at 30 a second, over six seconds) went on around it.
        others = [r.monotonic for r in env.server.sent if r.chat_id in OTHER_CHATS]
        assert min(others) < answer.monotonic < max(others)
        assert env.server.stats.rejected_429 == 0
        await env.sender.stop(drain=False)


async def test_a_typed_value_and_a_press_right_after_it_do_not_wait_for_the_chats_spacing(stores: Stores) -> None:
    # An hour between a chat's messages: a reply that waited for it would never come. The chat's
    # burst of three quick messages is all the replies here need.
    async with running_bot(stores, paced=True, sender_options={"per_chat_interval": 3600}, limits=RateLimits()) as env:
        chat = env.chat(USER)
        await chat.ask("/settings")  # the chat's first message
        env.sender.submit(OutgoingMessage(USER, "alert for you", lane=Lane.PAID_ALERT))  # must wait its hour
        await chat.press("Min holders")

        shown = await chat.ask("150")  # the second message: saved, with the screen
        assert "min_holders = 150" in shown.text
        data = next(d for label, d in chat.screen(shown.message_id).buttons if "Test my filters" in label)
        update_id = env.server.inject_callback(USER, shown.message_id, data)  # at once
        query_id = env.server.callback_query_id_of(update_id)
        await env.handled.wait(update_id)
        [result] = await env.server.wait_for_sent(
            lambda r: r.chat_id == USER and "call history" in r.body, timeout=REPLY_TIMEOUT
        )

        [answer] = [a for a in env.server.answered_callbacks if a.callback_query_id == query_id]
        calls = [c for c in env.server.calls if c.method in ("sendMessage", "answerCallbackQuery")]
        order = [
            c.method for c in calls if c.method == "answerCallbackQuery" or int(c.params.get("chat_id", 0)) == USER
        ]
        assert order[-3:] == ["sendMessage", "answerCallbackQuery", "sendMessage"]  # value, press, its result
        assert shown.monotonic < answer.monotonic <= result.monotonic
        assert "Replaying" in (answer.text or "")
        # The alert still waits for the chat's spacing; the replies did not.
        assert alerts_to(env, USER) == [] and env.sender.pending() == 1
        assert env.server.stats.rejected_429 == 0
        await env.sender.stop(drain=False)


async def test_callback_answers_and_edits_take_their_place_in_the_overall_pace(stores: Stores) -> None:
    """At two requests a second overall, a press's answer and its edit are half a second apart at
    the double like any two sends: an answer is no chat message, but Telegram counts it too."""
    async with running_bot(stores, paced=True, sender_options={"global_rate": 2}) as env:
        chat = env.chat(USER)
        await chat.ask("/start")
        await chat.press("Filters")
        await chat.press("Min holders")
        paced = [c for c in env.server.calls if c.method in ("sendMessage", "editMessageText", "answerCallbackQuery")]
        assert [c.method for c in paced] == [
            "sendMessage",
            "answerCallbackQuery",
            "editMessageText",
            "answerCallbackQuery",
            "editMessageText",
        ]
        gaps = [b.monotonic - a.monotonic for a, b in zip(paced, paced[1:])]
        assert all(gap >= 0.25 for gap in gaps), gaps  # 0.5 s apart, less any delay on the way
