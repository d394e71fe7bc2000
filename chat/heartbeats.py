"""Worker heartbeats: who is alive, what each one holds, and releasing what the dead held.

Keys, all owned here:
- `chat:workers`, a sorted set of worker ids (scored by last beat, for listing);
- `chat:worker:<id>`, the worker's record as JSON, which expires unless the worker beats again:
  its existence is the one test of being alive (Redis's clock decides, not the workers');
- `chat:worker:<id>:jobs`, the ids of the jobs it holds, kept by the claim and finish scripts.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

REGISTRY = "chat:workers"
RECORD_PREFIX = "chat:worker:"


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


# KEYS[1] the registry. Returns {number of dead workers, dead id..., released job id...}: a job is
# released (its in-progress key deleted, so any worker may claim it) only while the dead worker
# still holds it, never when another worker has claimed it since.
_REAP = f"""
local dead, released = {{}}, {{}}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', '{RECORD_PREFIX}' .. id) == 0 then
    dead[#dead + 1] = id
    local held = '{RECORD_PREFIX}' .. id .. ':jobs'
    for _, job in ipairs(redis.call('SMEMBERS', held)) do
      local progress = '{in_progress_key_prefix}' .. job
      if redis.call('GET', progress) == id then
        redis.call('DEL', progress)
        released[#released + 1] = job
      end
    end
    redis.call('DEL', held)
    redis.call('ZREM', KEYS[1], id)
  end
end
local out = {{#dead}}
for _, id in ipairs(dead) do out[#out + 1] = id end
for _, job in ipairs(released) do out[#out + 1] = job end
return out
"""


async def reap(redis: Redis) -> tuple[list[str], list[str]]:
    """Forget workers whose record expired and release the jobs they held: (dead ids, job ids)."""
    raw = await redis.register_script(_REAP)(keys=[REGISTRY])
    count = int(raw[0])
    names = [r.decode() if isinstance(r, bytes) else str(r) for r in raw[1:]]
    return names[:count], names[count:]
