"""Jobs finished per minute, for the dashboard's chart: a small hash per queue and minute in Redis.

Workers add their counts in the same transaction that finishes the jobs; the hashes expire after
two hours, so the last hour is always whole and nothing needs cleaning up.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

KEEP_SECONDS = 2 * 3600
OUTCOMES = ("complete", "failed", "retried")


def minute_key(queue_name: str, minute: int) -> str:
    return f"chat:job-stats:{queue_name}:{minute}"


def add(pipe: Pipeline, queue_name: str, counts: dict[str, int]) -> None:
    if not any(counts.values()):
        return
    key = minute_key(queue_name, int(time.time() // 60))
    for outcome, n in counts.items():
        if n:
            pipe.hincrby(key, outcome, n)
    pipe.expire(key, KEEP_SECONDS)


async def history(redis: Redis, queue_name: str, minutes: int = 60) -> list[dict[str, Any]]:
    """One entry per minute, oldest first, ending with the current minute."""
    now = int(time.time() // 60)
    span = range(now - minutes + 1, now + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for minute in span:
            pipe.hgetall(minute_key(queue_name, minute))
        rows = await pipe.execute()
    return [
        {
            "minute": datetime.fromtimestamp(minute * 60, UTC),
            **{outcome: int(row.get(outcome.encode(), 0)) for outcome in OUTCOMES},
        }
        for minute, row in zip(span, rows, strict=True)
    ]
