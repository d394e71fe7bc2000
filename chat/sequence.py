"""Per-conversation message numbers, handed out by an atomic counter in Redis.

The counter fixes the order of messages at the moment the api accepts them, however many api
replicas and workers run. When the key is missing (a new conversation, or a Redis that lost it)
it is seeded from Postgres, and a worker that finds its number taken re-seeds it (see workers).
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat.models import Conversation, Message

# Claims for client_id sends outlive any plausible queue delay; after that Postgres is the guard.
CLAIM_TTL_SECONDS = 7 * 24 * 3600


def counter_key(conversation_id: uuid.UUID | str) -> str:
    return f"seq:{conversation_id}"


def claim_key(message_id: uuid.UUID | str) -> str:
    return f"claim:{message_id}"


# KEYS[1] counter, KEYS[2] claim key (client_id sends only). ARGV[1] body digest.
# Returns {1, seq} for a new claim, {0, "seq:digest"} for a repeat, {-1} when the counter needs a seed.
_CLAIM = """
if KEYS[2] then
  local existing = redis.call('GET', KEYS[2])
  if existing then return {0, existing} end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local seq = redis.call('INCR', KEYS[1])
if KEYS[2] then
  redis.call('SET', KEYS[2], seq .. ':' .. ARGV[1], 'EX', ARGV[2])
end
return {1, seq}
"""

# Raise the counter to at least ARGV[1] (never lower it), creating it if missing.
_RAISE = """
local current = redis.call('GET', KEYS[1])
local floor = tonumber(ARGV[1])
if not current or tonumber(current) < floor then
  redis.call('SET', KEYS[1], floor)
  return floor
end
return tonumber(current)
"""


class Claim:
    __slots__ = ("digest", "fresh", "seq")

    def __init__(self, seq: int, fresh: bool, digest: str | None) -> None:
        self.seq = seq
        self.fresh = fresh
        self.digest = digest


class Sequencer:
    def __init__(self, redis: Redis) -> None:
        self._claim = redis.register_script(_CLAIM)
        self._raise = redis.register_script(_RAISE)
        self._redis = redis

    async def claim(
        self, conversation_id: uuid.UUID, message_id: uuid.UUID | None, digest: str
    ) -> Claim | None:
        """The next seq (or, for a repeated client_id, the seq already claimed); None if unseeded."""
        keys = [counter_key(conversation_id)]
        if message_id is not None:
            keys.append(claim_key(message_id))
        result = await self._claim(keys=keys, args=[digest, CLAIM_TTL_SECONDS])
        state = int(result[0])
        if state == -1:
            return None
        if state == 1:
            return Claim(int(result[1]), True, digest)
        raw = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        seq, _, old_digest = raw.partition(":")
        return Claim(int(seq), False, old_digest)

    async def raise_to(self, conversation_id: uuid.UUID, floor: int) -> int:
        return int(await self._raise(keys=[counter_key(conversation_id)], args=[floor]))

    async def next(self, conversation_id: uuid.UUID) -> int:
        return int(await self._redis.incr(counter_key(conversation_id)))

    async def current(self, conversation_id: uuid.UUID) -> int | None:
        value = await self._redis.get(counter_key(conversation_id))
        return int(value) if value is not None else None


async def persisted_max_seq(session: AsyncSession, conversation_id: uuid.UUID) -> int:
    """The highest seq Postgres knows for a conversation: where a lost counter restarts."""
    last = await session.scalar(select(Conversation.last_seq).where(Conversation.id == conversation_id))
    top = await session.scalar(
        select(func.max(Message.seq)).where(Message.conversation_id == conversation_id)
    )
    return max(last or 0, top or 0)
