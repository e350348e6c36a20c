"""Exactly one alert per subscriber per token, across workers, processes and restarts.

Two Redis records per token, each read and written in a single round trip whatever the number
of subscribers:

* `token_calls:{token}` (hash channel id -> first call time, kept 1 hour after the last call):
  the "channels checked" and "channels' call times" of the product's processed-token record.
  They are the same for every subscriber, so they are kept once per token. A subscriber whose
  filters a token failed is checked again whenever a new channel calls it, against every calling
  channel's latest statistics (CONTRACT.md), and alerted then if it now passes.
* `processed_token:{token}` (set of the subscriber ids alerted, kept 14 days after the last
  alert): the "accepted" status. One Lua script asks which of the matched subscribers are not
  in it yet and adds them (SMISMEMBER + SADD), so two workers or two processes can never both
  alert one subscriber, and a restart never repeats an alert. The alert's own time and channels
  are in PostgreSQL's `alerts` row.

The original design kept one `processed_token:{token}:{user}` string per subscriber (accepted
for 14 days, rejected for 1 hour). Measured with bench/match_throughput.py at 10,000 subscribers,
the per-subscriber SET NX EX cost Redis 3.5 us per alert, about 1.2 ms per call, which capped the
pipeline near 800 calls a second; the set costs a small fraction of that.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cachetools import TTLCache
from redis.exceptions import NoScriptError

from managers.redis_manager import RedisManager, RedisUnavailable

logger = logging.getLogger("alertbot.dedup")

ACCEPTED_TTL_SECONDS = 14 * 24 * 3600
REJECTED_TTL_SECONDS = 3600

# A Lua function both scripts share: which of the subscribers in `csv` are new to the set at
# `key`, as one string: '1' for each added now (an alert to send), '0' for each already there.
# SMISMEMBER and SADD loop in C; one bulk reply is far cheaper to read than hundreds of integers.
# unpack() is limited by Lua's stack, so ids go in chunks.
_CLAIM_FUNCTION = """
local function claim(key, csv, ttl)
  local ids = {}
  for user in string.gmatch(csv, '[^,]+') do ids[#ids + 1] = user end
  local out = {}
  for first = 1, #ids, 4000 do
    local chunk = {unpack(ids, first, math.min(first + 3999, #ids))}
    local seen = redis.call('SMISMEMBER', key, unpack(chunk))
    redis.call('SADD', key, unpack(chunk))
    for i = 1, #seen do
      if seen[i] == 1 then out[#out + 1] = '0' else out[#out + 1] = '1' end
    end
  end
  redis.call('EXPIRE', key, ttl)
  return table.concat(out)
end
"""

# Claim subscribers for a token: KEYS[1] the alerted set, ARGV[1] ids, ARGV[2] TTL.
_CLAIM_LUA = _CLAIM_FUNCTION + "return claim(KEYS[1], ARGV[1], ARGV[2])\n"

# Record the call and claim in one round trip. The caller matched with the calling channels it
# already knew (ARGV[4]); matching can only grow as channels are added, so a claim made with a
# subset of the real callers is always right. If Redis lacks one of the assumed channels (the
# record expired, or another process knows less), nothing is claimed and the caller re-matches
# with the callers returned. Reply: {"id=time" lines, claim outcome ('1'/'0' per id) or ''}.
_RECORD_AND_CLAIM_LUA = _CLAIM_FUNCTION + """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local flat = redis.call('HGETALL', KEYS[1])
local lines = {}
local present = {}
for i = 1, #flat, 2 do
  lines[#lines + 1] = flat[i] .. '=' .. flat[i + 1]
  present[flat[i]] = true
end
local callers = table.concat(lines, '\\n')
for channel in string.gmatch(ARGV[4], '[^,]+') do
  if not present[channel] then return {callers, ''} end
end
if ARGV[5] == '' then return {callers, ''} end
return {callers, claim(KEYS[2], ARGV[5], ARGV[6])}
"""


def processed_key(token: str) -> str:
    return f"processed_token:{token}"


def token_calls_key(token: str) -> str:
    return f"token_calls:{token}"


@dataclass(frozen=True)
class ClaimRequest:
    """One call to record, and the subscribers its match (with `assumed` callers) would alert."""

    token: str
    channel_id: str
    called_at: datetime
    assumed: dict[str, datetime]
    candidates: list[int]


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
        self._record_claim_sha: str | None = None
        self._times: dict[str, datetime] = {}
        self._id_texts: dict[int, str] = {}
        self.round_trips = 0
        self.local_decisions = 0

    def known_callers(self, token: str, channel_id: str, called_at: datetime) -> dict[str, datetime]:
        """The calling channels this process knows of, with this call's channel added."""
        callers = dict(self._calls.get(token) or {})
        callers.setdefault(channel_id, called_at)
        return callers

    async def record_and_claim(
        self, token: str, channel_id: str, called_at: datetime, assumed: dict[str, datetime], candidates: list[int]
    ) -> tuple[dict[str, datetime], list[int]]:
        """Record the call and claim `candidates` (matched with `assumed` callers) in one round trip.

        Returns all calling channels and the candidates won. When the channels returned differ
        from `assumed`, the caller must match again with them and `claim` whoever else matches
        (candidates not claimed here, because Redis lacked an assumed channel, included).
        """
        return (await self.record_and_claim_many([ClaimRequest(token, channel_id, called_at, assumed, candidates)]))[0]

    async def record_and_claim_many(
        self, requests: Sequence[ClaimRequest]
    ) -> list[tuple[dict[str, datetime], list[int]]]:
        """`record_and_claim` for several calls in one round trip, applied in order.

        Each call's script is atomic on its own, so a later request may assume the channels of an
        earlier one for the same token: the earlier script has run by the time the later one does.
        """
        if not requests:
            return []
        try:
            async with self.redis.guarded() as client:
                replies = await self._run_record_scripts(client, requests)
        except RedisUnavailable:
            # Alone, this process's own knowledge is the whole truth: claim from it.
            self.local_decisions += len(requests)
            results: list[tuple[dict[str, datetime], list[int]]] = []
            for request in requests:
                self._calls[request.token] = request.assumed
                results.append((request.assumed, self._claim_locally(request.token, request.candidates)))
            return results
        results = []
        for request, (lines, outcome) in zip(requests, replies):
            callers = self._parse_callers(str(lines))
            self._calls[request.token] = callers
            if not outcome:
                results.append((callers, []))
                continue
            self._remember(request.token, request.candidates)
            results.append((callers, [user for user, flag in zip(request.candidates, str(outcome)) if flag == "1"]))
        return results

    async def _run_record_scripts(self, client: Any, requests: Sequence[ClaimRequest]) -> list[Any]:
        """One pipeline of EVALSHA calls. redis-py's own script objects would ask SCRIPT EXISTS
        before every pipeline, a second round trip; instead the script is loaded once and again
        only when Redis answers NOSCRIPT (a restart or SCRIPT FLUSH), which runs nothing."""
        if self._record_claim_sha is None:
            self._record_claim_sha = await client.script_load(_RECORD_AND_CLAIM_LUA)
            self.round_trips += 1
        pipe = client.pipeline(transaction=False)
        for request in requests:
            pipe.evalsha(
                self._record_claim_sha, 2, token_calls_key(request.token), processed_key(request.token),
                request.channel_id, request.called_at.isoformat(), REJECTED_TTL_SECONDS, ",".join(request.assumed),
                self._csv(request.candidates), ACCEPTED_TTL_SECONDS,
            )
        self.round_trips += 1
        replies = await pipe.execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self._record_claim_sha = None
            again = await self._run_record_scripts(client, [requests[i] for i in missing])
            for i, reply in zip(missing, again):
                replies[i] = reply
        failed = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if failed is not None:
            raise failed
        return replies

    def _parse_callers(self, text: str) -> dict[str, datetime]:
        callers: dict[str, datetime] = {}
        for line in text.split("\n"):
            channel, _, at = line.partition("=")
            if channel:
                callers[channel] = self._time(at)
        return callers

    def _claim_locally(self, token: str, user_ids: list[int]) -> list[int]:
        known = self._alerted.get(token) or set()
        won = [user for user in user_ids if user not in known]
        self._remember(token, user_ids)
        return won

    def _remember(self, token: str, user_ids: list[int]) -> None:
        alerted = self._alerted.get(token)
        if alerted is None:
            alerted = self._alerted[token] = set()
        # Lost claims were won elsewhere: either way these subscribers have had the alert.
        alerted.update(user_ids)

    def _csv(self, user_ids: list[int]) -> str:
        """Ids as the scripts take them. str(int) costs ~0.2 us, a dict hit a tenth of it, and the
        same few thousand subscribers match call after call."""
        texts = self._id_texts
        if len(texts) > 1_000_000:
            texts.clear()
        for user in user_ids:
            if user not in texts:
                texts[user] = str(user)
        return ",".join([texts[user] for user in user_ids])

    def _time(self, text: str) -> datetime:
        """Parsed call times are memoised: the same few strings come back on every re-call."""
        parsed = self._times.get(text)
        if parsed is None:
            if len(self._times) > 100_000:
                self._times.clear()
            parsed = self._times[text] = _parse_time(text)
        return parsed

    def not_known_alerted(self, token: str, user_ids: list[int]) -> list[int]:
        """`user_ids` less those this process knows were alerted (saves Redis work, decides nothing)."""
        alerted = self._alerted.get(token)
        return [user for user in user_ids if user not in alerted] if alerted else user_ids

    async def claim(self, token: str, user_ids: list[int]) -> list[int]:
        """Atomically mark `user_ids` as alerted for `token`; returns those this call won."""
        if not user_ids:
            return []
        try:
            async with self.redis.guarded() as client:
                if self._claim_script is None:
                    self._claim_script = client.register_script(_CLAIM_LUA)
                self.round_trips += 1
                outcome = await self._claim_script(
                    keys=[processed_key(token)],
                    args=[self._csv(user_ids), ACCEPTED_TTL_SECONDS],
                    client=client,
                )
        except RedisUnavailable:
            self.local_decisions += 1
            return self._claim_locally(token, user_ids)
        won = [user for user, flag in zip(user_ids, str(outcome)) if flag == "1"]
        self._remember(token, user_ids)
        return won

    def forget_local(self) -> None:
        """Drop the in-process copy (tests use it to act as a freshly restarted process)."""
        self._alerted.clear()
        self._calls.clear()

    async def seed_alerted(self, pairs: Iterable[tuple[str, int, datetime]]) -> int:
        """Re-create the alerted sets from PostgreSQL (used when Redis starts empty, e.g. embedded)."""
        by_token: dict[str, list[int]] = {}
        for token, user, _at in pairs:
            by_token.setdefault(token, []).append(user)
        for token, users in by_token.items():
            self._alerted.setdefault(token, set()).update(users)
        try:
            async with self.redis.guarded() as client:
                pipe = client.pipeline(transaction=False)
                for token, users in by_token.items():
                    pipe.sadd(processed_key(token), *users)
                    pipe.expire(processed_key(token), ACCEPTED_TTL_SECONDS)
                if by_token:
                    await pipe.execute()
        except RedisUnavailable:
            logger.warning("Redis unavailable while seeding alert records; kept them in process only")
        return sum(len(users) for users in by_token.values())
