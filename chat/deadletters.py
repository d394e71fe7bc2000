"""Jobs that failed their last try: kept with their args and error until an operator acts."""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

DEAD_LETTERS_KEY = "chat:dead-letters"


async def record(redis: Redis, job_id: str, function: str, args: list[Any], error: str, tries: int) -> None:
    entry = {
        "job_id": job_id,
        "function": function,
        "args": args,
        "error": error,
        "tries": tries,
        "failed_at": time.time(),
    }
    await redis.hset(DEAD_LETTERS_KEY, job_id, orjson.dumps(entry))  # type: ignore[misc, arg-type]


async def entries(redis: Redis) -> list[dict[str, Any]]:
    raw = await redis.hvals(DEAD_LETTERS_KEY)  # type: ignore[misc]
    return sorted((orjson.loads(r) for r in raw), key=lambda e: e["failed_at"])


async def count(redis: Redis) -> int:
    return int(await redis.hlen(DEAD_LETTERS_KEY))  # type: ignore[misc]
