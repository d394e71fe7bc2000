"""Per-conversation message numbers, handed out by an atomic counter in Redis.

The counter fixes the order of messages at the moment the api accepts them, however many api
replicas and workers run. When the key is missing (a new conversation, or a Redis that lost it)
it is seeded from Postgres, and a worker that finds its number taken re-seeds it (see workers).
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chat.models import Conversation, Message


def counter_key(conversation_id: uuid.UUID | str) -> str:
    return f"seq:{conversation_id}"


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


class Sequencer:
    def __init__(self, redis: Redis) -> None:
        self._raise = redis.register_script(_RAISE)
        self._redis = redis

    async def raise_to(self, conversation_id: uuid.UUID, floor: int) -> int:
        return int(await self._raise(keys=[counter_key(conversation_id)], args=[floor]))

    async def next(self, conversation_id: uuid.UUID) -> int:
        return int(await self._redis.incr(counter_key(conversation_id)))

    async def current(self, conversation_id: uuid.UUID) -> int | None:
        value = await self._redis.get(counter_key(conversation_id))
        return int(value) if value is not None else None


async def persisted_max_seq(session: AsyncSession | AsyncConnection, conversation_id: uuid.UUID) -> int:
    """The highest seq Postgres knows for a conversation: where a lost counter restarts."""
    last = await session.scalar(select(Conversation.last_seq).where(Conversation.id == conversation_id))
    top = await session.scalar(
        select(func.max(Message.seq)).where(Message.conversation_id == conversation_id)
    )
    return max(last or 0, top or 0)
