"""How the api puts jobs on arq's queue: one Redis round trip per write, wake-up included.

arq's own `enqueue_job` costs a WATCH/MULTI exchange of four round trips, and a send also needs
its seq claimed and an idle worker woken. These scripts do all of it atomically in one call,
writing the job exactly where and how arq's `enqueue_job` would (same keys, same JSON job body),
so the stock arq worker runs the jobs unchanged.
"""

from __future__ import annotations

import time
import uuid

import orjson
from arq.connections import ArqRedis
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix

from chat.jobs import JobPayload, PersistMessage, wake_channel
from chat.sequence import counter_key

# A client_id's claim outlives any plausible queue delay; after that Postgres is the guard.
CLAIM_TTL_SECONDS = 7 * 24 * 3600


def claim_key(message_id: uuid.UUID | str) -> str:
    return f"claim:{message_id}"


_ENQUEUE_IF_NEW = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then
  redis.call('PSETEX', KEYS[1], ARGV[4], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
  redis.call('PUBLISH', ARGV[5], '1')
  return 1
end
return 0
"""

# KEYS: counter, job key, result key, queue, [claim key]. ARGV: digest, claim ttl, job head, job tail,
# job id, score, expiry ms, wake channel. Returns {1, seq} new, {0, seq} a repeat of the same body,
# {2, "seq:digest"} a repeat with another body (nothing enqueued), {-1} the counter needs a seed.
_ACCEPT = """
local seq
local fresh = 1
if KEYS[5] then
  local existing = redis.call('GET', KEYS[5])
  if existing then
    local claimed, digest = string.match(existing, '^(%d+):(.*)$')
    if digest ~= ARGV[1] then return {2, existing} end
    seq = tonumber(claimed)
    fresh = 0
  end
end
if not seq then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
  seq = redis.call('INCR', KEYS[1])
  if KEYS[5] then redis.call('SET', KEYS[5], seq .. ':' .. ARGV[1], 'EX', ARGV[2]) end
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  redis.call('PSETEX', KEYS[2], ARGV[7], ARGV[3] .. seq .. ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[5])
  redis.call('PUBLISH', ARGV[8], '1')
end
return {fresh, seq}
"""


class Accepted:
    __slots__ = ("conflict", "fresh", "seq")

    def __init__(self, seq: int, *, fresh: bool, conflict: bool = False) -> None:
        self.seq = seq
        self.fresh = fresh
        self.conflict = conflict


def _job_body(function: str, payload: dict[str, object], enqueued_ms: int) -> bytes:
    # arq's job layout: {"t": tries, "f": function, "a": args, "k": kwargs, "et": enqueue time ms}.
    return orjson.dumps({"t": None, "f": function, "k": {}, "et": enqueued_ms, "a": [payload]})


class JobQueue:
    def __init__(self, redis: ArqRedis) -> None:
        self._queue = redis.default_queue_name
        self._wake = wake_channel(self._queue)
        self._enqueue = redis.register_script(_ENQUEUE_IF_NEW)
        self._accept = redis.register_script(_ACCEPT)

    async def enqueue(self, function: str, payload: JobPayload, job_id: str) -> bool:
        """Enqueue unless a job with this id is queued, running or finished; wakes a worker."""
        now = int(time.time() * 1000)
        body = _job_body(function, payload.dump(), now)
        keys = [job_key_prefix + job_id, result_key_prefix + job_id, self._queue]
        args: list[bytes | str | int] = [body, job_id, now, expires_extra_ms, self._wake]
        return bool(await self._enqueue(keys=keys, args=args))

    async def accept_message(
        self, function: str, message: PersistMessage, job_id: str, *, claim_id: uuid.UUID | None, digest: str
    ) -> Accepted | None:
        """Give the message the conversation's next seq and enqueue it, atomically.

        With `claim_id` (a client_id send) a repeat gets the seq of the first send back. Returns
        None when the conversation's counter is missing and must be seeded first.
        """
        now = int(time.time() * 1000)
        payload = message.dump()
        del payload["seq"]  # spliced in by the script once the seq is known
        body = _job_body(function, payload, now)
        head, tail = body[:-3] + b',"seq":', b"}]}"
        keys = [
            counter_key(message.conversation_id),
            job_key_prefix + job_id,
            result_key_prefix + job_id,
            self._queue,
        ]
        if claim_id is not None:
            keys.append(claim_key(claim_id))
        args: list[bytes | str | int] = [
            digest,
            CLAIM_TTL_SECONDS,
            head,
            tail,
            job_id,
            now,
            expires_extra_ms,
            self._wake,
        ]
        result = await self._accept(keys=keys, args=args)
        state = int(result[0])
        if state == -1:
            return None
        if state == 2:
            raw = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            return Accepted(int(raw.split(":", 1)[0]), fresh=False, conflict=True)
        return Accepted(int(result[1]), fresh=state == 1)
