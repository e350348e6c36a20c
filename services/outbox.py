"""Alert sends that survive a restart: a Redis Stream read through a consumer group.

One entry per alert and chat; the reader hands entries to the sender while it holds fewer than
`window`, and acknowledges one only after Telegram answered and its `deliveries` row was written,
so a restart resumes where it stopped. While Redis is down, alerts go to the sender directly
(bounded) and back to the stream when it returns. Details: docs/architecture.md, "Outbox".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from redis.exceptions import RedisError, ResponseError

from domain.messages import Alert
from managers.postgres import PostgresManager, is_connection_failure
from managers.redis_manager import RedisManager, RedisUnavailable
from services.sender import MessageSender, Outcome

logger = logging.getLogger("alertbot.delivery")

STREAM_KEY = "outbox:alerts"
GROUP = "senders"
DEFAULT_WINDOW = 1_000  # messages the sender may hold in memory
READ_COUNT = 200
CLAIM_IDLE_SECONDS = 60.0
KEEP_SHARE = 0.25  # held entries are claimed again after this share of claim_idle
KEEP_BATCH = 500
STALL_CHECK_SECONDS = 0.25
ACK_BATCH = 200
# Delivery rows kept while PostgreSQL is down (about 100 bytes each), and how often they are retried.
MAX_UNRECORDED = 100_000
RECORD_RETRY_SECONDS = 2.0

# Reset the idle time of those of ARGV[3..] that are still pending for consumer ARGV[2], and only
# those: an entry another consumer has taken over, or one acknowledged meanwhile, stays as it is.
# Returns how many were kept, then the ids another consumer holds.
_KEEP_LUA = """
local ids, taken = {}, {0}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if entry[1] then
    if entry[1][2] == ARGV[2] then ids[#ids + 1] = ARGV[i] else taken[#taken + 1] = ARGV[i] end
  end
end
taken[1] = #ids
if #ids > 0 then
  ids[#ids + 1] = 'JUSTID'
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))
end
return taken
"""

_RECORD_SQL = """
INSERT INTO deliveries (token_address, chat_id, status, message_id, digest, reason)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::boolean[], $6::text[])
ON CONFLICT (token_address, chat_id) DO NOTHING
"""
_DELIVERED_SQL = """
SELECT token_address, chat_id FROM deliveries
WHERE (token_address, chat_id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))
"""


def encode_alert(alert: Alert) -> dict[str, str]:
    """The stream entry of `alert`. The claim script (services.dedup) writes the same fields
    itself; entries a running deployment holds must stay readable, so the names never change."""
    out = {"token": alert.token, "chat": str(alert.chat_id), "html": alert.html, "priority": str(alert.lane)}
    if alert.digest_line is not None:
        out["digest"] = alert.digest_line
    if alert.photo_url:
        out["photo"] = alert.photo_url
    if alert.received_at is not None:
        out["received_at"] = repr(alert.received_at)
    return out


def decode_alert(fields: Mapping[str, str]) -> Alert:
    """The alert of a stream entry; KeyError or ValueError when it is not one."""
    received = fields.get("received_at")
    return Alert(
        token=fields["token"],
        chat_id=int(fields["chat"]),
        html=fields["html"],
        lane=int(fields["priority"]),
        digest_line=fields.get("digest"),
        photo_url=fields.get("photo"),
        received_at=float(received) if received else None,
    )


@dataclass(frozen=True)
class _Ack:
    """A stream entry to acknowledge, with the delivery row to write first: Telegram's answer to
    its alert, or None for an entry that could not be read (there is nothing to record)."""

    entry_id: str
    answered: tuple[Alert, Outcome] | None


@dataclass
class DeliveryStats:
    published: int = 0
    direct: int = 0  # handed to the sender without the stream (Redis down)
    direct_waits: int = 0  # times publishing waited for the direct path to have room
    read: int = 0
    resumed: int = 0  # read back after a restart or from an abandoned consumer
    already_delivered: int = 0  # resumed, but PostgreSQL shows Telegram had answered
    acknowledged: int = 0
    unreadable: int = 0  # entries that were not ours to parse: acknowledged and logged
    unrecorded_dropped: int = 0  # delivery rows given up (PostgreSQL refused them, or down too long)
    kept: int = 0  # held entries claimed again so that they never look abandoned
    lost: int = 0  # held entries another consumer had taken over (this one stalled past claim_idle)
    stalls: int = 0  # times reading stopped because Telegram was unreachable

    def numbers(self) -> dict[str, float]:
        """Every counter by name, for /metrics."""
        return {name: float(value) for name, value in asdict(self).items()}


class Outbox:
    def __init__(
        self,
        redis: RedisManager,
        postgres: PostgresManager | None,
        sender: MessageSender,
        *,
        consumer: str,
        window: int = DEFAULT_WINDOW,
        claim_idle: float = CLAIM_IDLE_SECONDS,
        direct_limit: int = DEFAULT_WINDOW,
    ) -> None:
        self.redis = redis
        self.postgres = postgres
        self.sender = sender
        self.consumer = consumer
        self.window = window
        self.claim_idle = claim_idle
        self.stats = DeliveryStats()
        self._published = asyncio.Event()
        self._acks: list[_Ack] = []
        self._unrecorded: list[tuple[Alert, Outcome]] = []  # rows PostgreSQL could not take yet
        self._ack_wakeup = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._in_hand: set[str] = set()  # entry ids handed to the sender and not acknowledged
        self.direct_limit = direct_limit
        # Sent without the stream (Redis down), not answered yet: by id of the alert the sender holds.
        self._direct: dict[int, Alert] = {}
        self._direct_room = asyncio.Event()
        # The loops stop at a point between Redis commands: cancelling one inside redis-py's
        # connection pool can leave the pool's lock held (CPython 3.11) and hang every later call.
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_loop(), name="delivery-reader")
        self._acker = asyncio.create_task(self._ack_loop(), name="delivery-acker")
        self._keeper = asyncio.create_task(self._keep_loop(), name="delivery-keeper")

    async def stop_reading(self) -> None:
        """No more entries to the sender; what it holds stays pending in Redis if not sent."""
        self._stopping.set()
        self._published.set()
        await _finish(self._reader)
        self._reader = None

    async def close(self) -> None:
        """After the sender stopped: acknowledge what it answered, then stop."""
        await self.stop_reading()
        self._ack_wakeup.set()
        await _finish(self._acker)
        self._acker = None
        await _finish(self._keeper)
        self._keeper = None
        with contextlib.suppress(Exception):
            await self._flush_acks()
        if self._unrecorded:
            await self._record([])
        if self._unrecorded:
            self.stats.unrecorded_dropped += len(self._unrecorded)
            logger.error(
                "delivery queue: stopped with %d delivery record(s) PostgreSQL never took", len(self._unrecorded)
            )

    async def backlog(self) -> int:
        """Entries in the stream: not yet read, or read and not yet answered (acknowledged ones
        are deleted). 0 when every alert published so far has been answered."""
        try:
            async with self.redis.guarded() as client:
                return int(await client.xlen(STREAM_KEY)) + len(self._acks) + len(self._direct)
        except RedisUnavailable:
            return len(self._in_hand) + len(self._direct)

    # ------------------------------------------------------------------ producing

    async def publish(self, alerts: Sequence[Alert]) -> None:
        """Add alerts to the stream in one transaction; while Redis is down or refuses them, hand
        them to the sender directly.

        The direct path holds at most `direct_limit` unsent alerts; beyond that this waits for
        room, trying the stream again now and then, and never drops an alert.
        """
        if not alerts:
            return
        while True:
            try:
                async with self.redis.guarded() as client:
                    pipe = client.pipeline(transaction=True)
                    for alert in alerts:
                        pipe.xadd(STREAM_KEY, encode_alert(alert))  # type: ignore[arg-type]  # str keys are fine
                    await pipe.execute()
            except RedisError as exc:  # unreachable, or refusing the stream: the alerts go anyway
                if len(self._direct) < self.direct_limit:
                    logger.warning(
                        "Redis unavailable or refusing the stream (%s): %d alert(s) sent without the durable queue",
                        exc,
                        len(alerts),
                    )
                    self.send_direct(alerts)
                    return
                self.stats.direct_waits += 1
                self._direct_room.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._direct_room.wait(), 0.5)
                continue
            self.notify_published(len(alerts))
            return

    def notify_published(self, count: int) -> None:
        """`count` entries were added to the stream by someone else (the claim script): read them."""
        if count:
            self.stats.published += count
            self._published.set()

    @property
    def direct_pending(self) -> int:
        """Alerts sent without the stream whose send Telegram has not answered yet."""
        return len(self._direct)

    def send_direct(self, alerts: Iterable[Alert]) -> None:
        """Hand alerts to the sender without the stream (Redis is down); no waiting for room."""
        for alert in alerts:
            self._submit_direct(alert)
            self.stats.direct += 1

    def withdraw_direct(self) -> list[Alert]:
        """The direct alerts the sender has not started sending, taken back from it: Redis is
        back and they belong in the stream. The caller writes them there or sends them again."""
        if not self._direct:
            return []
        messages = self.sender.withdraw(lambda message: id(message) in self._direct)
        taken = [self._direct.pop(id(message)) for message in messages]
        if taken:
            self._direct_room.set()
        return taken

    def _submit_direct(self, alert: Alert) -> None:
        # A copy of its own per send, held here so its id stays unique while the sender has it,
        # even should one alert be handed over twice.
        sent = replace(alert)
        self._direct[id(sent)] = sent

        async def done(outcome: Outcome) -> None:
            if self._direct.pop(id(sent), None) is not None:
                self._direct_room.set()
            # No entry to acknowledge, but the send is recorded like any other.
            self._unrecorded.append((sent, outcome))
            self._ack_wakeup.set()

        self.sender.submit(sent, on_done=done)

    # ------------------------------------------------------------------ consuming

    async def _ensure_group(self, client: Any) -> None:
        try:
            await client.xgroup_create(STREAM_KEY, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read_loop(self) -> None:
        backoff = 0.5
        resumed = False
        last_claim = 0.0
        while not self._stopping.is_set():
            try:
                if self.sender.stalled():
                    await self._wait_unstalled()
                    continue
                async with self.redis.guarded() as client:
                    await self._ensure_group(client)
                    if not resumed:
                        await self._resume_own(client)
                        resumed = True
                    if time.monotonic() - last_claim > self.claim_idle / 2:
                        await self._claim_abandoned(client)
                        last_claim = time.monotonic()
                    await self._read_new(client)
                backoff = 0.5
            except RedisUnavailable as exc:
                logger.warning("delivery queue: Redis unavailable (%s); retrying in %.1fs", exc, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:  # noqa: BLE001 - the reader must outlive any one bad read
                logger.exception("delivery queue: read failed")
                await self._pause(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_unstalled(self) -> None:
        """Telegram is unreachable: new entries stay in the stream until a held one goes through."""
        self.stats.stalls += 1
        logger.info("delivery queue: Telegram unreachable; reading paused, new alerts wait in the stream")
        while self.sender.stalled() and not self._stopping.is_set():
            await self._pause(STALL_CHECK_SECONDS)
        if not self._stopping.is_set():
            logger.info("delivery queue: reading again")

    async def _read_new(self, client: Any) -> None:
        """Hand new entries to the sender while it has room; return after an idle spell."""
        while not self._stopping.is_set() and not self.sender.stalled():
            room = self.window - self.sender.pending()
            if room <= 0:
                await self._pause(0.02)
                continue
            self._published.clear()
            reply = await client.xreadgroup(GROUP, self.consumer, {STREAM_KEY: ">"}, count=min(room, READ_COUNT))
            entries = reply[0][1] if reply else []
            if entries:
                self.stats.read += len(entries)
                for entry_id, fields in entries:
                    self._hand_over(entry_id, fields)
                continue
            # Nothing new: wait for this process to publish, or look again soon for other processes.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._published.wait(), timeout=0.5)
            if not self._published.is_set() or self._stopping.is_set():
                return

    async def _resume_own(self, client: Any) -> None:
        """This consumer's entries read before a restart and never acknowledged."""
        last = "0"
        while not self._stopping.is_set():
            reply = await client.xreadgroup(GROUP, self.consumer, {STREAM_KEY: last}, count=READ_COUNT)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            await self._hand_over_checked(entries)
            last = entries[-1][0]

    async def _claim_abandoned(self, client: Any) -> None:
        """Entries another consumer took and left idle: live consumers keep theirs fresh (see
        `_keep_loop`), so it is gone and this one sends them."""
        start = "0-0"
        while not self._stopping.is_set():
            reply = await client.xautoclaim(
                STREAM_KEY, GROUP, self.consumer, int(self.claim_idle * 1000), start_id=start, count=READ_COUNT
            )
            start, entries = reply[0], [e for e in reply[1] if e and e[1] is not None]
            fresh = [e for e in entries if e[0] not in self._in_hand]
            if fresh:
                await self._hand_over_checked(fresh)
            if start in ("0-0", b"0-0"):
                return

    async def _hand_over_checked(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Resumed entries: skip (and acknowledge) those PostgreSQL shows were answered."""
        self.stats.resumed += len(entries)
        parsed: list[tuple[str, Alert | None]] = [
            (entry_id, self._parse(entry_id, fields)) for entry_id, fields in entries if entry_id not in self._in_hand
        ]
        delivered = await self._delivered([alert for _, alert in parsed if alert is not None])
        for entry_id, alert in parsed:
            if alert is None:
                continue
            if (alert.token, alert.chat_id) in delivered:
                self.stats.already_delivered += 1
                self._acks.append(_Ack(entry_id, (alert, Outcome(alert.chat_id, "sent", reason="delivered before"))))
                self._ack_wakeup.set()
            else:
                self._submit(entry_id, alert)

    def _hand_over(self, entry_id: str, fields: dict[str, str]) -> None:
        alert = self._parse(entry_id, fields)
        if alert is not None:
            self._submit(entry_id, alert)

    def _parse(self, entry_id: str, fields: dict[str, str]) -> Alert | None:
        try:
            return decode_alert(fields)
        except (KeyError, ValueError) as exc:
            # Not something this code wrote: keeping it would block nothing but be re-read forever.
            self.stats.unreadable += 1
            logger.error("delivery queue: unreadable entry %s (%s); acknowledged and dropped", entry_id, exc)
            self._acks.append(_Ack(entry_id, None))
            self._ack_wakeup.set()
            return None

    async def _delivered(self, alerts: list[Alert]) -> set[tuple[str, int]]:
        if not alerts or self.postgres is None:
            return set()
        try:
            rows = await self.postgres.fetch(_DELIVERED_SQL, [a.token for a in alerts], [a.chat_id for a in alerts])
        except Exception as exc:  # noqa: BLE001 - without the records, sending again is the lesser harm
            logger.warning("delivery queue: could not read delivery records (%s); resending", exc)
            return set()
        return {(row["token_address"], row["chat_id"]) for row in rows}

    def _submit(self, entry_id: str, alert: Alert) -> None:
        self._in_hand.add(entry_id)

        async def done(outcome: Outcome) -> None:
            self._acks.append(_Ack(entry_id, (alert, outcome)))
            self._ack_wakeup.set()

        self.sender.submit(alert, on_done=done)

    async def _keep_loop(self) -> None:
        """Claim the held entries again, well within claim_idle, so no other consumer takes them."""
        interval = self.claim_idle * KEEP_SHARE
        while not self._stopping.is_set():
            await self._pause(interval)
            held = list(self._in_hand)
            if not held or self._stopping.is_set():
                continue
            try:
                async with self.redis.guarded() as client:
                    for start in range(0, len(held), KEEP_BATCH):
                        batch = held[start : start + KEEP_BATCH]
                        kept, *taken = await client.eval(_KEEP_LUA, 1, STREAM_KEY, GROUP, self.consumer, *batch)
                        self.stats.kept += int(kept)
                        if taken:
                            # This process stalled past claim_idle: another one may send them too.
                            self.stats.lost += len(taken)
                            logger.warning(
                                "delivery queue: %d held entries were taken over by another consumer", len(taken)
                            )
            except RedisUnavailable as exc:
                logger.warning("delivery queue: could not keep held entries (%s)", exc)
            except Exception:  # noqa: BLE001 - the keeper must outlive any one bad round
                logger.exception("delivery queue: keeping held entries failed")

    # ------------------------------------------------------------------ acknowledging

    async def _ack_loop(self) -> None:
        while not self._stopping.is_set() or self._acks:
            # Rows waiting for PostgreSQL are tried again now and then, even with no new answers.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ack_wakeup.wait(), RECORD_RETRY_SECONDS if self._unrecorded else None)
            self._ack_wakeup.clear()
            if not self._acks and self._unrecorded:
                await self._record([])
            try:
                await self._flush_acks()
            except RedisUnavailable as exc:
                logger.warning("delivery queue: could not acknowledge (%s); will retry", exc)
                if self._stopping.is_set():
                    return  # unacknowledged entries are resent or skipped (delivery rows) next start
                await self._pause(1.0)
                self._ack_wakeup.set()

    async def _flush_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks[:ACK_BATCH], self._acks[ACK_BATCH:]
            try:
                await self._record([ack.answered for ack in batch if ack.answered is not None])
                async with self.redis.guarded() as client:
                    ids = [ack.entry_id for ack in batch]
                    pipe = client.pipeline(transaction=False)
                    pipe.xack(STREAM_KEY, GROUP, *ids)
                    pipe.xdel(STREAM_KEY, *ids)
                    await pipe.execute()
            except BaseException:
                self._acks[:0] = batch
                raise
            for ack in batch:
                self._in_hand.discard(ack.entry_id)
            self.stats.acknowledged += len(batch)

    async def _record(self, answered: list[tuple[Alert, Outcome]]) -> None:
        """Write the delivery rows, with any an earlier PostgreSQL outage left unwritten.

        The entries are acknowledged either way: Telegram has answered, so sending again would
        be the harm. Rows PostgreSQL could not take for a connection-level reason wait here (at
        most MAX_UNRECORDED, the oldest dropped and counted) and go with the next write.
        """
        rows = self._unrecorded + answered
        if not rows or self.postgres is None:
            return
        try:
            await self.postgres.execute(
                _RECORD_SQL,
                [a.token for a, _ in rows],
                [a.chat_id for a, _ in rows],
                [o.status for _, o in rows],
                [o.message_id for _, o in rows],
                [o.digest for _, o in rows],
                [o.reason or None for _, o in rows],
            )
        except Exception as exc:  # noqa: BLE001 - the send happened; only its record is late
            if not is_connection_failure(exc):
                self._unrecorded = []
                self.stats.unrecorded_dropped += len(rows)
                logger.error("delivery queue: PostgreSQL refused %d delivery record(s): %s", len(rows), exc)
                return
            overflow = max(0, len(rows) - MAX_UNRECORDED)
            if overflow:
                self.stats.unrecorded_dropped += overflow
                logger.error("delivery queue: %d delivery record(s) dropped while PostgreSQL is down", overflow)
            if not self._unrecorded:
                logger.warning("delivery queue: PostgreSQL unavailable (%s); delivery records wait", type(exc).__name__)
            self._unrecorded = rows[overflow:]
            return
        if self._unrecorded:
            logger.info("delivery queue: %d delayed delivery record(s) written", len(self._unrecorded))
        self._unrecorded = []


async def _finish(task: asyncio.Task[None] | None, timeout: float = 10.0) -> None:
    """Wait for a loop told to stop; cancel it only if it does not within `timeout`."""
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
