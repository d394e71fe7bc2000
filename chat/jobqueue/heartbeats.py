"""Worker heartbeats: who is alive, what each one holds, and releasing what the dead held.

Keys, all owned here, one family per queue shard (`chat.jobqueue.shards`) so that the claim,
finish and release scripts touch one hash slot: `<tag>` is the shard's tag, "" on one Redis.
- `chat:workers<tag>`, a sorted set of the ids of the workers serving the shard (scored by last
  beat, for listing);
- `chat:worker:<tag><id>`, the worker's record as JSON, which expires unless the worker beats
  again: its existence is the one test of being alive (Redis's clock decides, not the workers').
  A worker writes it to every shard it serves;
- `chat:worker:<tag><id>:jobs`, the ids of the jobs it holds from that shard, kept by the claim and
  finish scripts (`chat.jobqueue.scripts`, which also holds the release scripts, `REAP` and
  `RELEASE_UNKNOWN`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from chat.infra.redisclient import is_cluster
from chat.jobqueue.keys import WORKER_RECORD_PREFIX
from chat.jobqueue.scripts import REAP, RELEASE_UNKNOWN
from chat.jobqueue.shards import shards_of

REGISTRY = "chat:workers"
RECORD_PREFIX = WORKER_RECORD_PREFIX


def registry_key(tag: str = "") -> str:
    return f"{REGISTRY}{tag}"


def record_key(worker_id: str, tag: str = "") -> str:
    return f"{RECORD_PREFIX}{tag}{worker_id}"


def held_key(worker_id: str, tag: str = "") -> str:
    return f"{RECORD_PREFIX}{tag}{worker_id}:jobs"


def all_tags(redis: Redis) -> list[str]:
    """The tags of every shard of the layout `redis` talks to ([""] on one Redis)."""
    shards = shards_of(redis)
    return [shards.tag(k) for k in shards.all]


async def beat(
    redis: Redis, record: dict[str, Any], ttl_seconds: float, tags: Sequence[str] | None = None
) -> None:
    """Write the record to each shard the worker serves (`tags`; by default every shard), in one
    round trip."""
    tags = all_tags(redis) if tags is None else tags
    data, ttl_ms, now = orjson.dumps(record), int(ttl_seconds * 1000), time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for tag in tags:
            pipe.set(record_key(record["id"], tag), data, px=ttl_ms)
            pipe.zadd(registry_key(tag), {record["id"]: now})
        await pipe.execute()


async def deregister(redis: Redis, worker_id: str, tags: Sequence[str] | None = None) -> None:
    """A worker that stops cleanly leaves at once instead of after its record expires."""
    tags = all_tags(redis) if tags is None else tags
    # A cluster pipeline takes no MULTI; there each shard's keys go in their own command anyway.
    async with redis.pipeline(transaction=not is_cluster(redis)) as pipe:
        for tag in tags:
            pipe.delete(record_key(worker_id, tag), held_key(worker_id, tag))
            pipe.zrem(registry_key(tag), worker_id)
        await pipe.execute()


async def live(redis: Redis, tags: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every live worker once, whichever shards it serves (by default, of every shard)."""
    tags = all_tags(redis) if tags is None else tags
    async with redis.pipeline(transaction=False) as pipe:
        for tag in tags:
            pipe.zrange(registry_key(tag), 0, -1)
        registries = await pipe.execute()
    keys = [record_key(i.decode(), tag) for tag, ids in zip(tags, registries, strict=True) for i in ids]
    if not keys:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
        records = await pipe.execute()
    found: dict[str, dict[str, Any]] = {}
    for raw in records:
        if raw:
            record = orjson.loads(raw)
            seen = found.get(record["id"])
            if seen is None or record["last_beat_at"] > seen["last_beat_at"]:
                found[record["id"]] = record
    return list(found.values())


async def reap(redis: Redis, tags: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Forget workers whose record expired and release the jobs they held, on each shard (by
    default every shard): (dead ids, job ids). One round trip, one script call per shard."""
    tags = all_tags(redis) if tags is None else tags
    async with redis.pipeline(transaction=False) as pipe:
        for tag in tags:
            # EVAL with the text: a pipeline given a Script object asks SCRIPT EXISTS first.
            pipe.execute_command("EVAL", REAP, 1, registry_key(tag), tag)
        replies = await pipe.execute()
    dead: dict[str, None] = {}
    released: list[str] = []
    for raw in replies:
        count = int(raw[0])
        names = [r.decode() if isinstance(r, bytes) else str(r) for r in raw[1:]]
        dead.update(dict.fromkeys(names[:count]))
        released += names[count:]
    return list(dead), released


async def release_unknown(
    redis: Redis, worker_id: str, tags: Sequence[str], known: Sequence[str]
) -> dict[str, list[str]]:
    """Release the jobs held in the worker's name on the shards of `tags` that are not in `known`:
    claimed by a claim whose answer was lost. One round trip, one script call per shard; the
    released job ids by tag. Only while no claim of the worker's is in flight, or its jobs would be
    released under it."""
    async with redis.pipeline(transaction=False) as pipe:
        for tag in tags:
            pipe.execute_command("EVAL", RELEASE_UNKNOWN, 1, held_key(worker_id, tag), worker_id, *known)
        replies = await pipe.execute()
    return {
        tag: [r.decode() if isinstance(r, bytes) else str(r) for r in raw]
        for tag, raw in zip(tags, replies, strict=True)
        if raw
    }
