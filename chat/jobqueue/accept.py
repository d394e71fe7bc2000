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
from typing import Any, Protocol, cast

import limits
from redis.exceptions import ClusterDownError, NoScriptError

from chat.domain.membership import members_key
from chat.domain.sequence import checked_key, counter_key
from chat.infra.redisclient import is_cluster
from chat.infra.restarts import epoch_key
from chat.jobqueue.codec import seq_splice, timestamp_ms
from chat.jobqueue.connection import ArqRedis
from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.jobs import PERSIST_MESSAGE, JobPayload, PersistMessage
from chat.jobqueue.keys import EXPIRES_EXTRA_MS, wake_channel
from chat.jobqueue.scripts import LUA_ENQUEUE
from chat.jobqueue.shards import shards_of


def claim_key(message_id: uuid.UUID | str, tag: str) -> str:
    """`tag`: the conversation's shard tag (`chat.jobqueue.shards`), "" on one Redis."""
    return f"claim:{tag}{message_id}"


def send_rate_prefix(user_id: uuid.UUID | str) -> str:
    return f"chat:rl:send:{{{user_id}}}:"


class ReplicaUnconfirmed(Exception):
    """ACCEPT_DURABILITY=replica, and no replica confirmed the write in time: the api answers 503."""


# The send limit: a sliding window counter (this window's count plus the last one's, weighted by
# overlap) under the sender's rate key prefix. Returns the ms to wait when over the limit, else
# takes one and returns nil.
LUA_SEND_LIMIT = """
local function over_limit(limit, window, now, key)
  local index = math.floor(now / window)
  local current = tonumber(redis.call('GET', key .. index) or '0')
  local previous = tonumber(redis.call('GET', key .. (index - 1)) or '0')
  local elapsed = now - index * window
  if current + previous * (1 - elapsed / window) >= limit then return window - elapsed end
  redis.call('INCR', key .. index)
  redis.call('PEXPIRE', key .. index, 2 * window)
  return nil
end
"""

# On a cluster the sender's rate keys and the conversation's keys live in different slots, so the
# limit is taken by a call of its own before the send script. KEYS[1] any key of the sender's slot
# (routing only). ARGV: limit, window (ms), now (ms), the sender's rate key prefix. {-5, ms} over.
_SEND_LIMIT = (
    LUA_SEND_LIMIT
    + """
local wait = over_limit(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
if wait then return {-5, wait} end
return {1}
"""
)

# KEYS: counter, queue, members, the counter's checked epoch, the shard's restart epoch, [claim].
# ARGV: digest, claim ttl, job head, job tail, job id, now (ms), expiry ms, wake channel, sender id
# ("" for a system message), send limit (0 = off), its window (ms), the sender's rate key prefix.
# Returns {1, seq} new, {0, seq} a repeat of the same body, {2, "seq:digest"} a repeat with another
# body, {-1} the counter needs a seed (missing, or checked before the shard's last restart epoch:
# `chat.domain.sequence`), {-3} the members need a seed, {-4} not a member, {-5, ms} over the send
# limit for that long, {-6} blocked by the other side of a direct conversation. Membership comes
# first: a non-member learns nothing. A system message has no sender to check (the server key that
# posts it was checked, and limited, by the api).
_ACCEPT = (
    LUA_ENQUEUE
    + LUA_SEND_LIMIT
    + """
if ARGV[9] ~= '' then
  if redis.call('EXISTS', KEYS[3]) == 0 then return {-3} end
  if redis.call('SISMEMBER', KEYS[3], ARGV[9]) == 0 then
    if redis.call('SISMEMBER', KEYS[3], '!' .. ARGV[9]) == 1 then return {-6} end
    return {-4}
  end
end
if KEYS[6] then
  local existing = redis.call('GET', KEYS[6])
  if existing then
    local claimed, digest = string.match(existing, '^(%d+):(.*)$')
    if digest ~= ARGV[1] then return {2, existing} end
    -- Claimed and enqueued in one script: a repeat has nothing left to deliver.
    return {0, tonumber(claimed)}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
if (redis.call('GET', KEYS[4]) or '0') ~= (redis.call('GET', KEYS[5]) or '0') then return {-1} end
local limit = tonumber(ARGV[10])
if limit > 0 then
  local wait = over_limit(limit, tonumber(ARGV[11]), tonumber(ARGV[6]), ARGV[12])
  if wait then return {-5, wait} end
end
local seq = redis.call('INCR', KEYS[1])
if KEYS[6] then redis.call('SET', KEYS[6], seq .. ':' .. ARGV[1], 'EX', ARGV[2]) end
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

    def tag_of(self, key: uuid.UUID) -> str: ...

    async def restore_claims(
        self, conversation_id: uuid.UUID, claims: list[tuple[uuid.UUID, int, str]], ttl_seconds: int
    ) -> None: ...

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
    """The api's side of the queue. `durability="replica"` (ACCEPT_DURABILITY) answers a fresh
    send only once a replica of the queue's Redis has it too (`WAIT 1`)."""

    def __init__(self, redis: ArqRedis, *, durability: str = "none", replica_timeout_ms: int = 500) -> None:
        self._redis = redis
        self._shards = shards_of(redis)
        self._cluster = is_cluster(redis)
        self._enqueuer = QueueWriter(redis, redis.default_queue_name)
        self.accept_script = redis.register_script(_ACCEPT)
        self._limit_script = redis.register_script(_SEND_LIMIT)
        self._durable = durability == "replica"
        self._replica_timeout_ms = replica_timeout_ms

    def tag_of(self, key: uuid.UUID) -> str:
        """The hash tag of the queue shard that carries `key`'s jobs (a conversation, a user)."""
        return self._shards.tag_of(key)

    async def enqueue(self, function: str, payload: JobPayload, job_id: str) -> bool:
        """Enqueue unless a job with this id is queued, running or finished; wakes a worker."""
        return await self._enqueuer.enqueue(function, [payload.dump()], job_id)

    async def restore_claims(
        self, conversation_id: uuid.UUID, claims: list[tuple[uuid.UUID, int, str]], ttl_seconds: int
    ) -> None:
        """Remember client_ids that Postgres knew and Redis had forgotten: (message id, seq, digest)."""
        if not claims:
            return
        tag = self.tag_of(conversation_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id, seq, digest in claims:
                pipe.set(claim_key(message_id, tag), f"{seq}:{digest}", ex=ttl_seconds, nx=True)
            await pipe.execute()

    def _limit(self, send: Send) -> tuple[int, int]:
        limit, sender = send.send_limit, send.message.sender_id
        if limit is None or sender is None:
            return 0, 1000
        return limit.amount, limit.get_expiry() * 1000

    def accept_call(self, send: Send) -> tuple[list[str], list[bytes | str | int]]:
        """The send script's keys and arguments for `send` (the benchmark pipelines them)."""
        message = send.message
        cid = message.conversation_id
        tag = self._shards.tag_of(cid)
        now = timestamp_ms()
        payload = message.dump()
        del payload["seq"]  # spliced in by the script once the seq is known
        head, tail = seq_splice(PERSIST_MESSAGE, payload, now)
        queue = self._enqueuer.queue_for(send.job_id)
        keys = [
            counter_key(cid, tag),
            queue,
            members_key(cid, tag),
            checked_key(cid, tag),
            epoch_key(tag),
        ]
        if send.claims:
            keys.append(claim_key(message.message_id, tag))
        sender = message.sender_id
        # On a cluster the limit is taken beforehand, in the sender's slot (`accept_message`).
        amount, window_ms = (0, 1000) if self._cluster else self._limit(send)
        args: list[bytes | str | int] = [
            send.digest,
            send.claim_ttl_seconds,
            head,
            tail,
            send.job_id,
            now,
            EXPIRES_EXTRA_MS,
            wake_channel(queue),
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
        if self._cluster and send.message.sender_id is not None:
            amount, window_ms = self._limit(send)
            if amount:
                prefix = send_rate_prefix(send.message.sender_id)
                taken = await self._limit_script(
                    keys=[prefix], args=[amount, window_ms, timestamp_ms(), prefix]
                )
                if int(taken[0]) == -5:
                    return RateLimited(int(float(taken[1])))
        keys, args = self.accept_call(send)
        if self._durable:
            result = await self._accept_on_replica(keys, args)
        else:
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

    async def _accept_on_replica(self, keys: list[str], args: list[bytes | str | int]) -> Any:
        """The send script, then WAIT on the same connection: Redis counts the replicas that have
        this connection's writes. A repeat waits too: its first send may not have reached one."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.execute_command("EVALSHA", self.accept_script.sha, len(keys), *keys, *args)
            wait: tuple[Any, ...] = ("WAIT", 1, self._replica_timeout_ms)
            if self._cluster:
                # WAIT names no key: sent to the node that ran the script, in the same batch.
                node = cast(Any, self._redis).get_node_from_key(keys[0])
                if node is None:  # mid-failover: no master serves the slot yet
                    raise ClusterDownError("no master serves the conversation's slot yet")  # type: ignore[no-untyped-call]
                pipe.execute_command(*wait, target_nodes=node)
            else:
                pipe.execute_command(*wait)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except AttributeError as exc:
                # redis-py's cluster pipeline, routing a command whose slot no master serves yet
                # (mid-failover), trips over the missing node: the cluster is down for this slot.
                raise ClusterDownError("no master serves the conversation's slot yet") from exc  # type: ignore[no-untyped-call]
        result, confirmed = replies
        if isinstance(result, NoScriptError):
            await self._redis.script_load(_ACCEPT)
            return await self._accept_on_replica(keys, args)
        if isinstance(result, BaseException):
            raise result
        if int(result[0]) in (0, 1, 2) and (isinstance(confirmed, BaseException) or int(confirmed) < 1):
            raise ReplicaUnconfirmed("no replica of the queue's Redis confirmed the write in time")
        return result
