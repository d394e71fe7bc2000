"""Jobs finished per minute, for the dashboard's chart: a small hash per queue and minute in Redis.

Workers add their counts in the same transaction that finishes the jobs; the hashes expire after
two hours, so the last hour is always whole and nothing needs cleaning up. With queue shards the
counts are kept per shard queue (in its slot, beside the jobs they count) and summed on read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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


async def history(redis: Redis, queue_names: str | Sequence[str], minutes: int = 60) -> list[dict[str, Any]]:
    """One entry per minute, oldest first, ending with the current minute; over several queues
    (a lane's shards), their sum."""
    names = [queue_names] if isinstance(queue_names, str) else list(queue_names)
    now = int(time.time() // 60)
    span = range(now - minutes + 1, now + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for minute in span:
            for name in names:
                pipe.hgetall(minute_key(name, minute))
        rows = await pipe.execute()
    history = []
    for i, minute in enumerate(span):
        shard_rows = rows[i * len(names) : (i + 1) * len(names)]
        entry: dict[str, Any] = {"minute": datetime.fromtimestamp(minute * 60, UTC)}
        for outcome in OUTCOMES:
            entry[outcome] = sum(int(row.get(outcome.encode(), 0)) for row in shard_rows)
        history.append(entry)
    return history
