"""Exactly one alert per subscriber per token, across workers, processes, restarts and outages.

Per token, `token_calls:{token}` (who called it, when) and `processed_token:{token}` (who was
alerted); one Lua script per call records the call, claims the matched subscribers and queues
their outbox entries, so no claim exists without its alert. While Redis is down this process
decides from its own copy and writes it back later. Details: docs/architecture.md, "Dedup".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache
from redis.exceptions import NoScriptError

from domain.messages import Alert, RenderedAlert
from managers.postgres import PostgresManager
from managers.redis_manager import RedisManager, RedisUnavailable
from services.outbox import STREAM_KEY, encode_alert

logger = logging.getLogger("alertbot.dedup")

ACCEPTED_TTL_SECONDS = 14 * 24 * 3600
REJECTED_TTL_SECONDS = 3600
# Write-back of an outage's claims keeps at most this many tokens; beyond it the oldest are
# dropped (logged): a repeat is possible for them later, never a lost alert.
UNSYNCED_TOKENS_MAX = 200_000

# Alerts of the last 14 days (the accepted records' TTL), to rebuild the dedup records when Redis
# starts empty (embedded).
RECENT_ALERTS_SQL = """
SELECT a.token_address, u.telegram_id, a.created_at FROM alerts a JOIN users u ON u.id = a.user_id
WHERE a.created_at > now() - interval '14 days'
"""

# Record a call, then claim and enqueue. KEYS: token_calls, processed_token, outbox stream.
# ARGV: channel, call time, calls TTL, claims TTL, exact ('1': claim only if Redis knows exactly
# the assumed callers; '0': at least them), n assumed, the assumed channels; then, when there are
# candidates: enqueue ('1'/'0'), token, photo ('' none), received_at ('' none), n texts,
# (html, digest) per text, and groups to the end: lane, text index (0-based), the group's ids
# as a JSON array of decimal strings. The ids go as one argument each group, decoded by cjson:
# redis-py packs every argument in Python, about 0.8 us apiece, more than the script spends on
# an id. Candidates are distinct. The caller matched with the assumed callers; matching only
# grows as channels are added, so a claim made with a subset of the real callers is right.
# Reply: {1 if claimed else 0, one '1' (won) or '0' per candidate in argument order, channel,
# time, channel, time, ...}. Each entry has the fields services.outbox.encode_alert gives the
# won chat's alert (RenderedAlert.for_chat), so the outbox reads it like any other.
#
# Redis keeps a script's earlier writes when a later command fails, so nothing is written until
# it cannot fail: a key of the wrong type fails HGETALL or the first SMISMEMBER, before any
# write, and the stream's fails the first XADD, the first write that changes anything (a SADD
# of members already there changes nothing); an out-of-memory refusal only ever hits that first
# write. Each chunk's entries are added before its claims.
_RECORD_CLAIM_ENQUEUE_LUA = """
local flat = redis.call('HGETALL', KEYS[1])
local assumed = tonumber(ARGV[6])
local present = {}
local known = #flat / 2
for i = 1, #flat, 2 do present[flat[i]] = true end
local reply = {0, ''}
for i = 1, #flat do reply[i + 2] = flat[i] end
if not present[ARGV[1]] then
  present[ARGV[1]] = true
  known = known + 1
  reply[#reply + 1] = ARGV[1]
  reply[#reply + 1] = ARGV[2]
end
local agreed = ARGV[5] ~= '1' or known == assumed
for i = 7, 6 + assumed do
  if not present[ARGV[i]] then agreed = false end
end
local p = 7 + assumed
local flags, n, won = {}, 0, 0
if agreed and p <= #ARGV then
  local enqueue, token, photo, received = ARGV[p] == '1', ARGV[p + 1], ARGV[p + 2], ARGV[p + 3]
  local texts = p + 5
  p = texts + 2 * tonumber(ARGV[p + 4])
  local extra = {}
  if photo ~= '' then extra[#extra + 1] = 'photo'; extra[#extra + 1] = photo end
  if received ~= '' then extra[#extra + 1] = 'received_at'; extra[#extra + 1] = received end
  while p <= #ARGV do
    local lane, body = ARGV[p], texts + 2 * tonumber(ARGV[p + 1])
    local html, digest = ARGV[body], ARGV[body + 1]
    local ids = cjson.decode(ARGV[p + 2])
    p = p + 3
    -- unpack() is limited by Lua's stack, so ids go in chunks.
    for first = 1, #ids, 4000 do
      local last = math.min(first + 3999, #ids)
      local seen = redis.call('SMISMEMBER', KEYS[2], unpack(ids, first, last))
      for i = 1, #seen do
        n = n + 1
        if seen[i] == 0 then
          flags[n] = '1'
          won = won + 1
          if enqueue then
            redis.call('XADD', KEYS[3], '*', 'token', token, 'chat', ids[first + i - 1], 'html', html,
                       'priority', lane, 'digest', digest, unpack(extra))
          end
        else
          flags[n] = '0'
        end
      end
      redis.call('SADD', KEYS[2], unpack(ids, first, last))
    end
  end
end
if won > 0 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if agreed then reply[1] = 1 end
reply[2] = table.concat(flags)
return reply
"""

# The key-type check the write-back starts with: every write comes after it, so a key holding
# the wrong kind of value fails the script before it has changed anything.
_CHECK_TYPES = """
local kinds = {'hash', 'set', 'stream'}
for i = 1, 3 do
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found ~= 'none' and found ~= kinds[i] then
    return redis.error_reply('WRONGTYPE a dedup or outbox key holds the wrong kind of value')
  end
end
"""

# Write back what one token's calls and claims did while Redis was down. KEYS as above. ARGV:
# calls TTL, claims TTL, n calls, (channel, time) per call, n claims, the claimed ids, then to the
# end per unsent alert: chat, check ('1'/'0'), n field values, the entry's fields and values. An
# alert to check whose chat is in the set already (claimed meanwhile by another process, or by a
# script whose answer timed out) is not added. Reply: alerts added.
_WRITE_BACK_LUA = (
    _CHECK_TYPES
    + """
local p = 4
for i = 1, tonumber(ARGV[3]) do
  redis.call('HSETNX', KEYS[1], ARGV[p], ARGV[p + 1])
  p = p + 2
end
if ARGV[3] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local claims, first_claim = tonumber(ARGV[p]), p + 1
p = p + 1 + claims
local added = 0
while p <= #ARGV do
  local n = tonumber(ARGV[p + 2])
  if ARGV[p + 1] == '0' or redis.call('SISMEMBER', KEYS[2], ARGV[p]) == 0 then
    redis.call('XADD', KEYS[3], '*', unpack(ARGV, p + 3, p + 2 + n))
    added = added + 1
  end
  p = p + 3 + n
end
local last_claim = first_claim + claims - 1
for first = first_claim, last_claim, 4000 do
  redis.call('SADD', KEYS[2], unpack(ARGV, first, math.min(first + 3999, last_claim)))
end
if claims > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return added
"""
)


def processed_key(token: str) -> str:
    return f"processed_token:{token}"


def token_calls_key(token: str) -> str:
    return f"token_calls:{token}"


@dataclass(frozen=True)
class ClaimRequest:
    """One call to record, and the subscribers its match (with `assumed` callers) would alert.

    `alert` is what the outbox entries of the candidates won carry; without it the claim is
    made and nothing is queued (the caller delivers). `exact`: claim only if Redis knows exactly
    the assumed callers, so an alert never lists fewer channels than Redis knows.
    """

    token: str
    channel_id: str
    called_at: datetime
    assumed: dict[str, datetime]
    candidates: list[int]
    alert: RenderedAlert | None = None
    exact: bool = True


@dataclass(frozen=True)
class ClaimResult:
    """What one call's round trip decided."""

    callers: dict[str, datetime]  # every calling channel known (Redis's record, or this process's)
    won: list[int]  # candidates claimed by this call (their entries are in the stream, unless `local`)
    claimed: bool = True  # False: Redis knows other callers; match again with `callers`
    local: bool = False  # decided by this process alone (Redis down): the alerts are not queued
    error: Exception | None = None  # Redis refused this call's script, which wrote nothing: retry it


@dataclass
class _Unsynced:
    """One token's calls and claims made while Redis was down, to be written back."""

    calls: dict[str, datetime] = field(default_factory=dict)
    claims: set[int] = field(default_factory=set)

    def merge(self, other: _Unsynced) -> None:
        for channel, at in other.calls.items():
            self.calls.setdefault(channel, at)
        self.claims |= other.claims


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _encoded(values: list[Any]) -> list[bytes]:
    """Every argument as bytes, so a string that cannot be encoded fails its own call here
    instead of the whole pipeline when redis-py packs it."""
    return [value if isinstance(value, bytes) else str(value).encode() for value in values]


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha: str | None = None


class AlertLedger:
    """The dedup records, with an in-process copy that serves while Redis is down.

    Only a second process running during the same outage could repeat an alert of this one,
    which is the price of staying up; the claims are written back when Redis returns.
    """

    def __init__(self, redis: RedisManager, *, local_size: int = 500_000) -> None:
        self.redis = redis
        # token -> subscribers alerted; one cache entry per token keeps the per-alert cost to a set add.
        self._alerted: TTLCache[str, set[int]] = TTLCache(local_size, ACCEPTED_TTL_SECONDS)
        self._calls: TTLCache[str, dict[str, datetime]] = TTLCache(100_000, REJECTED_TTL_SECONDS)
        self._unsynced: dict[str, _Unsynced] = {}
        # Claims of an outage already written back: an alert of theirs the sender gives back later
        # (a send that failed and waits for its retry) is this process's own, added unchecked.
        self._written: TTLCache[tuple[str, int], bool] = TTLCache(200_000, REJECTED_TTL_SECONDS)
        self._record_script = _Script(_RECORD_CLAIM_ENQUEUE_LUA)
        self._write_back_script = _Script(_WRITE_BACK_LUA)
        self._times: dict[str, datetime] = {}
        self._texts: dict[int, str] = {}
        self.round_trips = 0
        self.local_decisions = 0
        self.written_back = 0  # claims written back after an outage
        self.reentered = 0  # unsent alerts of an outage added to the stream by the write-back

    def known_callers(self, token: str, channel_id: str, called_at: datetime) -> dict[str, datetime]:
        """The calling channels this process knows of, with this call's channel added."""
        callers = dict(self._calls.get(token) or {})
        callers.setdefault(channel_id, called_at)
        return callers

    @property
    def unsynced(self) -> bool:
        """Calls or claims made while Redis was down and not written back yet."""
        return bool(self._unsynced)

    async def record_and_claim_many(self, requests: Sequence[ClaimRequest]) -> list[ClaimResult]:
        """Record each call, claim its candidates and queue their alerts, all in one round trip.

        Applied in order, each call's script atomic on its own, so a later request may assume
        the channels of an earlier one for the same token. A call whose script Redis refused
        (or whose arguments cannot be sent) has `error` set and changed nothing; the others are
        decided. With Redis unreachable every call is decided from this process's copy.
        Other errors of the round trip itself are raised.
        """
        if not requests:
            return []
        results: list[ClaimResult | None] = [None] * len(requests)
        calls: list[tuple[int, list[int], list[bytes]]] = []  # request, candidates in the order sent, args
        for i, request in enumerate(requests):
            try:
                calls.append((i, *self._record_args(request)))
            except (UnicodeError, ValueError, KeyError, IndexError) as exc:
                results[i] = ClaimResult({}, [], claimed=False, error=exc)
        try:
            async with self.redis.guarded() as client:
                replies = await self._eval_many(
                    client,
                    self._record_script,
                    [
                        ([token_calls_key(requests[i].token), processed_key(requests[i].token), STREAM_KEY], args)
                        for i, _, args in calls
                    ],
                )
        except RedisUnavailable:
            return [
                result if result is not None else self._decide_locally(request)
                for request, result in zip(requests, results)
            ]
        for (i, sent, _), reply in zip(calls, replies):
            request = requests[i]
            if isinstance(reply, Exception):
                results[i] = ClaimResult({}, [], claimed=False, error=reply)
                continue
            claimed, flags, *flat = reply
            callers = {flat[j]: self._time(flat[j + 1], request.called_at) for j in range(0, len(flat), 2)}
            self._calls[request.token] = callers
            if not claimed:
                results[i] = ClaimResult(callers, [], claimed=False)
                continue
            self._remember(request.token, request.candidates)
            won = {user for user, flag in zip(sent, flags) if flag == "1"}
            results[i] = ClaimResult(callers, [user for user in request.candidates if user in won] if won else [])
        return [result for result in results if result is not None]

    def _record_args(self, request: ClaimRequest) -> tuple[list[int], list[bytes]]:
        """The script's arguments, and the candidates in the order they are in them (by group)."""
        args: list[Any] = [
            request.channel_id,
            request.called_at.isoformat(),
            REJECTED_TTL_SECONDS,
            ACCEPTED_TTL_SECONDS,
            1 if request.exact else 0,
            len(request.assumed),
            *request.assumed,
        ]
        head = _encoded(args)
        if not request.candidates:
            return [], head
        alert = request.alert
        if alert is None:  # claim only: one group, nothing to enqueue
            return request.candidates, head + [
                b"0",
                b"",
                b"",
                b"",
                b"0",
                b"0",
                b"0",
                self._id_array(request.candidates),
            ]
        head += _encoded(
            [
                1,
                request.token,
                alert.photo_url or "",
                "" if alert.received_at is None else repr(alert.received_at),
                len(alert.texts),
            ]
        )
        head += _encoded([text for pair in alert.texts for text in pair])
        # Candidates go grouped by (lane, language), so each needs nothing of its own but its id.
        groups: dict[tuple[int, int], list[int]] = {}
        routes = alert.routes
        for user in request.candidates:
            text, lane = routes[user]
            group = groups.get((lane, text))
            if group is None:
                group = groups[(lane, text)] = []
            group.append(user)
        sent: list[int] = []
        for (lane, text), users in groups.items():
            sent += users
            head += [str(int(lane)).encode(), str(text).encode(), self._id_array(users)]
        return sent, head

    def _id_texts(self, user_ids: Sequence[int]) -> list[str]:
        """Ids as decimal text. str(int) costs ~0.2 us, a dict hit a tenth of it, and the same few
        thousand subscribers match call after call."""
        cache = self._texts
        if len(cache) > 1_000_000:
            cache.clear()
        try:
            return [cache[user] for user in user_ids]
        except KeyError:
            for user in user_ids:
                if user not in cache:
                    cache[user] = str(int(user))
            return [cache[user] for user in user_ids]

    def _id_array(self, user_ids: list[int]) -> bytes:
        """A JSON array of the ids as strings (decimal digits need no escaping)."""
        return ('["' + '","'.join(self._id_texts(user_ids)) + '"]').encode() if user_ids else b"[]"

    async def _eval_many(self, client: Any, script: _Script, calls: list[tuple[list[Any], list[bytes]]]) -> list[Any]:
        """One pipeline of EVALSHA calls; each reply is the script's or the error Redis gave it.

        redis-py's own script objects would ask SCRIPT EXISTS before every pipeline, a second
        round trip; instead the script is loaded once and again only when Redis answers NOSCRIPT
        (a restart or SCRIPT FLUSH), which runs nothing.
        """
        if not calls:
            return []
        if script.sha is None:
            script.sha = await client.script_load(script.source)
            self.round_trips += 1
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        self.round_trips += 1
        replies = await pipe.execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            script.sha = None
            again = await self._eval_many(client, script, [calls[i] for i in missing])
            for i, reply in zip(missing, again):
                replies[i] = reply
        return list(replies)

    def _decide_locally(self, request: ClaimRequest) -> ClaimResult:
        """Alone, this process's own knowledge is the whole truth: claim from it, and keep what
        was decided for the write-back."""
        self.local_decisions += 1
        self._calls[request.token] = request.assumed
        known = self._alerted.get(request.token) or set()
        won = [user for user in request.candidates if user not in known]
        self._remember(request.token, request.candidates)
        pending = self._unsynced.pop(request.token, None) or _Unsynced()
        pending.calls.setdefault(request.channel_id, request.called_at)
        pending.claims.update(won)
        self._unsynced[request.token] = pending  # re-inserted: the dict stays oldest first
        while len(self._unsynced) > UNSYNCED_TOKENS_MAX:
            dropped = next(iter(self._unsynced))
            logger.error("too many tokens to write back after the outage; the claims for %s are dropped", dropped)
            del self._unsynced[dropped]
        return ClaimResult(dict(request.assumed), won, local=True)

    def _remember(self, token: str, user_ids: list[int]) -> None:
        alerted = self._alerted.get(token)
        if alerted is None:
            alerted = self._alerted[token] = set()
        # Lost claims were won elsewhere: either way these subscribers have had the alert.
        alerted.update(user_ids)

    def _time(self, text: str, default: datetime) -> datetime:
        """Parsed call times are memoised: the same few strings come back on every re-call."""
        parsed = self._times.get(text)
        if parsed is None:
            try:
                parsed = _parse_time(text)
            except ValueError:
                return default  # not written by this code; the channel still counts as a caller
            if len(self._times) > 100_000:
                self._times.clear()
            self._times[text] = parsed
        return parsed

    def not_known_alerted(self, token: str, user_ids: list[int]) -> list[int]:
        """`user_ids` less those this process knows were alerted (saves Redis work, decides nothing)."""
        alerted = self._alerted.get(token)
        return [user for user in user_ids if user not in alerted] if alerted else user_ids

    async def write_back(self, unsent: Sequence[Alert] = ()) -> list[Alert]:
        """Write the calls and claims made while Redis was down, and `unsent` (alerts of that time
        the sender had not started), into Redis; one script per token, in one round trip.

        An unsent alert goes to the stream unless its subscriber was claimed meanwhile by another
        process. Returns the alerts not written (Redis failed again, or refused their token's
        script): the caller sends them directly; their token's claims stay for the next try.
        """
        pending, self._unsynced = self._unsynced, {}
        by_token: dict[str, list[Alert]] = {}
        for alert in unsent:
            by_token.setdefault(alert.token, []).append(alert)
        tokens = list(dict.fromkeys([*pending, *by_token]))
        if not tokens:
            return []
        calls: list[tuple[list[Any], list[bytes]]] = []
        sendable: list[str] = []
        left: list[Alert] = []
        for token in tokens:
            try:
                calls.append(
                    (
                        [token_calls_key(token), processed_key(token), STREAM_KEY],
                        self._write_back_args(pending.get(token) or _Unsynced(), by_token.get(token, [])),
                    )
                )
                sendable.append(token)
            except UnicodeError as exc:
                logger.error("cannot write back the outage records of a token (%s); dropped", exc)
                left.extend(by_token.get(token, []))
        try:
            async with self.redis.guarded() as client:
                replies = await self._eval_many(client, self._write_back_script, calls)
        except Exception as exc:  # noqa: BLE001 - nothing was written: all of it is tried again
            self._restore(pending)
            if not isinstance(exc, RedisUnavailable):
                logger.error("writing back the outage's claims failed: %s", exc)
            return list(unsent)
        refused: dict[str, _Unsynced] = {}
        for token, reply in zip(sendable, replies):
            if isinstance(reply, Exception):
                logger.error("Redis refused the outage records of token %s: %s; will retry", token, reply)
                if token in pending:
                    refused[token] = pending[token]
                left.extend(by_token.get(token, []))
                continue
            if token in pending:
                self.written_back += len(pending[token].claims)
                for user in pending[token].claims:
                    self._written[(token, user)] = True
            self.reentered += int(reply)
        if refused:
            self._restore(refused)
        return left

    def _write_back_args(self, pending: _Unsynced, unsent: list[Alert]) -> list[bytes]:
        args: list[bytes] = _encoded([REJECTED_TTL_SECONDS, ACCEPTED_TTL_SECONDS, len(pending.calls)])
        for channel, at in pending.calls.items():
            args += _encoded([channel, at.isoformat()])
        args += _encoded([len(pending.claims), *self._id_texts(sorted(pending.claims))])
        for alert in unsent:
            fields = _encoded([part for pair in encode_alert(alert).items() for part in pair])
            own = (alert.token, alert.chat_id) in self._written
            args += _encoded([alert.chat_id, 0 if own else 1, len(fields)]) + fields
        return args

    def _restore(self, pending: dict[str, _Unsynced]) -> None:
        """Put back records whose write-back failed, ahead of those made since."""
        merged = dict(pending)
        for token, later in self._unsynced.items():
            if token in merged:
                merged[token].merge(later)
            else:
                merged[token] = later
        self._unsynced = merged

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


async def seed_from_history(ledger: AlertLedger, postgres: PostgresManager) -> int:
    """Rebuild `ledger`'s alerted records from the alerts PostgreSQL kept; returns how many."""
    rows = await postgres.fetch(RECENT_ALERTS_SQL)
    return await ledger.seed_alerted((r["token_address"], r["telegram_id"], r["created_at"]) for r in rows)
