"""Per-conversation message numbers, handed out by an atomic counter in Redis.

The counter fixes the order of messages at the moment the api accepts them, however many api
replicas and workers run. When the key is missing (a new conversation, or a Redis that lost it)
it is seeded from Postgres, and a worker that finds its number taken re-seeds it (see workers).

A counter is trusted only while the Redis it lives in has not restarted or failed over since it
was last checked (`chat.infra.restarts`): beside it, `seq-epoch:` holds the restart epoch of that
check, and the send script asks for a seed when the shard's epoch has moved on. A Redis back from
an old snapshot thus never hands out a seq that Postgres already holds.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chat.infra.restarts import epoch_key
from chat.jobqueue.shards import shards_of
from chat.models import Conversation, Message


def counter_key(conversation_id: uuid.UUID | str, tag: str) -> str:
    """`tag`: the conversation's shard tag (`chat.jobqueue.shards`), "" on one Redis."""
    return f"seq:{tag}{conversation_id}"


def checked_key(conversation_id: uuid.UUID | str, tag: str) -> str:
    return f"seq-epoch:{tag}{conversation_id}"


# Raise the counter to at least ARGV[1] (never lower it), creating it if missing, and mark it
# checked against the shard's current restart epoch. KEYS: counter, checked, epoch.
_RAISE = """
local current = redis.call('GET', KEYS[1])
local floor = tonumber(ARGV[1])
redis.call('SET', KEYS[2], redis.call('GET', KEYS[3]) or '0')
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
        self._shards = shards_of(redis)

    def keys(self, conversation_id: uuid.UUID) -> list[str]:
        """The counter, its checked epoch and the shard's restart epoch, as the send script takes them."""
        tag = self._shards.tag_of(conversation_id)
        return [counter_key(conversation_id, tag), checked_key(conversation_id, tag), epoch_key(tag)]

    async def raise_to(self, conversation_id: uuid.UUID, floor: int) -> int:
        return int(await self._raise(keys=self.keys(conversation_id), args=[floor]))

    async def next(self, conversation_id: uuid.UUID) -> int:
        return int(await self._redis.incr(self.keys(conversation_id)[0]))

    async def current(self, conversation_id: uuid.UUID) -> int | None:
        value = await self._redis.get(self.keys(conversation_id)[0])
        return int(value) if value is not None else None


async def persisted_max_seq(session: AsyncSession | AsyncConnection, conversation_id: uuid.UUID) -> int:
    """The highest seq Postgres knows for a conversation: where a lost counter restarts."""
    last = await session.scalar(select(Conversation.last_seq).where(Conversation.id == conversation_id))
    top = await session.scalar(
        select(func.max(Message.seq)).where(Message.conversation_id == conversation_id)
    )
    return max(last or 0, top or 0)
