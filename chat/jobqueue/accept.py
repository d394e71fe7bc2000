"""How the api puts jobs on arq's queue: one Redis round trip per write, wake-up included.

arq's own `enqueue_job` costs a WATCH/MULTI exchange of four round trips, and a send also needs
its seq claimed and an idle worker woken. The send script does all of it atomically in one call,
writing the job exactly where and how `enqueue_job` would (`chat.jobqueue.scripts.LUA_ENQUEUE`),
with the seq spliced into its body (`chat.jobqueue.codec.seq_splice`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import limits

from chat.domain.membership import members_key
from chat.domain.sequence import counter_key
from chat.jobqueue.codec import seq_splice, timestamp_ms
from chat.jobqueue.connection import ArqRedis
from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.jobs import PERSIST_MESSAGE, JobPayload, PersistMessage
from chat.jobqueue.keys import EXPIRES_EXTRA_MS
from chat.jobqueue.scripts import LUA_ENQUEUE


def claim_key(message_id: uuid.UUID | str) -> str:
    return f"claim:{message_id}"


def send_rate_prefix(user_id: uuid.UUID | str) -> str:
    return f"chat:rl:send:{user_id}:"


# KEYS: counter, queue, members, [claim]. ARGV: digest, claim ttl, job head, job tail, job id,
# now (ms), expiry ms, wake channel, sender id ("" for a system message), send limit (0 = off), its
# window (ms), the sender's rate key prefix.
# Returns {1, seq} new, {0, seq} a repeat of the same body, {2, "seq:digest"} a repeat with another
# body, {-1} the counter needs a seed, {-3} the members need a seed, {-4} not a member,
# {-5, ms} over the send limit for that long, {-6} blocked by the other side of a direct
# conversation. Membership comes first: a non-member learns nothing. A system message has no
# sender to check (the server key that posts it was checked, and limited, by the api).
_ACCEPT = (
    LUA_ENQUEUE
    + """
if ARGV[9] ~= '' then
  if redis.call('EXISTS', KEYS[3]) == 0 then return {-3} end
  if redis.call('SISMEMBER', KEYS[3], ARGV[9]) == 0 then
    if redis.call('SISMEMBER', KEYS[3], '!' .. ARGV[9]) == 1 then return {-6} end
    return {-4}
  end
end
if KEYS[4] then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    local claimed, digest = string.match(existing, '^(%d+):(.*)$')
    if digest ~= ARGV[1] then return {2, existing} end
    -- Claimed and enqueued in one script: a repeat has nothing left to deliver.
    return {0, tonumber(claimed)}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local limit = tonumber(ARGV[10])
if limit > 0 then
  -- A sliding window counter: this window's count plus the last one's, weighted by overlap.
  local window, now = tonumber(ARGV[11]), tonumber(ARGV[6])
  local index = math.floor(now / window)
  local key = ARGV[12]
  local current = tonumber(redis.call('GET', key .. index) or '0')
  local previous = tonumber(redis.call('GET', key .. (index - 1)) or '0')
  local elapsed = now - index * window
  if current + previous * (1 - elapsed / window) >= limit then return {-5, window - elapsed} end
  redis.call('INCR', key .. index)
  redis.call('PEXPIRE', key .. index, 2 * window)
end
local seq = redis.call('INCR', KEYS[1])
if KEYS[4] then redis.call('SET', KEYS[4], seq .. ':' .. ARGV[1], 'EX', ARGV[2]) end
arq_enqueue(KEYS[2], ARGV[5], ARGV[3] .. seq .. ARGV[4], ARGV[6], ARGV[7], ARGV[8])
return {1, seq}
"""
)


class Accepted:
    __slots__ = ("conflict", "fresh", "seq")

    def __init__(self, seq: int, *, fresh: bool, conflict: bool = False) -> None:
        self.seq = seq
        self.fresh = fresh
        self.conflict = conflict


class NeedsSeed(Enum):
    """What the send script could not decide without Postgres."""

    COUNTER = -1
    MEMBERS = -3


class NotMember:
    __slots__ = ()


class Blocked:
    __slots__ = ()


class RateLimited:
    __slots__ = ("retry_after_ms",)

    def __init__(self, retry_after_ms: int) -> None:
        self.retry_after_ms = retry_after_ms


class Enqueuer(Protocol):
    """What the api asks of the queue; JobQueue is the Redis one, a test may hand in a recorder."""

    async def enqueue(self, function: str, payload: JobPayload, job_id: str) -> bool: ...

    async def restore_claims(self, claims: list[tuple[uuid.UUID, int, str]], ttl_seconds: int) -> None: ...

    async def accept_message(
        self, send: Send
    ) -> Accepted | NeedsSeed | NotMember | Blocked | RateLimited: ...


@dataclass(frozen=True, slots=True)
class Send:
    """A message write for the send script: the job, and what decides whether it goes in."""

    message: PersistMessage
    job_id: str
    digest: str  # of the body, for a repeated client_id
    claim_ttl_seconds: int
    send_limit: limits.RateLimitItem | None
    # A client_id send claims the message id, so that a repeat gets the first seq back.
    claims: bool = False


class JobQueue:
    def __init__(self, redis: ArqRedis) -> None:
        self._redis = redis
        self._enqueuer = QueueWriter(redis, redis.default_queue_name)
        self.accept_script = redis.register_script(_ACCEPT)

    async def enqueue(self, function: str, payload: JobPayload, job_id: str) -> bool:
        """Enqueue unless a job with this id is queued, running or finished; wakes a worker."""
        return await self._enqueuer.enqueue(function, [payload.dump()], job_id)

    async def restore_claims(self, claims: list[tuple[uuid.UUID, int, str]], ttl_seconds: int) -> None:
        """Remember client_ids that Postgres knew and Redis had forgotten: (message id, seq, digest)."""
        if not claims:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id, seq, digest in claims:
                pipe.set(claim_key(message_id), f"{seq}:{digest}", ex=ttl_seconds, nx=True)
            await pipe.execute()

    def accept_call(self, send: Send) -> tuple[list[str], list[bytes | str | int]]:
        """The send script's keys and arguments for `send` (the benchmark pipelines them)."""
        message, send_limit = send.message, send.send_limit
        now = timestamp_ms()
        payload = message.dump()
        del payload["seq"]  # spliced in by the script once the seq is known
        head, tail = seq_splice(PERSIST_MESSAGE, payload, now)
        keys = [
            counter_key(message.conversation_id),
            self._enqueuer.queue_name,
            members_key(message.conversation_id),
        ]
        if send.claims:
            keys.append(claim_key(message.message_id))
        sender = message.sender_id
        amount, window_ms = (
            (0, 1000)
            if send_limit is None or sender is None
            else (send_limit.amount, send_limit.get_expiry() * 1000)
        )

        args: list[bytes | str | int] = [
            send.digest,
            send.claim_ttl_seconds,
            head,
            tail,
            send.job_id,
            now,
            EXPIRES_EXTRA_MS,
            self._enqueuer.wake,
            "" if sender is None else str(sender),
            amount,
            window_ms,
            "" if sender is None else send_rate_prefix(sender),
        ]
        return keys, args

    async def accept_message(self, send: Send) -> Accepted | NeedsSeed | NotMember | Blocked | RateLimited:
        """Check the sender's membership and send rate (a system message has neither), give the
        message the conversation's next seq and enqueue it, atomically, in one round trip.

        A client_id send (`send.claims`) that repeats gets the seq of the first send back.
        """
        keys, args = self.accept_call(send)
        result = await self.accept_script(keys=keys, args=args)
        state = int(result[0])
        if state in (-1, -3):
            return NeedsSeed(state)
        if state == -4:
            return NotMember()
        if state == -6:
            return Blocked()
        if state == -5:
            return RateLimited(int(float(result[1])))
        if state == 2:
            raw = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            return Accepted(int(raw.split(":", 1)[0]), fresh=False, conflict=True)
        return Accepted(int(result[1]), fresh=state == 1)
