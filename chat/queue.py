"""How the api puts jobs on arq's queue: one Redis round trip per write, wake-up included.

arq's own `enqueue_job` costs a WATCH/MULTI exchange of four round trips, and a send also needs
its seq claimed and an idle worker woken. The send script does all of it atomically in one call,
writing the job through `chat.arqseam` exactly where and how `enqueue_job` would, so the stock
arq worker runs the jobs unchanged.
"""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis
from arq.utils import timestamp_ms

from chat.arqseam import EXPIRES_EXTRA_MS, LUA_ENQUEUE, Enqueuer, job_body
from chat.jobs import JobPayload, PersistMessage
from chat.sequence import counter_key

# A client_id's claim outlives any plausible queue delay; after that Postgres is the guard.
CLAIM_TTL_SECONDS = 7 * 24 * 3600


def claim_key(message_id: uuid.UUID | str) -> str:
    return f"claim:{message_id}"


# KEYS: counter, queue, [claim key]. ARGV: digest, claim ttl, job head, job tail, job id, score,
# expiry ms, wake channel. Returns {1, seq} new, {0, seq} a repeat of the same body,
# {2, "seq:digest"} a repeat with another body (nothing enqueued), {-1} the counter needs a seed.
_ACCEPT = (
    LUA_ENQUEUE
    + """
local seq
local fresh = 1
if KEYS[3] then
  local existing = redis.call('GET', KEYS[3])
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
  if KEYS[3] then redis.call('SET', KEYS[3], seq .. ':' .. ARGV[1], 'EX', ARGV[2]) end
end
arq_enqueue(KEYS[2], ARGV[5], ARGV[3] .. seq .. ARGV[4], ARGV[6], ARGV[7], ARGV[8])
return {fresh, seq}
"""
)


class Accepted:
    __slots__ = ("conflict", "fresh", "seq")

    def __init__(self, seq: int, *, fresh: bool, conflict: bool = False) -> None:
        self.seq = seq
        self.fresh = fresh
        self.conflict = conflict


class JobQueue:
    def __init__(self, redis: ArqRedis) -> None:
        self._enqueuer = Enqueuer(redis, redis.default_queue_name)
        self._accept = redis.register_script(_ACCEPT)

    async def enqueue(self, function: str, payload: JobPayload, job_id: str) -> bool:
        """Enqueue unless a job with this id is queued, running or finished; wakes a worker."""
        return await self._enqueuer.enqueue(function, [payload.dump()], job_id)

    async def accept_message(
        self, function: str, message: PersistMessage, job_id: str, *, claim_id: uuid.UUID | None, digest: str
    ) -> Accepted | None:
        """Give the message the conversation's next seq and enqueue it, atomically.

        With `claim_id` (a client_id send) a repeat gets the seq of the first send back. Returns
        None when the conversation's counter is missing and must be seeded first.
        """
        now = timestamp_ms()
        payload = message.dump()
        del payload["seq"]  # spliced in by the script once the seq is known
        body = job_body(function, [payload], now)
        head, tail = body[:-3] + b',"seq":', b"}]}"
        keys = [counter_key(message.conversation_id), self._enqueuer.queue_name]
        if claim_id is not None:
            keys.append(claim_key(claim_id))
        args: list[bytes | str | int] = [
            digest,
            CLAIM_TTL_SECONDS,
            head,
            tail,
            job_id,
            now,
            EXPIRES_EXTRA_MS,
            self._enqueuer.wake,
        ]
        result = await self._accept(keys=keys, args=args)
        state = int(result[0])
        if state == -1:
            return None
        if state == 2:
            raw = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            return Accepted(int(raw.split(":", 1)[0]), fresh=False, conflict=True)
        return Accepted(int(result[1]), fresh=state == 1)
