"""What Telegram keeps, and the injection API for what users do.

Users and chats are server-wide, and so is which of them went away (blocked, deactivated,
kicked, deleted, migrated); each bot has its own update queue, messages, callback and
pre-checkout queries and commands (`_BotState`). `inject_message`, `inject_callback` and the
other inject_* helpers queue the updates Telegram would send when a user acts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from standins.telegram.html import _command_entities
from standins.telegram.records import ServerStats, _callback_datas
from standins.telegram.wire import JsonDict

# Supergroup and channel ids look like -100xxxxxxxxxx; smaller negative ids are basic groups.
_SUPERGROUP_ID_LIMIT: Final[int] = -1_000_000_000_000


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
        except TimeoutError:
            return False
        return True


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


class ServerState:
    """Users, chats, bots' update queues and the injection API: one part of `FakeTelegramServer`.

    The attributes are set in ``FakeTelegramServer.__init__``.
    """

    bot_first_name: str
    bot_username: str
    stats: ServerStats
    _states: dict[int, _BotState]
    _default_bot_id: int | None
    _unclaimed: _BotState | None
    _users: dict[int, JsonDict]
    _chats: dict[int, JsonDict]
    _gone: dict[int, str]
    _migrated: dict[int, int]
    _charges: dict[str, tuple[int, bool]]
    _subscription_charges: set[str]
    _next_update_id: int
    _changed: _Pulse

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
        self.add_chat(new_chat_id, type="supergroup", title=self._chats.get(old_chat_id, {}).get("title"))

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
        subscription_expiration_date: int | None = None,
        is_first_recurring: bool = False,
        bot_id: int | None = None,
    ) -> int:
        """The service message Telegram sends after a successful payment (refundable later).

        A payment of a Stars subscription (first or renewal) has `subscription_expiration_date`;
        Telegram marks it is_recurring, and the first one is_first_recurring as well.
        """
        state = self._injection_state(bot_id)
        user = self.add_user(user_id, language_code=None)
        payment: JsonDict = {
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": invoice_payload,
            "telegram_payment_charge_id": telegram_payment_charge_id,
            "provider_payment_charge_id": provider_payment_charge_id,
        }
        if subscription_expiration_date is not None:
            payment["subscription_expiration_date"] = subscription_expiration_date
            payment["is_recurring"] = True
            if is_first_recurring:
                payment["is_first_recurring"] = True
            self._subscription_charges.add(telegram_payment_charge_id)
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
