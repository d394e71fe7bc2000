"""What operators see of the job queue: counts by state and function, latency, workers, health.

Shared by the admin REST routes, the `headless-chat jobs` command line and the worker's metrics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from chat.jobqueue import deadletters, heartbeats
from chat.jobqueue.scripts import COUNT
from chat.jobqueue.state import JobState, job_state

# How many due jobs one count looks at; beyond it the split by state is extrapolated.
SCAN_LIMIT = 100_000


async def queue_counts(
    redis: Redis, queues: str | Sequence[str], *, by_function: bool = False
) -> dict[str, Any]:
    """`{queued, deferred, in_progress, dead, oldest_queued_age_s, workers}` (+ `functions`), over
    one queue or several together (the messages' and the webhook deliveries', each lane's shards):
    one count script per queue, in one round trip."""
    names = [queues] if isinstance(queues, str) else list(queues)
    now_ms = int(time.time() * 1000)
    queued = deferred = in_progress = 0
    oldest = -1
    functions: dict[str, dict[str, int]] = {}
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            # EVAL with the text: a pipeline given a Script object asks SCRIPT EXISTS first.
            pipe.execute_command("EVAL", COUNT, 1, name, now_ms, "1" if by_function else "0", SCAN_LIMIT)
        replies = await pipe.execute()
    for raw in replies:
        due, waiting, running, first, scanned = (int(float(x)) for x in raw[:5])
        if scanned < due and scanned:
            running = round(running * due / scanned)  # a backlog past the scan limit: extrapolate
        queued, deferred, in_progress = queued + due - running, deferred + waiting, in_progress + running
        if first >= 0 and (oldest < 0 or first < oldest):
            oldest = first
        rest = raw[5:]
        for i in range(0, len(rest), 3):
            function = functions.setdefault(_text(rest[i]), {"queued": 0, "in_progress": 0})
            function["queued"] += int(rest[i + 1])
            function["in_progress"] += int(rest[i + 2])
    dead = await deadletters.count(redis)
    workers = await heartbeats.live(redis)
    counts: dict[str, Any] = {
        "queued": queued,
        "deferred": deferred,
        "in_progress": in_progress,
        "dead": dead,
        "oldest_queued_age_s": round(max(0, now_ms - oldest) / 1000, 3) if oldest >= 0 else 0.0,
        "workers": len(workers),
    }
    if by_function:
        counts["functions"] = functions
    return counts


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def check(counts: dict[str, Any], max_latency_s: float | None) -> tuple[int, str]:
    """The exit code of `jobs check`: 0 healthy, 1 no live worker, 2 queue latency over the bound."""
    if counts["workers"] == 0:
        return 1, "no live worker"
    if max_latency_s is not None and counts["oldest_queued_age_s"] > max_latency_s:
        return (
            2,
            f"the oldest queued job has waited {counts['oldest_queued_age_s']} s (bound {max_latency_s} s)",
        )
    return (
        0,
        f"{counts['workers']} worker{'' if counts['workers'] == 1 else 's'}, {counts['queued']} queued,"
        f" oldest {counts['oldest_queued_age_s']} s",
    )


# A job waiting for its retry back-off is still queued, as far as its owner is concerned.
_STATUS = {"deferred": "queued", "queued": "queued", "in_progress": "in_progress", "complete": "complete"}


def job_view(state: JobState) -> dict[str, Any]:
    """The fields of `GET /jobs/{id}`."""
    failed = state.success is False
    return {
        "id": state.job_id,
        "function": state.function,
        "status": "failed" if failed else _STATUS.get(state.status, "not_found"),
        "enqueued_at": state.enqueued_at,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "tries": state.tries,
        "error": str(state.result) if failed else None,
    }


async def job_detail(redis: Redis, queue_name: str, job_id: str) -> dict[str, Any] | None:
    """An admin's view of any job: the `/jobs` fields plus args, worker and traceback; None if unknown.
    `queue_name`: the shard queue the job's id names (`chat.jobqueue.lanes.Queues.for_job`)."""
    state = await job_state(redis, queue_name, job_id)
    view = job_view(state)
    view.update(args=state.args, worker_id=state.worker_id, traceback=state.traceback)
    if state.status != "not_found":
        return view
    dead = await deadletters.get(redis, job_id)
    if dead is None:
        return None
    # The result expired (or was never kept); the dead letter still tells what happened.
    view.update(
        function=dead["function"],
        status="failed",
        args=dead["args"],
        tries=dead["tries"],
        error=dead["error"],
        traceback=dead.get("traceback"),
        worker_id=dead.get("worker_id"),
        enqueued_at=dead.get("enqueued_at"),
        finished_at=dead["failed_at"],
    )
    return view
