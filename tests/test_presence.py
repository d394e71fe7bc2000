"""chat/realtime/presence.py's socket claim, on the in-process Redis and on the real one (where Lua
really runs)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chat.infra.redisclient import create_redis
from chat.realtime import presence
from tests.support.settings import make_settings


@pytest.fixture(params=["memory", "redis"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    if request.param == "memory":
        url = f"memory://{uuid.uuid4().hex}"
    else:
        url = request.getfixturevalue("redis_url")
    client = create_redis(make_settings(redis_url=url), max_connections=64)
    yield client
    await client.aclose(close_connection_pool=True)


async def test_claims_at_the_same_instant_never_pass_the_cap(redis: Redis) -> None:
    user = uuid.uuid4()
    try:
        # Twenty sockets of one user opening at once (each on its own connection on real Redis).
        admitted = await asyncio.gather(
            *(presence.claim(redis, user, f"c{i}", ttl_seconds=60, cap=3) for i in range(20))
        )
        assert sum(admitted) == 3
        assert await redis.zcard(presence.presence_key(user)) == 3
        online, seen = await presence.status(redis, user)
        assert online and seen is not None
    finally:
        await redis.delete(presence.presence_key(user), presence.last_seen_key(user))


async def test_only_live_entries_count_and_none_means_no_cap(redis: Redis) -> None:
    user = uuid.uuid4()
    key = presence.presence_key(user)
    try:
        # A connection of a crashed push process: its expiry passed and nobody renewed it.
        await redis.zadd(key, {"dead": time.time() - 1})
        assert await presence.claim(redis, user, "a", ttl_seconds=60, cap=1)
        assert not await presence.claim(redis, user, "b", ttl_seconds=60, cap=1)
        await presence.leave(redis, user, "a")
        assert await presence.claim(redis, user, "b", ttl_seconds=60, cap=1)
        for i in range(5):
            assert await presence.claim(redis, user, f"free{i}", ttl_seconds=60, cap=None)
        assert 0 < await redis.ttl(key) <= 120
    finally:
        await redis.delete(key, presence.last_seen_key(user))
