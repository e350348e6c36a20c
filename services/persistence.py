"""Tokens, channels, calls, prices and alerts reach PostgreSQL in batches, off the alert path.

The pipeline only appends to in-memory batches (no await); a background task writes them, so a
slow or absent PostgreSQL delays rows, never alerts. Retries, drops and what is kept for filter
replay: docs/architecture.md, "Persistence".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from domain.events import CallEvent, Channel, PriceEvent, TokenInfo
from managers.postgres import PostgresManager, is_connection_failure

logger = logging.getLogger("alertbot.persistence")

UPSERT_CHANNEL = """
INSERT INTO channels (id, name, username, win_rate, avg_gain, calls, stats_updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET
    name = COALESCE(EXCLUDED.name, channels.name),
    username = COALESCE(EXCLUDED.username, channels.username),
    win_rate = COALESCE(EXCLUDED.win_rate, channels.win_rate),
    avg_gain = COALESCE(EXCLUDED.avg_gain, channels.avg_gain),
    calls = COALESCE(EXCLUDED.calls, channels.calls),
    stats_updated_at = COALESCE(EXCLUDED.stats_updated_at, channels.stats_updated_at)
"""
UPSERT_TOKEN = """
INSERT INTO tokens (address, symbol, name, chain, market_cap_usd, liquidity_usd, holders, price_usd,
                    created_at, image_url, first_seen_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (address) DO UPDATE SET
    symbol = COALESCE(EXCLUDED.symbol, tokens.symbol),
    name = COALESCE(EXCLUDED.name, tokens.name),
    market_cap_usd = COALESCE(EXCLUDED.market_cap_usd, tokens.market_cap_usd),
    liquidity_usd = COALESCE(EXCLUDED.liquidity_usd, tokens.liquidity_usd),
    holders = COALESCE(EXCLUDED.holders, tokens.holders),
    price_usd = COALESCE(EXCLUDED.price_usd, tokens.price_usd),
    created_at = COALESCE(tokens.created_at, EXCLUDED.created_at),
    image_url = COALESCE(EXCLUDED.image_url, tokens.image_url)
"""
INSERT_CALL = """
INSERT INTO calls (token_address, channel_id, called_at, market_cap_usd, price_usd, liquidity_usd, holders)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (token_address, channel_id) DO NOTHING
"""
UPDATE_PRICE = """
UPDATE tokens SET price_usd = $2, market_cap_usd = COALESCE($3, market_cap_usd), price_updated_at = $4
WHERE address = $1 AND (price_updated_at IS NULL OR price_updated_at <= $4)
"""
# The same row as UPDATE_PRICE, kept as history for filter replay.
INSERT_PRICE_HISTORY = """
INSERT INTO token_prices (token_address, ts, price_usd, market_cap_usd) VALUES ($1, $4, $2, $3)
"""
# One row per call that alerted, whatever the number of subscribers it alerted.
INSERT_ALERTS = """
INSERT INTO alerts (user_id, token_address, market_cap_usd, price_usd, channel_ids, created_at)
SELECT u.id, $2, $3, $4, $5, $6 FROM users u WHERE u.telegram_id = ANY($1::bigint[])
ON CONFLICT (user_id, token_address) DO NOTHING
"""
# Order matters: calls reference tokens and channels, alerts reference tokens.
WRITE_ORDER = ("channel", "token", "call", "price", "alert")
# Each kind of row feeds every statement of its kind, with the same arguments.
STATEMENTS: dict[str, tuple[str, ...]] = {
    "channel": (UPSERT_CHANNEL,),
    "token": (UPSERT_TOKEN,),
    "call": (INSERT_CALL,),
    "price": (UPDATE_PRICE, INSERT_PRICE_HISTORY),
    "alert": (INSERT_ALERTS,),
}
PRUNE_PRICES = "DELETE FROM token_prices WHERE ts < $1"
# Trades come many a second for a busy token: of these sources one price row per token is kept
# per TRADE_POINT_SECONDS (the follow-ups tracker sees every trade all the same).
THINNED_SOURCES = frozenset({"pumpportal"})
TRADE_POINT_SECONDS = 10.0
THINNED_TOKENS_MAX = 100_000
HISTORY_DAYS = 7.0
PRUNE_INTERVAL_SECONDS = 3600.0
# Pruning after a long stop may delete days of rows at once: more than a query's usual bound.
PRUNE_TIMEOUT_SECONDS = 120.0
MAX_BACKOFF_SECONDS = 30.0
# Drops are logged at most this often, with the count since the last line.
DROP_LOG_INTERVAL_SECONDS = 10.0
Row = tuple[str, tuple[Any, ...]]


@dataclass
class PersistenceStats:
    queued: int = 0
    written: int = 0
    batches: int = 0
    failures: int = 0  # flushes that failed for a connection-level reason
    requeued: int = 0  # batches put back whole after such a failure
    dropped: int = 0  # every row dropped, for whatever reason below
    dropped_full: int = 0  # the oldest rows, past max_pending
    dropped_refused: int = 0  # rows PostgreSQL refused one by one
    dropped_at_stop: int = 0  # rows still unwritten when the writer stopped
    pruned: int = 0

    def numbers(self) -> dict[str, float]:
        """Every counter by name, for /metrics."""
        return {name: float(value) for name, value in asdict(self).items()}


def _deleted(status: str) -> int:
    """Rows a DELETE removed, from its status tag ("DELETE 12")."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, IndexError):
        return 0


class PersistenceWriter:
    def __init__(
        self,
        postgres: PostgresManager,
        *,
        batch_size: int = 1_000,
        flush_interval: float = 0.2,
        max_pending: int = 200_000,
        history_days: float | None = HISTORY_DAYS,
        prune_interval: float = PRUNE_INTERVAL_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.postgres = postgres
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.max_backoff = max_backoff
        self.history_days = history_days  # None: keep history forever
        self.prune_interval = prune_interval
        self.clock = clock
        # The first prune waits one interval: a process that runs briefly (tests, the demo with
        # its recorded, dated stream) never deletes what it has just written.
        self._next_prune = time.monotonic() + prune_interval
        self._rows: deque[Row] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stats = PersistenceStats()
        self._full_unlogged = 0  # rows dropped from a full buffer, not logged yet
        self._point_kept: dict[str, float] = {}  # token -> monotonic time of its last thinned price row
        self._next_drop_log = 0.0

    # -- what the pipeline calls: never awaits -----------------------------------------------------

    def _add(self, kind: str, row: tuple[Any, ...]) -> None:
        if len(self._rows) >= self.max_pending:
            self._rows.popleft()
            self._dropped("full")
        self._rows.append((kind, row))
        self.stats.queued += 1
        if len(self._rows) >= self.batch_size:
            self._wakeup.set()

    def channel(self, channel: Channel, *, stats_at: datetime | None = None) -> None:
        """`stats_at`: when its statistics arrived; None when a call only names the channel."""
        c = channel
        self._add("channel", (c.id, c.name, c.username, c.win_rate, c.avg_gain, c.calls, stats_at))

    def token(self, token: TokenInfo, seen_at: datetime) -> None:
        self._add(
            "token",
            (
                token.address,
                token.symbol,
                token.name,
                token.chain,
                token.market_cap_usd,
                token.liquidity_usd,
                token.holders,
                token.price_usd,
                token.created_at,
                token.image_url,
                seen_at,
            ),
        )

    def call(self, event: CallEvent) -> None:
        self._add(
            "call",
            (
                event.token.address,
                event.channel.id,
                event.called_at,
                event.token.market_cap_usd,
                event.token.price_usd,
                event.token.liquidity_usd,
                event.token.holders,
            ),
        )

    def price(self, event: PriceEvent) -> None:
        if event.source in THINNED_SOURCES:
            now = time.monotonic()
            if now - self._point_kept.get(event.address, -math.inf) < TRADE_POINT_SECONDS:
                return
            if len(self._point_kept) >= THINNED_TOKENS_MAX:
                self._point_kept.clear()
            self._point_kept[event.address] = now
        self._add("price", (event.address, event.price_usd, event.market_cap_usd, event.ts))

    def alerts(self, telegram_ids: list[int], token: TokenInfo, channel_ids: list[str], at: datetime) -> None:
        self._add("alert", (telegram_ids, token.address, token.market_cap_usd, token.price_usd, channel_ids, at))

    # -- the background writer ---------------------------------------------------------------------

    def pending(self) -> int:
        return len(self._rows)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="persistence-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout)
        if self._rows:
            logger.error("stopped with %d rows not written to PostgreSQL; they are lost", len(self._rows))
            self.stats.dropped_at_stop += len(self._rows)
            self.stats.dropped += len(self._rows)
            self._rows.clear()
        self._log_drops(force=True)

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                # PostgreSQL just failed: give it time, however many rows arrive meanwhile.
                await asyncio.sleep(backoff)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self.flush_interval)
            self._wakeup.clear()
            try:
                await self.flush()
                backoff = 0.0
            except Exception as exc:  # noqa: BLE001 - PostgreSQL trouble: keep rows, retry later
                self.stats.failures += 1
                backoff = min(max(backoff * 2, 0.5), self.max_backoff)
                logger.warning(
                    "PostgreSQL write failed (%s: %s); %d rows wait, retry in %.1fs",
                    type(exc).__name__,
                    exc,
                    len(self._rows),
                    backoff,
                )
                continue
            finally:
                self._log_drops()
            if self.history_days is not None and time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + self.prune_interval
                try:
                    await self.prune()
                except Exception as exc:  # noqa: BLE001 - history stays a while longer; writing goes on
                    logger.warning("pruning replay history failed (%s); next try in %.0fs", exc, self.prune_interval)

    async def prune(self, now: datetime | None = None) -> int:
        """Delete price history older than `history_days`; returns the rows deleted."""
        if self.history_days is None:
            return 0
        cutoff = (now or self.clock()) - timedelta(days=self.history_days)
        deleted = _deleted(await self.postgres.execute(PRUNE_PRICES, cutoff, timeout=PRUNE_TIMEOUT_SECONDS))
        self.stats.pruned += deleted
        if deleted:
            logger.info("pruned %d price rows older than %s", deleted, cutoff.isoformat())
        return deleted

    async def flush(self) -> None:
        """Write everything queued so far, in dependency order.

        A connection-level failure puts the batch back at the front and raises; rows refused
        for their data are dropped one by one, the rest written.
        """
        while self._rows:
            taken = [self._rows.popleft() for _ in range(min(len(self._rows), self.batch_size))]
            grouped: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in WRITE_ORDER}
            for kind, row in taken:
                grouped[kind].append(row)
            refused = 0
            try:
                async with self.postgres.transaction() as connection:
                    for kind in WRITE_ORDER:
                        if grouped[kind]:
                            for statement in STATEMENTS[kind]:
                                await connection.executemany(statement, grouped[kind])
            except Exception as exc:
                if is_connection_failure(exc):
                    self._requeue(taken)
                    raise
                # The server answered but refused some row: write row by row so one bad row
                # cannot hold back the rest forever.
                logger.warning(
                    "batch refused (%s: %s); writing its %d rows one by one", type(exc).__name__, exc, len(taken)
                )
                refused = await self._write_one_by_one([(kind, row) for kind in WRITE_ORDER for row in grouped[kind]])
            except BaseException:
                self._requeue(taken)
                raise
            self.stats.written += len(taken) - refused
            self.stats.batches += 1

    async def _write_one_by_one(self, rows: list[Row]) -> int:
        """Each row in a transaction of its own; returns how many were refused (and dropped).

        A connection-level failure half-way puts the rows not yet written back and raises.
        """
        refused = 0
        for index, (kind, row) in enumerate(rows):
            try:
                async with self.postgres.transaction() as connection:
                    for statement in STATEMENTS[kind]:
                        await connection.execute(statement, *row)
            except Exception as exc:
                if is_connection_failure(exc):
                    self.stats.written += index - refused
                    self._requeue(rows[index:])
                    raise
                refused += 1
                self._dropped("refused")
                logger.error("dropped a %s row PostgreSQL refuses: %s: %s (%r)", kind, type(exc).__name__, exc, row[:2])
            except BaseException:
                self.stats.written += index - refused
                self._requeue(rows[index:])
                raise
        return refused

    def _requeue(self, rows: list[Row]) -> None:
        """Rows that could not be written go back to the front, in order; the queue stays bounded."""
        self._rows.extendleft(reversed(rows))
        self.stats.requeued += 1
        while len(self._rows) > self.max_pending:
            self._rows.popleft()
            self._dropped("full")

    def _dropped(self, reason: Literal["full", "refused"]) -> None:
        """Count one dropped row; refused rows are logged where they are refused, the others
        by `_log_drops` (the pipeline's hot path must not log once a row)."""
        self.stats.dropped += 1
        if reason == "full":
            self.stats.dropped_full += 1
            self._full_unlogged += 1
        else:
            self.stats.dropped_refused += 1

    def _log_drops(self, force: bool = False) -> None:
        """One line for the rows dropped from a full buffer since the last one, at most every 10 s."""
        now = time.monotonic()
        if not self._full_unlogged or (not force and now < self._next_drop_log):
            return
        self._next_drop_log = now + DROP_LOG_INTERVAL_SECONDS
        logger.error(
            "PostgreSQL buffer full (%d rows waiting): dropped the %d oldest rows", len(self._rows), self._full_unlogged
        )
        self._full_unlogged = 0
