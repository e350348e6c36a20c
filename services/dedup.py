"""Exactly one alert per subscriber per token, across workers, processes and restarts.

Two Redis records, each written in a single round trip whatever the number of subscribers:

* `token_calls:{token}` (hash channel id -> call time, kept 1 hour after the last call): the
  channels that have called a token. It is the "channels checked" and "channels' call times"
  of the product's rejected record, kept once per token rather than once per subscriber: it is
  the same for all of them, and writing it 10,000 times per call is what made the original
  per-subscriber loop slow. A subscriber whose filters a token failed is re-checked when a new
  channel calls it, against every calling channel's latest statistics (CONTRACT.md).
* `processed_token:{token}:{user}` (JSON: timestamp, channels checked, status "accepted",
  channels' call times; kept 14 days): written with SET NX by one Lua script for all the
  subscribers a call matched, which answers which of them this worker won. Only the winner
  alerts, so two workers or two processes can never both alert one subscriber. No "rejected"
  per-subscriber record is written (see `token_calls`), so an existing record always means
  the subscriber has had the alert.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from cachetools import TTLCache

from managers.redis_manager import RedisManager, RedisUnavailable

logger = logging.getLogger("alertbot.dedup")

ACCEPTED_TTL_SECONDS = 14 * 24 * 3600
REJECTED_TTL_SECONDS = 3600

# SET NX for each subscriber's record; the answer is one string, '1' for each record this call
# created (an alert to send) and '0' for each that existed (already alerted). Subscriber ids come
# as one comma-separated argument and the replies as one bulk string: for a token that matches
# thousands of subscribers, encoding and parsing thousands of separate values was the cost.
_CLAIM_LUA = """
local prefix = 'processed_token:' .. ARGV[1] .. ':'
local won = {}
for user in string.gmatch(ARGV[2], '[^,]+') do
  if redis.call('SET', prefix .. user, ARGV[3], 'NX', 'EX', ARGV[4]) then
    won[#won + 1] = '1'
  else
    won[#won + 1] = '0'
  end
end
return table.concat(won)
"""


# Adds a calling channel (keeping its first call time), refreshes the 1-hour window, and answers
# every calling channel as one "id=time" line each: one script, one bulk reply.
_RECORD_CALL_LUA = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local flat = redis.call('HGETALL', KEYS[1])
local lines = {}
for i = 1, #flat, 2 do lines[#lines + 1] = flat[i] .. '=' .. flat[i + 1] end
return table.concat(lines, '\\n')
"""


def processed_key(token: str, user_id: int) -> str:
    return f"processed_token:{token}:{user_id}"


def token_calls_key(token: str) -> str:
    return f"token_calls:{token}"


def accepted_record(now: datetime, callers: Mapping[str, datetime]) -> str:
    """The JSON the product has always stored for a decided token (status accepted)."""
    return json.dumps(
        {
            "timestamp": now.isoformat(),
            "channels_checked": sorted(callers),
            "status": "accepted",
            "channels_called_at": {channel: at.isoformat() for channel, at in sorted(callers.items())},
        }
    )


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class AlertLedger:
    """The dedup records, with an in-process copy that serves while Redis is down.

    While Redis is unreachable this process decides alone (from its copy), so it keeps alerting
    and never repeats its own alerts; only a second process running during the same outage
    could repeat one, which is the price of staying up.
    """

    def __init__(self, redis: RedisManager, *, local_size: int = 500_000) -> None:
        self.redis = redis
        # token -> subscribers alerted; one cache entry per token keeps the per-alert cost to a set add.
        self._alerted: TTLCache[str, set[int]] = TTLCache(local_size, ACCEPTED_TTL_SECONDS)
        self._calls: TTLCache[str, dict[str, datetime]] = TTLCache(100_000, REJECTED_TTL_SECONDS)
        self._claim_script: Any = None
        self._record_script: Any = None
        self._times: dict[str, datetime] = {}
        self.round_trips = 0
        self.local_decisions = 0

    async def record_call(self, token: str, channel_id: str, called_at: datetime) -> dict[str, datetime]:
        """Add a calling channel (its first call time is kept) and return all calling channels."""
        try:
            async with self.redis.guarded() as client:
                if self._record_script is None:
                    self._record_script = client.register_script(_RECORD_CALL_LUA)
                self.round_trips += 1
                raw = await self._record_script(
                    keys=[token_calls_key(token)],
                    args=[channel_id, called_at.isoformat(), REJECTED_TTL_SECONDS],
                    client=client,
                )
            callers = {}
            for line in str(raw).split("\n"):
                channel, _, at = line.partition("=")
                callers[channel] = self._time(at)
        except RedisUnavailable:
            callers = dict(self._calls.get(token) or {})
            callers.setdefault(channel_id, called_at)
        self._calls[token] = callers
        return callers

    def _time(self, text: str) -> datetime:
        """Parsed call times are memoised: the same few strings come back on every re-call."""
        parsed = self._times.get(text)
        if parsed is None:
            if len(self._times) > 100_000:
                self._times.clear()
            parsed = self._times[text] = _parse_time(text)
        return parsed

    def already_alerted(self, token: str, user_ids: Iterable[int]) -> list[int]:
        """The subset this process knows it has alerted already (saves Redis work, decides nothing)."""
        alerted = self._alerted.get(token)
        return [user for user in user_ids if user in alerted] if alerted else []

    async def claim(self, token: str, user_ids: list[int], record: str) -> list[int]:
        """Atomically mark `user_ids` as alerted for `token`; returns those this call won."""
        if not user_ids:
            return []
        try:
            async with self.redis.guarded() as client:
                if self._claim_script is None:
                    self._claim_script = client.register_script(_CLAIM_LUA)
                self.round_trips += 1
                # The keys are built inside the script from the token and the ids (see _CLAIM_LUA);
                # this suits one Redis server, not a cluster, which is how the bot is deployed.
                outcome = await self._claim_script(
                    keys=[],
                    args=[token, ",".join(map(str, user_ids)), record, ACCEPTED_TTL_SECONDS],
                    client=client,
                )
            won = [user for user, flag in zip(user_ids, str(outcome)) if flag == "1"]
        except RedisUnavailable:
            self.local_decisions += 1
            known = self._alerted.get(token) or set()
            won = [user for user in user_ids if user not in known]
        alerted = self._alerted.get(token)
        if alerted is None:
            alerted = self._alerted[token] = set()
        # Lost claims were won elsewhere: either way this subscriber has had the alert.
        alerted.update(user_ids)
        return won

    def forget_local(self) -> None:
        """Drop the in-process copy (tests use it to act as a freshly restarted process)."""
        self._alerted.clear()
        self._calls.clear()

    async def seed_alerted(self, pairs: Iterable[tuple[str, int, datetime]]) -> int:
        """Re-create accepted records from PostgreSQL (used when Redis starts empty, e.g. embedded).

        Written with NX so a record Redis still has is never replaced.
        """
        count = 0
        try:
            async with self.redis.guarded() as client:
                pipe = client.pipeline(transaction=False)
                for token, user, at in pairs:
                    remaining = ACCEPTED_TTL_SECONDS - int((datetime.now(timezone.utc) - at).total_seconds())
                    if remaining <= 0:
                        continue
                    pipe.set(processed_key(token, user), accepted_record(at, {}), ex=remaining, nx=True)
                    self._alerted.setdefault(token, set()).add(user)
                    count += 1
                if count:
                    await pipe.execute()
        except RedisUnavailable:
            logger.warning("Redis unavailable while seeding alert records; kept %d in process only", count)
        return count
