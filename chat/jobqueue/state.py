"""What Redis knows of one job, read in one round trip, with arq's own precedence."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis

from chat.jobqueue.codec import deserialize, ms_to_datetime, read_job, timestamp_ms
from chat.jobqueue.keys import in_progress_key, job_key, result_key, retry_key


@dataclasses.dataclass(frozen=True, slots=True)
class JobState:
    """What Redis knows of one job, read in one round trip."""

    job_id: str
    status: Literal["deferred", "queued", "in_progress", "complete", "not_found"]
    function: str | None
    args: list[Any]
    tries: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    success: bool | None
    result: Any
    worker_id: str | None
    traceback: str | None


async def job_state(redis: Redis, queue_name: str, job_id: str) -> JobState:
    """The job's state with arq's own precedence: result, then in progress, then queued."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(result_key(job_id))
        pipe.get(in_progress_key(job_id))
        pipe.zscore(queue_name, job_id)
        pipe.get(job_key(job_id))
        pipe.get(retry_key(job_id))
        result_raw, holder, score, body, tries_raw = await pipe.execute()
    tries = int(tries_raw) if tries_raw else 0
    holder_id = holder.decode() if holder and holder != b"1" else None
    if result_raw:
        r = deserialize(result_raw)
        return JobState(
            job_id=job_id,
            status="complete",
            function=r["f"],
            args=list(r["a"]),
            tries=int(r["t"] or 0),
            enqueued_at=ms_to_datetime(r["et"]).astimezone(UTC),
            started_at=ms_to_datetime(r["st"]).astimezone(UTC),
            finished_at=ms_to_datetime(r["ft"]).astimezone(UTC),
            success=bool(r["s"]),
            result=r["r"],
            worker_id=r.get("w"),
            traceback=r.get("tb"),
        )
    function, args, enqueued_at = None, [], None
    if body:
        f, a, _k, t, et = read_job(body)
        function, args, enqueued_at = f, list(a), ms_to_datetime(et).astimezone(UTC)
        tries = max(tries, int(t or 0))
    status: Literal["deferred", "queued", "in_progress", "complete", "not_found"]
    if holder is not None:
        status = "in_progress"
    elif score is not None:
        status = "deferred" if score > timestamp_ms() else "queued"
    else:
        status = "not_found"
    return JobState(
        job_id=job_id,
        status=status,
        function=function,
        args=args,
        tries=tries,
        enqueued_at=enqueued_at,
        started_at=None,
        finished_at=None,
        success=None,
        result=None,
        worker_id=holder_id,
        traceback=None,
    )
