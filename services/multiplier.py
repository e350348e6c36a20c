"""Multiplier follow-ups: every alerted token's price against each subscriber's alert, told once per threshold.

Entries (who was alerted, at what market cap, in which message) come from what PostgreSQL says
was delivered; prices come from the pipeline (`on_price`, which never awaits). A follow-up is
claimed in Redis before it is handed on, so no second process, restart or retry repeats it;
multiplier entries and the tracked tokens' figures go to PostgreSQL in batches. Details:
docs/architecture.md, "Follow-ups".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from redis.exceptions import RedisError

from domain.events import PriceEvent
from domain.matching import SubscriberIndex
from domain.multipliers import (
    End,
    FollowUp,
    TrackingRules,
    below_since,
    level,
    levels,
    threshold_at,
    tracking_end,
    trigger,
    wanted,
)
from managers.postgres import PostgresManager, is_connection_failure
from managers.redis_manager import RedisManager

logger = logging.getLogger("alertbot.followups")

KEY_PREFIX = "followup:"  # + token address: hash chat id -> highest threshold announced
TICK_SECONDS = 1.0  # upkeep: sync, flush, and the sweep when due
SWEEP_SECONDS = 60.0
# The tracked tokens' figures change with every price: their rows are written this often.
TOKEN_ROWS_SECONDS = 15.0
CLAIM_BATCH = 500
# A follow-up Redis could not claim for this long is given up: a late "2x" misleads more than none.
CLAIM_MAX_AGE_SECONDS = 600.0
# Deliveries are read again this far back: a row stamped just before the last read may commit after it.
SYNC_MARGIN = timedelta(seconds=5)
LOAD_PAGE = 50_000
PENDING_MAX_AGE = timedelta(days=1)  # a delivery whose alert row never came is forgotten after this
MAX_ROWS = 200_000  # rows waiting for PostgreSQL; beyond it the oldest are dropped (counted)
RETRY_MAX_SECONDS = 30.0

# One script per batch: for each (token, chat, threshold) the threshold is written unless one as
# high is already there. Replies 0 for a claim won, else the threshold announced before.
_CLAIM_LUA = """
local ttl = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local want = tonumber(ARGV[2 * i + 1])
  local have = tonumber(redis.call('HGET', KEYS[i], ARGV[2 * i]) or '0')
  if have < want then
    redis.call('HSET', KEYS[i], ARGV[2 * i], want)
    redis.call('EXPIRE', KEYS[i], ttl)
    out[i] = 0
  else
    out[i] = have
  end
end
return out
"""

_COLUMNS = """
SELECT a.token_address, u.telegram_id, a.market_cap_usd::float8 AS base, a.price_usd::float8 AS base_price,
       a.created_at, d.message_id, t.symbol,
       (SELECT max(m.multiplier)::float8 FROM multiplier_entries m WHERE m.alert_id = a.id) AS announced
"""
_NOT_ENDED = """
NOT EXISTS (SELECT 1 FROM tracked_tokens e WHERE e.token_address = a.token_address AND e.ended_at IS NOT NULL)
"""
# Start-up: every delivered alert still inside the window, a page at a time (by alert id).
_LOAD_SQL = f"""
{_COLUMNS}, a.id
FROM alerts a
JOIN users u ON u.id = a.user_id
JOIN deliveries d ON d.token_address = a.token_address AND d.chat_id = u.telegram_id AND d.status = 'sent'
LEFT JOIN tokens t ON t.address = a.token_address
WHERE a.id > $1 AND a.created_at > $2 AND {_NOT_ENDED}
ORDER BY a.id LIMIT $3
"""
# Afterwards: the deliveries recorded since the last read, with their alerts where written yet.
_NEW_SQL = f"""
{_COLUMNS}, d.token_address AS delivered_token, d.chat_id, d.message_id AS delivered_message, d.delivered_at
FROM deliveries d
LEFT JOIN users u ON u.telegram_id = d.chat_id
LEFT JOIN alerts a ON a.user_id = u.id AND a.token_address = d.token_address
LEFT JOIN tokens t ON t.address = d.token_address
WHERE d.delivered_at >= $1 AND d.status = 'sent'
  AND NOT EXISTS (SELECT 1 FROM tracked_tokens e WHERE e.token_address = d.token_address AND e.ended_at IS NOT NULL)
"""
# Deliveries read before their alert row was written, looked up again.
_PENDING_SQL = f"""
{_COLUMNS}
FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS d(token_address, chat_id, message_id)
JOIN users u ON u.telegram_id = d.chat_id
JOIN alerts a ON a.user_id = u.id AND a.token_address = d.token_address
LEFT JOIN tokens t ON t.address = a.token_address
"""
_TRACKED_SQL = """
SELECT token_address, first_alert_at, peak_market_cap_usd::float8 AS peak, peak_price_usd::float8 AS peak_price,
       peak_at, last_market_cap_usd::float8 AS last_market_cap, last_price_usd::float8 AS last_price, last_price_at
FROM tracked_tokens WHERE ended_at IS NULL AND ($1::text[] IS NULL OR token_address = ANY($1::text[]))
"""
# Several processes write these rows: the peak only rises, the last price only moves forward,
# an end once written stays.
_UPSERT_TRACKED = """
INSERT INTO tracked_tokens AS t (token_address, first_alert_at, peak_market_cap_usd, peak_price_usd, peak_at,
                                 last_market_cap_usd, last_price_usd, last_price_at, ended_at, end_reason)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::float8[], $4::float8[], $5::timestamptz[],
                     $6::float8[], $7::float8[], $8::timestamptz[], $9::timestamptz[], $10::text[])
ON CONFLICT (token_address) DO UPDATE SET
    first_alert_at = LEAST(t.first_alert_at, EXCLUDED.first_alert_at),
    peak_market_cap_usd = GREATEST(t.peak_market_cap_usd, EXCLUDED.peak_market_cap_usd),
    peak_price_usd = CASE WHEN EXCLUDED.peak_market_cap_usd > COALESCE(t.peak_market_cap_usd, 0)
                          THEN EXCLUDED.peak_price_usd ELSE t.peak_price_usd END,
    peak_at = CASE WHEN EXCLUDED.peak_market_cap_usd > COALESCE(t.peak_market_cap_usd, 0)
                   THEN EXCLUDED.peak_at ELSE t.peak_at END,
    last_market_cap_usd = CASE WHEN EXCLUDED.last_price_at >= COALESCE(t.last_price_at, '-infinity')
                               THEN EXCLUDED.last_market_cap_usd ELSE t.last_market_cap_usd END,
    last_price_usd = CASE WHEN EXCLUDED.last_price_at >= COALESCE(t.last_price_at, '-infinity')
                          THEN EXCLUDED.last_price_usd ELSE t.last_price_usd END,
    last_price_at = GREATEST(t.last_price_at, EXCLUDED.last_price_at),
    ended_at = COALESCE(t.ended_at, EXCLUDED.ended_at),
    end_reason = COALESCE(t.end_reason, EXCLUDED.end_reason)
"""
_INSERT_ENTRIES = """
INSERT INTO multiplier_entries (alert_id, user_id, token_address, multiplier, base_price_usd, price_usd,
                                market_cap_usd, reached_at)
SELECT a.id, a.user_id, a.token_address, x.multiplier, a.price_usd, x.price, x.market_cap, x.reached_at
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::float8[], $5::float8[], $6::timestamptz[])
     AS x(chat_id, token_address, multiplier, price, market_cap, reached_at)
JOIN users u ON u.telegram_id = x.chat_id
JOIN alerts a ON a.user_id = u.id AND a.token_address = x.token_address
ON CONFLICT (alert_id, multiplier) DO NOTHING
"""
_NOTIFIED = """
UPDATE multiplier_entries m SET notified_at = x.at
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::timestamptz[]) AS x(chat_id, token_address, multiplier, at)
JOIN users u ON u.telegram_id = x.chat_id
WHERE m.user_id = u.id AND m.token_address = x.token_address AND m.multiplier = x.multiplier
"""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
LevelArray = npt.NDArray[np.int8]


def utc_now() -> datetime:
    return datetime.now(UTC)


class TokenTrack:
    """One followed token: its entries as parallel arrays, one element per subscriber alerted
    (chat, alert message, base market cap, level announced or skipped, alert time in epoch
    seconds), and the token's own figures."""

    __slots__ = (
        "address",
        "symbol",
        "chats",
        "messages",
        "bases",
        "floors",
        "alerted",
        "trigger",
        "started_at",
        "last_alert_at",
        "peak",
        "peak_price",
        "peak_at",
        "last_market_cap",
        "last_price",
        "last_at",
        "low_since",
        "supply",
        "ended_at",
        "end_reason",
    )

    def __init__(self, address: str, symbol: str | None, started_at: datetime) -> None:
        self.address = address
        self.symbol = symbol
        self.chats: IntArray = np.empty(0, np.int64)
        self.messages: IntArray = np.empty(0, np.int64)  # 0: not known
        self.bases: FloatArray = np.empty(0, np.float64)
        self.floors: LevelArray = np.empty(0, np.int8)
        self.alerted: FloatArray = np.empty(0, np.float64)
        self.trigger = math.inf
        self.started_at = started_at
        self.last_alert_at = started_at
        self.peak = 0.0  # market cap: the highest since the first alert, alerts' own included
        self.peak_price: float | None = None
        self.peak_at: datetime | None = None
        self.last_market_cap: float | None = None
        self.last_price: float | None = None
        self.last_at: datetime | None = None
        self.low_since: datetime | None = None
        self.supply: float | None = None  # market cap per unit of price, for prices without one
        self.ended_at: datetime | None = None
        self.end_reason: End | None = None

    def __len__(self) -> int:
        return len(self.chats)

    def add(
        self, chats: IntArray, messages: IntArray, bases: FloatArray, floors: LevelArray, alerted: FloatArray
    ) -> None:
        self.chats = np.concatenate((self.chats, chats))
        self.messages = np.concatenate((self.messages, messages))
        self.bases = np.concatenate((self.bases, bases))
        self.floors = np.concatenate((self.floors, floors))
        self.alerted = np.concatenate((self.alerted, alerted))
        newest = datetime.fromtimestamp(float(alerted.max()), UTC)
        self.last_alert_at = max(self.last_alert_at, newest)
        highest = int(np.argmax(bases))
        if bases[highest] > self.peak:
            self.peak = float(bases[highest])
            self.peak_at = datetime.fromtimestamp(float(alerted[highest]), UTC)
            self.peak_price = self.peak / self.supply if self.supply else None
        self.trigger = trigger(self.bases, self.floors)

    def has(self, chat_id: int) -> bool:
        return bool((self.chats == chat_id).any())

    def position(self, chat_id: int) -> int | None:
        found = np.flatnonzero(self.chats == chat_id)
        return int(found[0]) if len(found) else None

    def drop_before(self, cutoff: float) -> int:
        """Forget the entries alerted before `cutoff` (epoch seconds); returns how many."""
        keep = self.alerted >= cutoff
        dropped = len(keep) - int(keep.sum())
        if dropped:
            self.chats, self.messages = self.chats[keep], self.messages[keep]
            self.bases, self.floors, self.alerted = self.bases[keep], self.floors[keep], self.alerted[keep]
            self.trigger = trigger(self.bases, self.floors)
        return dropped

    def row(self) -> tuple[Any, ...]:
        """Its tracked_tokens row."""
        return (
            self.address,
            self.started_at,
            self.peak,
            self.peak_price,
            self.peak_at,
            self.last_market_cap,
            self.last_price,
            self.last_at,
            self.ended_at,
            self.end_reason.value if self.end_reason else None,
        )


@dataclass
class FollowupStats:
    prices: int = 0  # price events seen
    tracked_prices: int = 0  # ... of followed tokens
    checks: int = 0  # prices at or past a token's trigger: its arrays were compared
    skipped: int = 0  # thresholds reached that the subscriber does not want (or no longer receives)
    claims: int = 0
    won: int = 0
    lost: int = 0  # another process (or an earlier run) had announced it
    claims_dropped: int = 0  # given up after CLAIM_MAX_AGE_SECONDS without Redis
    notified: int = 0  # follow-ups Telegram took
    synced: int = 0  # entries added from PostgreSQL
    ended_window: int = 0
    ended_dead: int = 0
    ended_silent: int = 0
    rows_written: int = 0
    rows_dropped: int = 0
    write_failures: int = 0

    def numbers(self) -> dict[str, float]:
        return {name: float(value) for name, value in asdict(self).items()}


@dataclass(slots=True)
class _Claim:
    track: TokenTrack
    chat_id: int
    multiple: int
    market_cap: float
    price: float | None
    base: float
    reply_to: int | None
    at: datetime
    queued: float  # monotonic time, for CLAIM_MAX_AGE_SECONDS


@dataclass(frozen=True, slots=True)
class _Pending:
    message_id: int | None
    delivered_at: datetime


Notify = Callable[[FollowUp], None]


class MultiplierTracker:
    """The followed tokens in memory, Redis as the shared record of what was announced, and
    PostgreSQL as the record of entries and figures. `notify` gets each follow-up won."""

    def __init__(
        self,
        redis: RedisManager,
        postgres: PostgresManager | None,
        index: SubscriberIndex,
        notify: Notify | None = None,
        *,
        rules: TrackingRules | None = None,
        clock: Callable[[], datetime] = utc_now,
        tick: float = TICK_SECONDS,
        sweep_every: float = SWEEP_SECONDS,
    ) -> None:
        self.redis = redis
        self.postgres = postgres
        self.index = index
        self.notify = notify
        self.rules = rules or TrackingRules()
        self.clock = clock
        self.tick = tick
        self.sweep_every = sweep_every
        self.stats = FollowupStats()
        # Awaited after each upkeep pass (the PumpPortal trade subscriptions follow the tokens).
        self.after_upkeep: list[Callable[[], Awaitable[None]]] = []
        self._tokens: dict[str, TokenTrack] = {}
        self._entries = 0
        self._ended: dict[str, datetime] = {}  # kept a window long, so a late row cannot revive them
        self._dirty: dict[str, TokenTrack] = {}
        self._claims: list[_Claim] = []
        self._entry_rows: list[tuple[Any, ...]] = []
        self._notified_rows: list[tuple[Any, ...]] = []
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._loaded = False
        self._since: datetime | None = None
        self._next_sweep = time.monotonic() + sweep_every
        self._claim_wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._claiming = asyncio.Lock()
        self._syncing = asyncio.Lock()

    # ------------------------------------------------------------------ what is followed

    @property
    def entries(self) -> int:
        return self._entries

    def __len__(self) -> int:
        return len(self._tokens)

    def addresses(self) -> list[str]:
        return list(self._tokens)

    def get(self, address: str) -> TokenTrack | None:
        return self._tokens.get(address)

    def stale(self, older_than: timedelta, now: datetime | None = None) -> list[str]:
        """Tokens with no price for `older_than` (or none since following began)."""
        cutoff = (now or self.clock()) - older_than
        return [a for a, t in self._tokens.items() if (t.last_at or t.started_at) <= cutoff]

    def add_entries(
        self,
        address: str,
        chats: Sequence[int] | IntArray,
        bases: Sequence[float] | FloatArray,
        *,
        messages: Sequence[int] | IntArray | None = None,
        announced: Sequence[float] | FloatArray | None = None,
        alerted_at: Sequence[datetime] | datetime | None = None,
        symbol: str | None = None,
        base_price: float | None = None,
    ) -> int:
        """Follow `address` for these subscribers from their alerts' market caps (`bases`); the
        alerts' message ids, what was announced to each already and when each was alerted are
        optional. Entries without a positive base, and chats already followed, are left out.
        Returns how many were added."""
        if address in self._ended:
            return 0
        now = self.clock()
        chat_array = np.asarray(chats, dtype=np.int64)
        base_array = np.asarray(bases, dtype=np.float64)
        count = len(chat_array)
        message_array = np.zeros(count, np.int64) if messages is None else np.asarray(messages, dtype=np.int64)
        floors = (
            np.zeros(count, np.int8)
            if announced is None
            else np.array([level(float(a)) for a in announced], dtype=np.int8)
        )
        if alerted_at is None or isinstance(alerted_at, datetime):
            moment = (alerted_at or now).timestamp()
            alerted = np.full(count, moment, np.float64)
        else:
            alerted = np.array([a.timestamp() for a in alerted_at], dtype=np.float64)
        track = self._tokens.get(address)
        keep = np.isfinite(base_array) & (base_array > 0)
        if track is not None and len(track):
            keep &= ~np.isin(chat_array, track.chats)
        if not keep.all():
            chat_array, base_array, message_array = chat_array[keep], base_array[keep], message_array[keep]
            floors, alerted = floors[keep], alerted[keep]
        if len(chat_array) == 0:
            return 0
        if track is None:
            started = datetime.fromtimestamp(float(alerted.min()), UTC)
            track = self._tokens[address] = TokenTrack(address, symbol, started)
            self._dirty[address] = track
        if symbol and not track.symbol:
            track.symbol = symbol
        if base_price and base_price > 0 and track.supply is None:
            track.supply = float(base_array[0]) / base_price
        track.add(chat_array, message_array, base_array, floors, alerted)
        self._entries += len(chat_array)
        return len(chat_array)

    # ------------------------------------------------------------------ the hot path

    def on_price(self, event: PriceEvent) -> None:
        """A price of any token; never awaits. Claims follow-ups it makes due in the background."""
        self.stats.prices += 1
        track = self._tokens.get(event.address)
        if track is None:
            return
        self.stats.tracked_prices += 1
        price = event.price_usd
        market_cap = event.market_cap_usd
        if market_cap is None:
            if track.supply is None:
                return
            market_cap = price * track.supply
        elif price > 0 and track.supply is None:
            track.supply = market_cap / price
        if not (market_cap > 0 and market_cap != math.inf):
            return
        now = self.clock()
        track.last_market_cap, track.last_price, track.last_at = market_cap, price, now
        if market_cap > track.peak:
            track.peak, track.peak_price, track.peak_at = market_cap, price, now
        track.low_since = below_since(track.low_since, market_cap, track.peak, now, self.rules.dead_share)
        self._dirty[track.address] = track
        if market_cap >= track.trigger:
            self._check(track, market_cap, price, now)

    def _check(self, track: TokenTrack, market_cap: float, price: float, now: datetime) -> None:
        """Some entry may have reached a threshold: find which, on the arrays."""
        self.stats.checks += 1
        reached = levels(market_cap, track.bases)
        rising = np.flatnonzero(reached > track.floors)
        queued = time.monotonic()
        for i in rising.tolist():
            new_level = int(reached[i])
            # Considered once: announced, or skipped for good (a lowered followup_min later
            # applies to the thresholds still ahead).
            track.floors[i] = new_level
            chat_id = int(track.chats[i])
            multiple = threshold_at(new_level)
            subscriber = self.index.get(chat_id)
            if (
                subscriber is None
                or not subscriber.receives_alerts(now)
                or not wanted(multiple, subscriber.followup_min)
            ):
                self.stats.skipped += 1
                continue
            message = int(track.messages[i])
            self._claims.append(
                _Claim(track, chat_id, multiple, market_cap, price, float(track.bases[i]), message or None, now, queued)
            )
        track.trigger = trigger(track.bases, track.floors)
        if self._claims:
            self._claim_wakeup.set()

    # ------------------------------------------------------------------ claims

    @property
    def claims_waiting(self) -> int:
        return len(self._claims)

    async def claim_pending(self) -> int:
        """Claim the follow-ups waiting, in Redis, and hand on those won; returns how many were
        won. Raises RedisError when Redis cannot answer (the claims stay for the next try)."""
        won = 0
        async with self._claiming:
            while self._claims:
                batch = self._claims[:CLAIM_BATCH]
                keys = [KEY_PREFIX + claim.track.address for claim in batch]
                args: list[Any] = [int((self.rules.window + timedelta(days=1)).total_seconds())]
                for claim in batch:
                    args += [claim.chat_id, claim.multiple]
                async with self.redis.guarded() as client:
                    replies = await client.eval(_CLAIM_LUA, len(keys), *keys, *args)
                del self._claims[: len(batch)]
                self.stats.claims += len(batch)
                for claim, had in zip(batch, replies):
                    if int(had) == 0:
                        won += 1
                        self._won(claim)
                    else:
                        self.stats.lost += 1
                        self._raise_floor(claim.track, claim.chat_id, level(float(had)))
        return won

    def _won(self, claim: _Claim) -> None:
        self.stats.won += 1
        track = claim.track
        self._keep_rows(
            self._entry_rows,
            (claim.chat_id, track.address, claim.multiple, claim.price, claim.market_cap, claim.at),
        )
        followup = FollowUp(
            chat_id=claim.chat_id,
            token=track.address,
            symbol=track.symbol,
            multiple=claim.multiple,
            base_market_cap=claim.base,
            market_cap=claim.market_cap,
            price_usd=claim.price,
            peak_market_cap=track.peak,
            reply_to=claim.reply_to,
            reached_at=claim.at,
        )
        if self.notify is None:
            return
        try:
            self.notify(followup)
        except Exception:  # noqa: BLE001 - one follow-up must not cost the others theirs
            logger.exception(
                "could not hand on the %dx follow-up of %s to %s", claim.multiple, track.address, claim.chat_id
            )

    def _raise_floor(self, track: TokenTrack, chat_id: int, to: int) -> None:
        position = track.position(chat_id)
        if position is not None and track.floors[position] < to:
            track.floors[position] = to
            track.trigger = trigger(track.bases, track.floors)

    def _drop_stale_claims(self) -> None:
        cutoff = time.monotonic() - CLAIM_MAX_AGE_SECONDS
        kept = [claim for claim in self._claims if claim.queued >= cutoff]
        dropped = len(self._claims) - len(kept)
        if dropped:
            self._claims[:] = kept
            self.stats.claims_dropped += dropped
            logger.error(
                "%d follow-up(s) given up: Redis could not claim them for %.0fs", dropped, CLAIM_MAX_AGE_SECONDS
            )

    def sent(self, followup: FollowUp, delivered: bool) -> None:
        """What became of a follow-up's message: when Telegram took it, its entry says so."""
        if delivered:
            self.stats.notified += 1
            self._keep_rows(self._notified_rows, (followup.chat_id, followup.token, followup.multiple, self.clock()))

    # ------------------------------------------------------------------ entries from PostgreSQL

    async def sync(self) -> int:
        """Follow the alerts delivered since the last sync (on the first, every delivered alert
        inside the window); returns how many entries were added."""
        if self.postgres is None:
            return 0
        async with self._syncing:
            if not self._loaded:
                added = await self._load()
                self._loaded = True
            else:
                added = await self._load_new()
        self.stats.synced += added
        return added

    async def _load(self) -> int:
        assert self.postgres is not None
        db_now: datetime = await self.postgres.fetchval("SELECT now()")
        cutoff = self.clock() - self.rules.window
        for row in await self.postgres.fetch(_TRACKED_SQL, None):
            self._restore(row)
        added, last_id = 0, 0
        while True:
            rows = await self.postgres.fetch(_LOAD_SQL, last_id, cutoff, LOAD_PAGE)
            if not rows:
                break
            added += self._add_rows(rows)
            last_id = rows[-1]["id"]
        self._since = db_now - SYNC_MARGIN
        return added

    async def _load_new(self) -> int:
        assert self.postgres is not None and self._since is not None
        rows = await self.postgres.fetch(_NEW_SQL, self._since)
        ready = []
        latest = self._since + SYNC_MARGIN
        for row in rows:
            latest = max(latest, row["delivered_at"])
            if row["created_at"] is None:  # the alert row is not written yet
                key = (row["delivered_token"], row["chat_id"])
                self._pending.setdefault(key, _Pending(row["delivered_message"], row["delivered_at"]))
            else:
                ready.append(row)
        if self._pending:
            ready += await self._resolve_pending()
        fresh = sorted({row["token_address"] for row in ready if row["token_address"] not in self._tokens})
        if fresh:
            for row in await self.postgres.fetch(_TRACKED_SQL, fresh):
                self._restore(row)
        self._since = latest - SYNC_MARGIN
        cutoff = self.clock() - self.rules.window
        return self._add_rows([row for row in ready if row["created_at"] > cutoff])

    async def _resolve_pending(self) -> list[Any]:
        assert self.postgres is not None
        keys = list(self._pending)
        rows = await self.postgres.fetch(
            _PENDING_SQL,
            [token for token, _ in keys],
            [chat for _, chat in keys],
            [self._pending[key].message_id for key in keys],
        )
        for row in rows:
            self._pending.pop((row["token_address"], row["telegram_id"]), None)
        forget = self.clock() - PENDING_MAX_AGE
        for key in [k for k, p in self._pending.items() if p.delivered_at < forget]:
            del self._pending[key]
        return list(rows)

    def _restore(self, row: Any) -> None:
        """A token another process (or an earlier run) followed: its figures so far."""
        address = row["token_address"]
        if address in self._tokens or address in self._ended:
            return
        track = TokenTrack(address, None, row["first_alert_at"])
        track.peak = row["peak"] or 0.0
        track.peak_price, track.peak_at = row["peak_price"], row["peak_at"]
        track.last_market_cap, track.last_price, track.last_at = (
            row["last_market_cap"],
            row["last_price"],
            row["last_price_at"],
        )
        self._tokens[address] = track

    def _add_rows(self, rows: Iterable[Any]) -> int:
        grouped: dict[str, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row["token_address"], []).append(row)
        added = 0
        for address, group in grouped.items():
            priced = next((r for r in group if r["base_price"]), None)
            added += self.add_entries(
                address,
                [r["telegram_id"] for r in group],
                [r["base"] or 0.0 for r in group],
                messages=[r["message_id"] or 0 for r in group],
                announced=[r["announced"] or 0.0 for r in group],
                alerted_at=[r["created_at"] for r in group],
                symbol=group[0]["symbol"],
                base_price=priced["base_price"] if priced else None,
            )
        return added

    # ------------------------------------------------------------------ the end of following

    def sweep(self, now: datetime | None = None) -> dict[str, End]:
        """Forget entries past the window and stop following tokens that ended; returns them."""
        now = now or self.clock()
        cutoff = (now - self.rules.window).timestamp()
        ended: dict[str, End] = {}
        for address, track in list(self._tokens.items()):
            if len(track) and track.alerted.min() < cutoff:
                self._entries -= track.drop_before(cutoff)
            reason = (
                End.WINDOW
                if len(track) == 0
                else tracking_end(
                    now,
                    last_alert_at=track.last_alert_at,
                    last_price_at=track.last_at,
                    started_at=track.started_at,
                    low_since=track.low_since,
                    rules=self.rules,
                )
            )
            if reason is not None:
                self._end(track, reason, now)
                ended[address] = reason
        forget = now - self.rules.window
        for address in [a for a, at in self._ended.items() if at < forget]:
            del self._ended[address]
        return ended

    def _end(self, track: TokenTrack, reason: End, now: datetime) -> None:
        del self._tokens[track.address]
        self._entries -= len(track)
        track.ended_at, track.end_reason = now, reason
        self._dirty[track.address] = track
        self._ended[track.address] = now
        counter = f"ended_{reason.value}"
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        logger.info("stopped following %s (%s) with %d entries", track.address, reason.value, len(track))

    # ------------------------------------------------------------------ rows to PostgreSQL

    def _keep_rows(self, rows: list[tuple[Any, ...]], row: tuple[Any, ...]) -> None:
        rows.append(row)
        if len(rows) > MAX_ROWS:
            del rows[0]
            self.stats.rows_dropped += 1

    async def flush(self, *, tokens: bool = True) -> None:
        """Write the entries reached, the notifications and (with `tokens`) the tracked tokens
        changed since the last flush, in one transaction. A connection failure keeps them for the
        next one."""
        if self.postgres is None:
            self._dirty.clear()
            self._entry_rows.clear()
            self._notified_rows.clear()
            return
        dirty: dict[str, TokenTrack] = {}
        if tokens:
            dirty, self._dirty = self._dirty, {}
        entries, self._entry_rows = self._entry_rows, []
        notified, self._notified_rows = self._notified_rows, []
        if not (dirty or entries or notified):
            return
        tracked = [track.row() for track in dirty.values()]
        try:
            async with self.postgres.transaction() as connection:
                if tracked:
                    await connection.execute(_UPSERT_TRACKED, *_columns(tracked, 10))
                if entries:
                    await connection.execute(_INSERT_ENTRIES, *_columns(entries, 6))
                if notified:
                    await connection.execute(_NOTIFIED, *_columns(notified, 4))
        except Exception as exc:
            if not is_connection_failure(exc):
                self.stats.rows_dropped += len(tracked) + len(entries) + len(notified)
                logger.error("PostgreSQL refused follow-up rows (%s: %s); dropped", type(exc).__name__, exc)
                return
            self.stats.write_failures += 1
            for address, track in dirty.items():
                self._dirty.setdefault(address, track)
            self._entry_rows[:0] = entries
            self._notified_rows[:0] = notified
            raise
        self.stats.rows_written += len(tracked) + len(entries) + len(notified)

    # ------------------------------------------------------------------ running

    async def start(self) -> None:
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._upkeep(), name="followups-upkeep"),
            asyncio.create_task(self._claim_loop(), name="followups-claims"),
        ]

    async def stop(self) -> None:
        """Stop the loops between Redis commands, then claim and write what is left."""
        self._stopping.set()
        self._claim_wakeup.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(asyncio.shield(task), 10.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.claim_pending()
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - stopping: say what is lost
            logger.error("stopped with follow-up rows not written (%s)", exc)

    async def settled(self) -> None:
        """Every follow-up due so far claimed and handed on (tests and the demo wait on it)."""
        while self._claims or self._claiming.locked():
            await self.claim_pending()
            await asyncio.sleep(0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _claim_loop(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            if backoff:
                await self._pause(backoff)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._claim_wakeup.wait(), self.tick)
            self._claim_wakeup.clear()
            if self._stopping.is_set():
                return
            try:
                await self.claim_pending()
                backoff = 0.0
            except RedisError as exc:
                backoff = min(max(backoff * 2, 0.5), RETRY_MAX_SECONDS)
                logger.warning("follow-ups wait for Redis (%s); %d waiting", exc, len(self._claims))
                async with self._claiming:
                    self._drop_stale_claims()
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                logger.exception("claiming follow-ups failed")
                backoff = min(max(backoff * 2, 0.5), RETRY_MAX_SECONDS)

    async def _upkeep(self) -> None:
        next_tokens = time.monotonic()
        while not self._stopping.is_set():
            tokens = time.monotonic() >= next_tokens
            if tokens:
                next_tokens = time.monotonic() + TOKEN_ROWS_SECONDS
            try:
                await self.sync()
            except Exception as exc:  # noqa: BLE001 - tried again next tick
                logger.warning("follow-ups: reading new alerts failed (%s: %s)", type(exc).__name__, exc)
            try:
                await self.flush(tokens=tokens)
            except Exception as exc:  # noqa: BLE001 - kept, tried again next tick
                logger.warning("follow-ups: writing rows failed (%s: %s)", type(exc).__name__, exc)
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + self.sweep_every
                self.sweep()
            for hook in self.after_upkeep:
                try:
                    await hook()
                except Exception:  # noqa: BLE001
                    logger.exception("follow-ups: an upkeep hook failed")
            await self._pause(self.tick)

    def numbers(self) -> dict[str, float]:
        """Counters and sizes for /metrics."""
        out = self.stats.numbers()
        out.update(
            tokens=float(len(self._tokens)), entries=float(self._entries), claims_waiting=float(len(self._claims))
        )
        return out


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as columns, for unnest()."""
    return [[row[i] for row in rows] for i in range(width)]
