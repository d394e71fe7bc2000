"""Dead letters, for admins (`/admin/dead-letters`) and operators (`headless-chat jobs`): list
them, show one, put one back on its queue, or discard it."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from chat.errors import Conflict, NotFound, field_error
from chat.jobqueue import deadletters
from chat.jobqueue.enqueue import requeue_dead_letter
from chat.jobqueue.lanes import Queues


async def page(
    redis: Redis, *, limit: int, cursor: str | None = None, function: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The newest dead letters (of one function, if given) after `cursor`, and the next cursor."""
    try:
        return await deadletters.page(redis, limit=limit, cursor=cursor, function=function)
    except ValueError:
        raise field_error("query.cursor", "Not a cursor this endpoint issued.") from None


async def show(redis: Redis, job_id: str) -> dict[str, Any]:
    entry = await deadletters.get(redis, job_id)
    if entry is None:
        raise NotFound("No such dead letter.")
    return entry


async def retry(redis: Redis, queues: Queues, job_id: str) -> None:
    """Put the dead letter back on its function's queue (the shard its id names) with its tries
    reset; 404 if there is no such dead letter, 409 if the job is queued or running again already."""
    entry = await show(redis, job_id)
    done = await requeue_dead_letter(redis, queues.for_function(entry["function"], job_id), entry)
    if done == -1:
        raise NotFound("No such dead letter.")
    if done == 0:
        raise Conflict("This job is queued or running again already.")


async def discard(redis: Redis, job_id: str) -> None:
    if not await deadletters.discard(redis, job_id):
        raise NotFound("No such dead letter.")
