"""A claim that Redis ran but whose answer never reached the worker (the connection dropped
between the two, as when a primary is killed and its replica, which had the claim, takes over):
the job is held in the worker's name while the worker knows nothing of it. Left alone it waits out
its in-progress life (JOB_TIMEOUT + 10 s, 40 s by default) before anyone runs it; the worker
releases what it holds unknowingly before it claims again, and gives the unused try back."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.exceptions
from arq.jobs import deserialize_result

from api.deps import Deps
from chat.jobqueue import heartbeats, keys
from chat.jobqueue.codec import deserialize
from chat.jobqueue.enqueue import QueueWriter
from chat.settings import Settings
from workers import main as worker_main
from workers.runtime import ChatWorker
from workers.runtime.base import Running


def _losing_first_answer(worker: ChatWorker) -> list[int]:
    """Make the worker's first claim run in Redis and then fail as a dropped connection would."""
    claim = worker._claim
    calls: list[int] = []

    async def lost(asks: dict[str, int]) -> Any:
        calls.append(len(calls))
        answer = await claim(asks)
        if len(calls) == 1:
            assert answer[0][0], "the first claim took the job"
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return answer

    worker._claim = lost  # type: ignore[method-assign]
    return calls


async def test_a_job_whose_claim_answer_was_lost_runs_at_once(deps: Deps, settings: Settings) -> None:
    await QueueWriter(deps.redis, settings.queue_name).enqueue("no_such_function", [], "lost-answer")
    worker = worker_main.create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01)
    calls = _losing_first_answer(worker)
    try:
        async with asyncio.timeout(10):  # not the 40 s of the in-progress key
            await worker.main()
    finally:
        await worker.close()
    assert len(calls) >= 2
    assert (worker.jobs_complete, worker.jobs_failed) == (0, 1)
    # Run once, on its first counted try: the claim whose answer was lost did not use one up.
    result = deserialize_result(
        await deps.redis.get(keys.result_key("lost-answer")), deserializer=deserialize
    )
    assert result.job_try == 1
    assert await deps.redis.zcard(settings.queue_name) == 0
    assert not await deps.redis.smembers(heartbeats.held_key(worker.worker_id))  # type: ignore[misc]


async def test_what_the_worker_knows_it_holds_is_not_released(deps: Deps, settings: Settings) -> None:
    # Two jobs claimed together: one is running when a later claim's answer is lost; the release
    # takes only what the worker does not know it holds.
    writer = QueueWriter(deps.redis, settings.queue_name)
    await writer.enqueue("no_such_function", [], "known")
    worker = worker_main.create_worker(settings, handle_signals=False, poll_delay=0.01)
    try:
        [(claimed, _)] = await worker._claim({settings.queue_name: 1})
        running = asyncio.get_running_loop().create_task(_forever())
        worker._running["known"] = Running(running, settings.queue_name)
        await writer.enqueue("no_such_function", [], "unknown")
        await worker._claim({settings.queue_name: 1})  # as if its answer was lost: not started
        worker._unsure.add("")
        released = await worker._release_unknown_claims()
        assert released == {"": ["unknown"]}
        assert await deps.redis.get(keys.in_progress_key("known")) == worker.worker_id.encode()
        assert await deps.redis.get(keys.in_progress_key("unknown")) is None
        assert await deps.redis.get(keys.retry_key("unknown")) == b"0"
        assert await deps.redis.smembers(heartbeats.held_key(worker.worker_id)) == {b"known"}  # type: ignore[misc]
        running.cancel()
    finally:
        await worker.pool.aclose(close_connection_pool=True)
    assert [job.id for job in claimed] == ["known"]


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_the_worker_rides_out_a_cluster_with_a_slot_no_node_serves(
    deps: Deps, settings: Settings
) -> None:
    # Mid-failover a cluster client can find a slot served by no node: redis-py raises
    # SlotNotCoveredError, which is no RedisError. The claim and finish loops wait it out as they
    # wait out a lost connection; it must not end the worker.
    await QueueWriter(deps.redis, settings.queue_name).enqueue("no_such_function", [], "uncovered")
    worker = worker_main.create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01)
    claim, write = worker._claim, worker._write
    failed: list[str] = []

    async def uncovered_claim(asks: dict[str, int]) -> Any:
        if "claim" not in failed:
            failed.append("claim")
            raise redis.exceptions.SlotNotCoveredError("Slot 5 is not covered by the cluster.")
        return await claim(asks)

    async def uncovered_write(batch: Any) -> None:
        if "finish" not in failed:
            failed.append("finish")
            raise redis.exceptions.SlotNotCoveredError("Slot 5 is not covered by the cluster.")
        await write(batch)

    worker._claim = uncovered_claim  # type: ignore[method-assign]
    worker._write = uncovered_write  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(10):
            await worker.main()
    finally:
        await worker.close()
    assert failed == ["claim", "finish"]
    assert worker.jobs_failed == 1
    assert await deps.redis.zcard(settings.queue_name) == 0
