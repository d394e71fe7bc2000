"""Jobs that failed for good, kept with their args, error and traceback until an operator acts.

Every way a job can fail for good ends here: its last try raised, its tries ran out because its
workers died, it expired before it ran, its function is unknown. Kept in a hash by job id, with a
sorted set by failure time for paging and for the caps on count and age.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chat.domain import cursors
from chat.infra.numbers import parse_int

HASH = "chat:dead-letters"
INDEX = "chat:dead-letters:by-time"

# KEYS: hash, index. ARGV: job id, entry JSON, failed at (ms), max count, oldest kept (ms).
_RECORD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
local over = redis.call('ZCARD', KEYS[2]) - #old - tonumber(ARGV[4])
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], #old, #old + over - 1)) do old[#old + 1] = id end
end
for _, id in ipairs(old) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return #old
"""


async def record(
    client: Redis | Pipeline, entry: dict[str, Any], max_count: int, max_age_seconds: float
) -> None:
    """Add (or replace) an entry, then drop what is over the caps, oldest first."""
    failed_ms = int(datetime.fromisoformat(entry["failed_at"]).timestamp() * 1000)
    oldest = failed_ms - int(max_age_seconds * 1000)
    args: list[str | int | bytes] = [entry["job_id"], orjson.dumps(entry), failed_ms, max_count, oldest]
    # EVAL, not EVALSHA: in a pipeline a registered script costs a SCRIPT EXISTS round trip first.
    command = ("EVAL", _RECORD, 2, HASH, INDEX, *args)
    if isinstance(client, Pipeline):
        client.execute_command(*command)
    else:
        await client.execute_command(*command)  # type: ignore[no-untyped-call]


async def get(redis: Redis, job_id: str) -> dict[str, Any] | None:
    raw = await redis.hget(HASH, job_id)  # type: ignore[misc]
    return orjson.loads(raw) if raw else None


async def discard(redis: Redis, job_id: str) -> bool:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(HASH, job_id)
        pipe.zrem(INDEX, job_id)
        removed, _ = await pipe.execute()
    return bool(removed)


async def count(redis: Redis) -> int:
    return int(await redis.zcard(INDEX))


async def page(
    redis: Redis, *, limit: int, cursor: str | None = None, function: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest failures first; `function` filters by job function. Raises ValueError on a bad cursor."""
    top = "+inf"
    after_id: str | None = None
    if cursor:
        score, after_id = decode_cursor(cursor)
        top = str(score)
    items: list[dict[str, Any]] = []
    offset = 0
    while len(items) <= limit:
        rows = await redis.zrevrangebyscore(INDEX, top, "-inf", start=offset, num=200, withscores=True)
        if not rows:
            break
        offset += len(rows)
        ids = []
        for raw_id, score in rows:
            job_id = raw_id.decode()
            # Entries with the cursor's score up to and including the cursor's id were shown.
            if after_id is not None and int(score) == int(float(top)) and job_id >= after_id:
                continue
            ids.append((job_id, int(score)))
        if not ids:
            continue
        raws = await redis.hmget(HASH, [i for i, _ in ids])  # type: ignore[misc]
        for (_, score), raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            entry = orjson.loads(raw)
            if function is None or entry.get("function") == function:
                entry["_score"] = score
                items.append(entry)
            if len(items) > limit:
                break
    more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor(items[-1]["_score"], items[-1]["job_id"]) if more and items else None
    for entry in items:
        entry.pop("_score", None)
    return items, next_cursor


def encode_cursor(score: int, job_id: str) -> str:
    return cursors.encode(str(score), job_id)


def decode_cursor(raw: str) -> tuple[int, str]:
    score, job_id = cursors.decode(raw, 2)
    return parse_int(score), job_id
