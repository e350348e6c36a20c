"""Broadcasts: an admin's message to an audience, sent through the sender in its lowest lane,
resumed after a restart where it was.

Redis keeps each one: `broadcast:{id}` (a hash: the text, the audience, the admin's chat and the
message that shows the progress, the status and the counts), `broadcast:{id}:todo` (recipients
not handed out yet, a list), `broadcast:{id}:claimed` (recipient -> consumer: handed to the
sender, no outcome yet) and `broadcast:{id}:done` (recipient -> outcome). A recipient is claimed
before it goes to the sender and acknowledged with its outcome after, each step one script;
when a consumer starts, its claims without an outcome go back to the front of the list (a stop
drops what the sender still queued, unsent). So each recipient gets the message once; the one
exception is a send Telegram took just before a crash, before it was acknowledged.

Only a few recipients are in the sender at a time (`window`), so alerts, in higher lanes,
are never stuck behind a whole broadcast and a stop leaves little to hand out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import redis.exceptions

from domain.messages import Lane, OutgoingMessage
from managers.redis_manager import REDIS_ERRORS, RedisManager
from services.admin_queries import Audience
from services.loops import BackgroundLoop
from services.sender import MessageSender, Outcome

logger = logging.getLogger("alertbot.broadcast")

RUNNING_KEY = "broadcasts:running"
DRAFT_SECONDS = 24 * 3600  # a preview nobody confirmed is forgotten after this
KEEP_SECONDS = 30 * 24 * 3600  # a finished broadcast's record and outcomes
WINDOW = 20  # recipients in the sender at once
PROGRESS_SECONDS = 3.0  # at most one progress edit this often; the last one always
RETRY_SECONDS = 2.0
PUSH_CHUNK = 1000

DRAFT, RUNNING, DONE, CANCELLED = "draft", "running", "done", "cancelled"
# The sender's outcome -> the count it adds to.
_COUNTED = {"sent": "sent", "gone": "blocked", "failed": "failed"}


class BroadcastsUnavailable(RuntimeError):
    """Redis did not answer; nothing was changed."""


def record_key(broadcast_id: str) -> str:
    return f"broadcast:{broadcast_id}"


def todo_key(broadcast_id: str) -> str:
    return f"broadcast:{broadcast_id}:todo"


def claimed_key(broadcast_id: str) -> str:
    return f"broadcast:{broadcast_id}:claimed"


def done_key(broadcast_id: str) -> str:
    return f"broadcast:{broadcast_id}:done"


# KEYS: todo, claimed, done. ARGV: consumer. The next recipient without an outcome, claimed.
_CLAIM_LUA = """
while true do
  local recipient = redis.call('LPOP', KEYS[1])
  if not recipient then return false end
  if redis.call('HEXISTS', KEYS[3], recipient) == 0 then
    redis.call('HSET', KEYS[2], recipient, ARGV[1])
    return recipient
  end
end
"""

# KEYS: claimed, done, record. ARGV: recipient, count name. Counted once, whoever repeats it.
_ACK_LUA = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
return 1
"""

# KEYS: claimed, done, todo. ARGV: consumer. Its claims without an outcome, back in front (in
# the order claimed, as far as the hash keeps it).
_REQUEUE_LUA = """
local claims = redis.call('HGETALL', KEYS[1])
local moved = 0
for i = #claims - 1, 1, -2 do
  local recipient, owner = claims[i], claims[i + 1]
  if owner == ARGV[1] then
    redis.call('HDEL', KEYS[1], recipient)
    if redis.call('HEXISTS', KEYS[2], recipient) == 0 then
      redis.call('LPUSH', KEYS[3], recipient)
      moved = moved + 1
    end
  end
end
return moved
"""

# KEYS: record, todo, claimed, done. ARGV: finished epoch, keep seconds.
# Done when nothing is left to hand out or waiting for an outcome.
_FINISH_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('HLEN', KEYS[3]) > 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'done', 'finished_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Broadcast:
    id: str
    html: str
    audience: Audience
    admin_chat: int
    language: str  # the admin's, for the progress message
    status: str
    message_id: int = 0  # the admin's message that shows the progress, once confirmed
    total: int = 0
    sent: int = 0
    blocked: int = 0  # the recipient blocked the bot, or the chat is gone
    failed: int = 0  # Telegram refused the message for good

    @property
    def handled(self) -> int:
        return self.sent + self.blocked + self.failed


def _to_hash(broadcast: Broadcast) -> dict[str, str]:
    return {
        "html": broadcast.html,
        "audience": broadcast.audience.value,
        "admin_chat": str(broadcast.admin_chat),
        "language": broadcast.language,
        "status": broadcast.status,
        "message_id": str(broadcast.message_id),
        "total": str(broadcast.total),
        "sent": str(broadcast.sent),
        "blocked": str(broadcast.blocked),
        "failed": str(broadcast.failed),
    }


def _from_hash(broadcast_id: str, stored: Mapping[str, str]) -> Broadcast:
    return Broadcast(
        id=broadcast_id,
        html=stored["html"],
        audience=Audience(stored["audience"]),
        admin_chat=int(stored["admin_chat"]),
        language=stored.get("language") or "en",
        status=stored["status"],
        message_id=int(stored.get("message_id") or 0),
        total=int(stored.get("total") or 0),
        sent=int(stored.get("sent") or 0),
        blocked=int(stored.get("blocked") or 0),
        failed=int(stored.get("failed") or 0),
    )


_AUDIENCE_CHANGED = object()


# Shows a broadcast's progress; False when it could not and it is worth trying again.
@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise BroadcastsUnavailable(repr(exc)) from exc


OnProgress = Callable[[Broadcast], Awaitable[bool]]
Recipients = Callable[[Audience, datetime], Awaitable[list[int]]]


async def _no_progress(broadcast: Broadcast) -> bool:
    return True


class Broadcasts:
    """Drafts, confirms and runs broadcasts (see the module doc). `on_progress` hears each
    running broadcast now and then, and once when it is done; `recipients` names an audience."""

    def __init__(
        self,
        redis: RedisManager,
        sender: MessageSender,
        recipients: Recipients,
        *,
        on_progress: OnProgress = _no_progress,
        consumer: str = "broadcasts",
        window: int = WINDOW,
        progress_seconds: float = PROGRESS_SECONDS,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.redis = redis
        self.sender = sender
        self.recipients = recipients
        self.on_progress = on_progress
        self.consumer = consumer
        self.window = window
        self.progress_seconds = progress_seconds
        self._loops: dict[str, BackgroundLoop] = {}
        self._in_flight: dict[str, int] = {}
        self._scripts: dict[str, Any] = {}
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resume every running broadcast: this consumer's unanswered claims are handed out again."""
        self._started = True
        try:
            async with self.redis.guarded() as client:
                running = sorted(str(item) for item in await client.smembers(RUNNING_KEY))
        except REDIS_ERRORS as exc:
            logger.warning("running broadcasts not resumed now (%r); they resume at the next start", exc)
            return
        for broadcast_id in running:
            try:
                moved = await self._script(
                    "requeue",
                    _REQUEUE_LUA,
                    [claimed_key(broadcast_id), done_key(broadcast_id), todo_key(broadcast_id)],
                    [self.consumer],
                )
            except REDIS_ERRORS as exc:
                logger.warning("broadcast %s not resumed now (%r)", broadcast_id, exc)
                continue
            logger.info("resuming broadcast %s (%d recipient(s) handed out again)", broadcast_id, moved)
            self._launch(broadcast_id)

    async def stop(self) -> None:
        """Stop handing out recipients (before the sender stops); what is in the sender finishes
        there, or is handed out again at the next start."""
        self._started = False
        loops, self._loops = self._loops, {}
        for loop in loops.values():
            await loop.stop()

    # ------------------------------------------------------------------ drafts

    async def draft(self, admin_chat: int, html: str, language: str, audience: Audience = Audience.ALL) -> Broadcast:
        broadcast = Broadcast(
            id=secrets.token_urlsafe(6),
            html=html,
            audience=audience,
            admin_chat=admin_chat,
            language=language,
            status=DRAFT,
        )
        with _unavailable():
            async with self.redis.guarded() as client:
                await client.hset(record_key(broadcast.id), mapping=cast(Any, _to_hash(broadcast)))
                await client.expire(record_key(broadcast.id), DRAFT_SECONDS)
        return broadcast

    async def get(self, broadcast_id: str) -> Broadcast | None:
        with _unavailable():
            return await self._read(broadcast_id)

    async def _read(self, broadcast_id: str) -> Broadcast | None:
        async with self.redis.guarded() as client:
            stored = cast(dict[str, str], await client.hgetall(record_key(broadcast_id)))
        if "status" not in stored:
            return None
        return _from_hash(broadcast_id, stored)

    async def choose(self, broadcast_id: str, audience: Audience) -> Broadcast | None:
        """The draft with `audience`; None when it is no draft (any more)."""
        with _unavailable():
            broadcast = await self._read(broadcast_id)
            if broadcast is None or broadcast.status != DRAFT:
                return None
            async with self.redis.guarded() as client:
                await client.hset(record_key(broadcast_id), "audience", audience.value)
        return replace(broadcast, audience=audience)

    async def cancel(self, broadcast_id: str) -> Broadcast | None:
        """The draft, cancelled; None when it is no draft (any more)."""
        with _unavailable():
            cancelled = await self._leave_draft(broadcast_id, {"status": CANCELLED}, [])
        return cancelled if isinstance(cancelled, Broadcast) else None

    async def confirm(self, broadcast_id: str, message_id: int, now: datetime | None = None) -> Broadcast | None:
        """Send the draft to its audience as it is now; progress shows in the admin's message
        `message_id`. None when it is no draft (any more): a second press sends nothing."""
        with _unavailable():
            while True:
                broadcast = await self._read(broadcast_id)
                if broadcast is None or broadcast.status != DRAFT:
                    return None
                recipients = await self.recipients(broadcast.audience, now or datetime.now(UTC))
                fields = {"status": RUNNING, "message_id": str(message_id), "total": str(len(recipients))}
                confirmed = await self._leave_draft(broadcast_id, fields, recipients, audience=broadcast.audience)
                if confirmed is not _AUDIENCE_CHANGED:
                    break
        if not isinstance(confirmed, Broadcast):
            return None
        logger.warning(
            "broadcast %s confirmed by %s: %d recipient(s) (%s)",
            broadcast_id,
            broadcast.admin_chat,
            len(recipients),
            broadcast.audience,
        )
        self._launch(broadcast_id)
        return confirmed

    async def _leave_draft(
        self, broadcast_id: str, fields: dict[str, str], recipients: list[int], audience: Audience | None = None
    ) -> Broadcast | object | None:
        """Set `fields` (and queue `recipients`, running) only while the broadcast is a draft and,
        given `audience`, still for that audience (else _AUDIENCE_CHANGED: read it again)."""
        key = record_key(broadcast_id)
        async with self.redis.guarded() as client:
            async with client.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                if await pipe.hget(key, "status") != DRAFT:
                    return None
                if audience is not None and await pipe.hget(key, "audience") != audience.value:
                    return _AUDIENCE_CHANGED  # chosen again while its recipients were read
                pipe.multi()
                for start in range(0, len(recipients), PUSH_CHUNK):
                    pipe.rpush(todo_key(broadcast_id), *recipients[start : start + PUSH_CHUNK])
                pipe.hset(key, mapping=cast(Any, fields))
                if fields["status"] == RUNNING:
                    pipe.persist(key)
                    pipe.sadd(RUNNING_KEY, broadcast_id)
                try:
                    await pipe.execute()
                except redis.exceptions.WatchError:
                    return _AUDIENCE_CHANGED if audience is not None else None  # changed meanwhile: look again
        return await self._read(broadcast_id)

    # ------------------------------------------------------------------ running

    def _launch(self, broadcast_id: str) -> None:
        if not self._started or broadcast_id in self._loops:
            return
        loop = BackgroundLoop(f"broadcast-{broadcast_id}")
        self._loops[broadcast_id] = loop
        self._in_flight[broadcast_id] = 0
        loop.start(lambda: self._run(broadcast_id, loop))

    async def _run(self, broadcast_id: str, loop: BackgroundLoop) -> None:
        reported_at: float | None = None
        while not loop.stopping:
            try:
                broadcast = await self._read(broadcast_id)
                if broadcast is None or broadcast.status not in (RUNNING, DONE):
                    logger.error("broadcast %s is gone from Redis; it stops here", broadcast_id)
                    await self._forget(broadcast_id)
                    return
                if broadcast.status == RUNNING:
                    await self._hand_out(broadcast)
                    if self._in_flight[broadcast_id] == 0 and await self._finish(broadcast_id):
                        broadcast = await self._read(broadcast_id) or broadcast
                if broadcast.status == DONE:
                    if not await self._report(broadcast):
                        # The final counts must reach the admin: kept running until they do.
                        await loop.sleep(RETRY_SECONDS)
                        continue
                    logger.warning(
                        "broadcast %s done: %d sent, %d blocked, %d failed of %d",
                        broadcast_id,
                        broadcast.sent,
                        broadcast.blocked,
                        broadcast.failed,
                        broadcast.total,
                    )
                    await self._forget(broadcast_id)
                    return
                now = time.monotonic()
                if reported_at is None or now - reported_at >= self.progress_seconds:
                    await self._report(broadcast)
                    reported_at = now
                await loop.sleep(self.progress_seconds)
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                logger.warning("broadcast %s waits for Redis (%r)", broadcast_id, exc)
                await loop.sleep(RETRY_SECONDS)

    async def _hand_out(self, broadcast: Broadcast) -> None:
        """Claim recipients until `window` of them are in the sender, and give them to it."""
        keys = [todo_key(broadcast.id), claimed_key(broadcast.id), done_key(broadcast.id)]
        while self._in_flight[broadcast.id] < self.window and self.sender.running:
            recipient = await self._script("claim", _CLAIM_LUA, keys, [self.consumer])
            if recipient is None:
                return
            chat_id = int(recipient)
            self._in_flight[broadcast.id] += 1

            async def answered(outcome: Outcome, chat_id: int = chat_id) -> None:
                await self._acknowledge(broadcast.id, chat_id, outcome)

            message = OutgoingMessage(chat_id, broadcast.html, lane=Lane.BROADCAST, kind="broadcast")
            self.sender.submit(message, on_done=answered)

    async def _acknowledge(self, broadcast_id: str, chat_id: int, outcome: Outcome) -> None:
        self._in_flight[broadcast_id] = max(0, self._in_flight.get(broadcast_id, 1) - 1)
        try:
            await self._script(
                "ack",
                _ACK_LUA,
                [claimed_key(broadcast_id), done_key(broadcast_id), record_key(broadcast_id)],
                [chat_id, _COUNTED[outcome.status]],
            )
        except REDIS_ERRORS as exc:
            # Its claim stays: the next start hands it out again. Said loudly.
            logger.warning(
                "broadcast %s to %s %s but not acknowledged (%r)", broadcast_id, chat_id, outcome.status, exc
            )
        loop = self._loops.get(broadcast_id)
        if loop is not None:
            loop.wake.set()

    async def _finish(self, broadcast_id: str) -> bool:
        keys = [record_key(broadcast_id), todo_key(broadcast_id), claimed_key(broadcast_id), done_key(broadcast_id)]
        return bool(await self._script("finish", _FINISH_LUA, keys, [time.time(), KEEP_SECONDS]))

    async def _forget(self, broadcast_id: str) -> None:
        """No longer running: out of the running set (after its last report)."""
        async with self.redis.guarded() as client:
            await client.srem(RUNNING_KEY, broadcast_id)
        self._loops.pop(broadcast_id, None)
        self._in_flight.pop(broadcast_id, None)

    async def _report(self, broadcast: Broadcast) -> bool:
        try:
            return await self.on_progress(broadcast)
        except Exception:  # noqa: BLE001 - a failed progress edit must not stop the broadcast
            logger.exception("progress of broadcast %s not shown", broadcast.id)
            return True

    async def _script(self, name: str, source: str, keys: list[str], args: list[Any]) -> Any:
        async with self.redis.guarded() as client:
            script = self._scripts.get(name)
            if script is None:
                script = self._scripts[name] = client.register_script(source)
            return await script(keys=keys, args=args, client=client)
