"""Who is connected, kept in Redis by the push processes and read by the api.

Each connection scores itself in a per-user sorted set with an expiry time and renews it on a
heartbeat, so a crashed push process's users go offline by themselves after the TTL. The same set
caps how many sockets one user may hold open across every push process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from redis.asyncio import Redis


# The user id is the hash tag, as in the user's stream and channel (`chat.realtime.eventbus`): on
# a cluster the claim script's two keys share a slot.
def presence_key(user_id: uuid.UUID | str) -> str:
    return f"presence:{{{user_id}}}"


def last_seen_key(user_id: uuid.UUID | str) -> str:
    return f"last_seen:{{{user_id}}}"


async def touch(redis: Redis, user_id: uuid.UUID | str, connection_id: str, ttl_seconds: int) -> None:
    """Mark one connection alive for `ttl_seconds` more and record the user as seen now."""
    await touch_many(redis, [(user_id, connection_id)], ttl_seconds)


async def touch_many(
    redis: Redis, connections: Sequence[tuple[uuid.UUID | str, str]], ttl_seconds: int
) -> None:
    """`touch` for many (user id, connection id) pairs in one round trip."""
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for user_id, connection_id in connections:
            pipe.zadd(presence_key(user_id), {connection_id: now + ttl_seconds})
        for user_id in dict.fromkeys(user for user, _ in connections):
            pipe.zremrangebyscore(presence_key(user_id), "-inf", now)
            pipe.expire(presence_key(user_id), ttl_seconds * 2)
            pipe.set(last_seen_key(user_id), repr(now))
        await pipe.execute()


# Counts the user's live connections (expiry still ahead) and adds this one only while under the
# cap, in one step: two sockets opening at the same instant on two push processes cannot both take
# the last slot. A cap below zero means no cap; the connection is recorded either way.
_CLAIM = """
local key = KEYS[1]
local now = ARGV[1]
local cap = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if cap >= 0 and redis.call('ZCOUNT', key, '(' .. now, '+inf') >= cap then
    return 0
end
redis.call('ZADD', key, ARGV[2], ARGV[3])
redis.call('EXPIRE', key, ARGV[5])
redis.call('SET', KEYS[2], now)
return 1
"""


async def claim(
    redis: Redis, user_id: uuid.UUID | str, connection_id: str, *, ttl_seconds: int, cap: int | None
) -> bool:
    """Mark a new connection alive, unless the user already holds `cap` live ones (None: no cap)."""
    now = time.time()
    admitted = await redis.register_script(_CLAIM)(
        keys=[presence_key(user_id), last_seen_key(user_id)],
        args=[repr(now), repr(now + ttl_seconds), connection_id, -1 if cap is None else cap, ttl_seconds * 2],
    )
    return bool(admitted)


async def leave(redis: Redis, user_id: uuid.UUID | str, connection_id: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrem(presence_key(user_id), connection_id)
        pipe.set(last_seen_key(user_id), repr(time.time()))
        await pipe.execute()


async def status(redis: Redis, user_id: uuid.UUID | str) -> tuple[bool, datetime | None]:
    """(online, last_seen_at) for one user."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(presence_key(user_id), time.time(), "+inf")
        pipe.get(last_seen_key(user_id))
        live, seen = await pipe.execute()
    last_seen = datetime.fromtimestamp(float(seen), UTC) if seen else None
    return bool(live), last_seen


def typing_key(conversation_id: uuid.UUID | str, user_id: uuid.UUID | str) -> str:
    return f"typing:{conversation_id}:{user_id}"


async def typing_slot(
    redis: Redis, conversation_id: uuid.UUID, user_id: uuid.UUID, interval_seconds: float
) -> int | None:
    """Take the user's typing slot in a conversation: None when taken, else ms until it frees."""
    key = typing_key(conversation_id, user_id)
    if await redis.set(key, b"1", nx=True, px=int(interval_seconds * 1000)):
        return None
    return max(int(await redis.pttl(key)), 1)
