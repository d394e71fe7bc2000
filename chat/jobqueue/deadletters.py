"""Jobs that failed for good, kept with their args, error and traceback until an operator acts.

Every way a job can fail for good ends here: its last try raised, its tries ran out because its
workers died, it expired before it ran, its function is unknown. Kept in a hash by job id, with a
sorted set by failure time for paging and for the caps on count and age.

One hash and index per queue shard (`chat.jobqueue.shards`), in the shard's slot, so that the
transaction that finishes a job records its dead letter and the retry puts it back in one slot:
`chat:dead-letters<tag>` and `chat:dead-letters<tag>:by-time`, where the tag is "" on one Redis.
A job's entry is on the shard its id's tag names; listing and counting merge the shards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chat.domain import cursors
from chat.infra.numbers import parse_int
from chat.infra.redisclient import is_cluster
from chat.jobqueue.heartbeats import all_tags
from chat.jobqueue.shards import shards_of

HASH = "chat:dead-letters"
INDEX = "chat:dead-letters:by-time"


def hash_key(tag: str = "") -> str:
    return f"{HASH}{tag}"


def index_key(tag: str = "") -> str:
    return f"{HASH}{tag}:by-time"


def tag_of_job(redis: Redis, job_id: str) -> str:
    shards = shards_of(redis)
    return shards.tag(shards.shard_of_job(job_id))


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


def stage(
    pipe: Pipeline, entry: dict[str, Any], max_count: int, max_age_seconds: float, tag: str = ""
) -> None:
    """Add (or replace) an entry in the shard of `tag`, then drop what is over the caps there,
    oldest first: as a command in `pipe` (the transaction that finishes the job)."""
    # EVAL, not EVALSHA: in a pipeline a registered script costs a SCRIPT EXISTS round trip first.
    pipe.execute_command(*_record_command(entry, max_count, max_age_seconds, tag))


async def record(
    redis: Redis, entry: dict[str, Any], max_count: int, max_age_seconds: float, tag: str | None = None
) -> None:
    """`stage`, at once; by default in the shard the job's id names."""
    tag = tag_of_job(redis, entry["job_id"]) if tag is None else tag
    await redis.execute_command(*_record_command(entry, max_count, max_age_seconds, tag))  # type: ignore[no-untyped-call]


def _record_command(
    entry: dict[str, Any], max_count: int, max_age_seconds: float, tag: str
) -> tuple[Any, ...]:
    failed_ms = int(datetime.fromisoformat(entry["failed_at"]).timestamp() * 1000)
    oldest = failed_ms - int(max_age_seconds * 1000)
    args: list[str | int | bytes] = [entry["job_id"], orjson.dumps(entry), failed_ms, max_count, oldest]
    return ("EVAL", _RECORD, 2, hash_key(tag), index_key(tag), *args)


async def get(redis: Redis, job_id: str) -> dict[str, Any] | None:
    raw = await redis.hget(hash_key(tag_of_job(redis, job_id)), job_id)  # type: ignore[misc]
    return orjson.loads(raw) if raw else None


async def discard(redis: Redis, job_id: str) -> bool:
    tag = tag_of_job(redis, job_id)
    # A cluster pipeline takes no MULTI; an entry missing from one of the two is harmless.
    async with redis.pipeline(transaction=not is_cluster(redis)) as pipe:
        pipe.hdel(hash_key(tag), job_id)
        pipe.zrem(index_key(tag), job_id)
        removed, _ = await pipe.execute()
    return bool(removed)


async def count(redis: Redis) -> int:
    tags = all_tags(redis)
    if len(tags) == 1:
        return int(await redis.zcard(index_key(tags[0])))
    async with redis.pipeline(transaction=False) as pipe:
        for tag in tags:
            pipe.zcard(index_key(tag))
        return sum(int(n) for n in await pipe.execute())


async def page(
    redis: Redis, *, limit: int, cursor: str | None = None, function: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest failures first; `function` filters by job function. Raises ValueError on a bad cursor.

    Over every shard: each gives its first `limit + 1` after the cursor, in the same order
    (failure time, then job id, both descending), and the merge keeps the first `limit + 1`."""
    top = "+inf"
    after_id: str | None = None
    if cursor:
        score, after_id = decode_cursor(cursor)
        top = str(score)
    items: list[dict[str, Any]] = []
    for tag in all_tags(redis):
        items += await _page_shard(redis, tag, limit, top, after_id, function)
    items.sort(key=lambda entry: (entry["_score"], entry["job_id"]), reverse=True)
    more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor(items[-1]["_score"], items[-1]["job_id"]) if more and items else None
    for entry in items:
        entry.pop("_score", None)
    return items, next_cursor


async def _page_shard(
    redis: Redis, tag: str, limit: int, top: str, after_id: str | None, function: str | None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while len(items) <= limit:
        rows = await redis.zrevrangebyscore(
            index_key(tag), top, "-inf", start=offset, num=200, withscores=True
        )
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
        raws = await redis.hmget(hash_key(tag), [i for i, _ in ids])  # type: ignore[misc]
        for (_, score), raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            entry = orjson.loads(raw)
            if function is None or entry.get("function") == function:
                entry["_score"] = score
                items.append(entry)
            if len(items) > limit:
                break
    return items


def encode_cursor(score: int, job_id: str) -> str:
    return cursors.encode(str(score), job_id)


def decode_cursor(raw: str) -> tuple[int, str]:
    score, job_id = cursors.decode(raw, 2)
    return parse_int(score), job_id
