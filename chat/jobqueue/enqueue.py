"""Putting jobs on arq's queue in one round trip each, waking idle workers, as `enqueue_job` would;
and putting a dead letter back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chat.jobqueue import deadletters
from chat.jobqueue.codec import job_body, timestamp_ms
from chat.jobqueue.keys import EXPIRES_EXTRA_MS, wake_channel
from chat.jobqueue.scripts import ENQUEUE, REQUEUE
from chat.jobqueue.shards import shards_of


class QueueWriter:
    """Puts jobs on the queue in one round trip each, waking idle workers, as enqueue_job would.

    `queue_name` is the queue's base name: a job goes on the shard its id's tag names
    (`chat.jobqueue.shards`), the one queue on a single Redis."""

    def __init__(self, redis: Redis, queue_name: str) -> None:
        self.queue_name = queue_name
        self.shards = shards_of(redis)
        self._enqueue = redis.register_script(ENQUEUE)

    def queue_for(self, job_id: str) -> str:
        return self.shards.queue_of_job(self.queue_name, job_id)

    async def enqueue(self, function: str, args: Sequence[Any], job_id: str) -> bool:
        """Enqueue unless a job with this id is queued, running or finished."""
        now = timestamp_ms()
        body = job_body(function, args, now)
        queue = self.queue_for(job_id)
        argv: list[bytes | str | int] = [job_id, body, now, EXPIRES_EXTRA_MS, wake_channel(queue)]
        return bool(await self._enqueue(keys=[queue], args=argv))

    def stage(self, pipe: Pipeline, function: str, args: Sequence[Any], job_id: str) -> None:
        """`enqueue` as a command in `pipe`: a job staged in a job's outbox is enqueued in the
        MULTI/EXEC that finishes that job, so both happen or neither does."""
        now = timestamp_ms()
        body = job_body(function, args, now)
        queue = self.queue_for(job_id)
        # EVAL with the text, as RedisPublisher.stage does: EVALSHA in a pipeline asks SCRIPT EXISTS.
        pipe.execute_command(
            "EVAL", ENQUEUE, 1, queue, job_id, body, now, EXPIRES_EXTRA_MS, wake_channel(queue)
        )


async def requeue_dead_letter(redis: Redis, queue_name: str, entry: dict[str, Any]) -> int:
    """Put a dead-lettered job back on the queue with its tries reset, and out of the dead letters.

    1 done, 0 the job is queued or running again already, -1 no such dead letter.
    """
    now = timestamp_ms()
    body = job_body(entry["function"], entry["args"], now)
    script = redis.register_script(REQUEUE)
    tag = deadletters.tag_of_job(redis, entry["job_id"])  # `queue_name` is that shard's queue
    keys = [queue_name, deadletters.hash_key(tag), deadletters.index_key(tag)]
    argv: list[bytes | str | int] = [entry["job_id"], body, now, EXPIRES_EXTRA_MS, wake_channel(queue_name)]
    return int(await script(keys=keys, args=argv))
