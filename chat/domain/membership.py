"""Who may send into a conversation, mirrored in Redis so that a send never needs Postgres.

The api's send script checks the set `members:<conversation>`; a participant whom the other side of
a direct conversation blocked is held as `!<id>` and refused with 403. Postgres stays the truth: a
missing set is seeded from it, and every membership change deletes the set after its commit, so
the next send seeds it afresh. A per-conversation generation, bumped by every change, keeps a seed
that read Postgres before a change from being written after it. The set expires after a day, which
bounds how long a change whose invalidation was lost (a crash between commit and delete) can
linger.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from redis.asyncio import Redis

from chat.jobqueue.shards import shards_of

MEMBERS_TTL_SECONDS = 24 * 3600
GENERATION_TTL_SECONDS = 30 * 24 * 3600


def members_key(conversation_id: uuid.UUID | str, tag: str) -> str:
    """`tag`: the conversation's shard tag (`chat.jobqueue.shards`), "" on one Redis."""
    return f"members:{tag}{conversation_id}"


def generation_key(conversation_id: uuid.UUID | str, tag: str) -> str:
    return f"members-gen:{tag}{conversation_id}"


def _keys(redis: Redis, conversation_id: uuid.UUID) -> tuple[str, str]:
    tag = shards_of(redis).tag_of(conversation_id)
    return members_key(conversation_id, tag), generation_key(conversation_id, tag)


async def generation(redis: Redis, conversation_id: uuid.UUID) -> bytes:
    """Read before reading Postgres for a seed; `seed` writes only if it is unchanged."""
    return await redis.get(_keys(redis, conversation_id)[1]) or b"0"


# KEYS: set, generation. ARGV: expected generation, ttl, member ids. 1 written, 0 a change came first.
# SADD in slices of 1,000: Lua's unpack fails past about 8,000 values ("too many results to
# unpack"), and a 10,000-member group's seed is 10,000.
_SEED = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
for first = 3, #ARGV, 1000 do
  redis.call('SADD', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def blocked_member(user_id: uuid.UUID | str) -> str:
    """How the set holds a participant who may not send (the other side of a direct conversation
    blocked them): the send script answers 403 for them instead of 404."""
    return f"!{user_id}"


async def seed(
    redis: Redis,
    conversation_id: uuid.UUID,
    read_at: bytes,
    user_ids: Iterable[uuid.UUID],
    blocked: Iterable[uuid.UUID] = (),
) -> bool:
    refused = set(blocked)
    members = [blocked_member(u) if u in refused else str(u) for u in user_ids]
    if not members:
        return False
    script = redis.register_script(_SEED)
    keys = list(_keys(redis, conversation_id))
    return bool(await script(keys=keys, args=[read_at, MEMBERS_TTL_SECONDS, *members]))


async def changed(redis: Redis, *conversation_ids: uuid.UUID) -> None:
    """Call after a membership change commits: the next send re-reads Postgres."""
    # Not one transaction: on a cluster the conversations live in different slots. Each one's bump
    # still precedes its delete (a pipeline keeps order per connection), which is all a seed needs.
    async with redis.pipeline(transaction=False) as pipe:
        for conversation_id in conversation_ids:
            members_set, bumped = _keys(redis, conversation_id)
            pipe.incr(bumped)
            pipe.expire(bumped, GENERATION_TTL_SECONDS)
            pipe.delete(members_set)
        await pipe.execute()
