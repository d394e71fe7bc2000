"""Worker heartbeats: who is alive, what each one holds, and releasing what the dead held.

Keys, all owned here:
- `chat:workers`, a sorted set of worker ids (scored by last beat, for listing);
- `chat:worker:<id>`, the worker's record as JSON, which expires unless the worker beats again:
  its existence is the one test of being alive (Redis's clock decides, not the workers');
- `chat:worker:<id>:jobs`, the ids of the jobs it holds, kept by the claim and finish scripts
  (`chat.jobqueue.scripts`, which also holds the release script, `REAP`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from chat.jobqueue.keys import WORKER_RECORD_PREFIX
from chat.jobqueue.scripts import REAP

REGISTRY = "chat:workers"
RECORD_PREFIX = WORKER_RECORD_PREFIX


def record_key(worker_id: str) -> str:
    return f"{RECORD_PREFIX}{worker_id}"


def held_key(worker_id: str) -> str:
    return f"{RECORD_PREFIX}{worker_id}:jobs"


async def beat(redis: Redis, record: dict[str, Any], ttl_seconds: float) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(record_key(record["id"]), orjson.dumps(record), px=int(ttl_seconds * 1000))
        pipe.zadd(REGISTRY, {record["id"]: time.time()})
        await pipe.execute()


async def deregister(redis: Redis, worker_id: str) -> None:
    """A worker that stops cleanly leaves at once instead of after its record expires."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(record_key(worker_id), held_key(worker_id))
        pipe.zrem(REGISTRY, worker_id)
        await pipe.execute()


async def live(redis: Redis) -> list[dict[str, Any]]:
    ids = [i.decode() for i in await redis.zrange(REGISTRY, 0, -1)]
    if not ids:
        return []
    records = await redis.mget([record_key(i) for i in ids])
    return [orjson.loads(r) for r in records if r]


async def reap(redis: Redis) -> tuple[list[str], list[str]]:
    """Forget workers whose record expired and release the jobs they held: (dead ids, job ids)."""
    raw = await redis.register_script(REAP)(keys=[REGISTRY])
    count = int(raw[0])
    names = [r.decode() if isinstance(r, bytes) else str(r) for r in raw[1:]]
    return names[:count], names[count:]
