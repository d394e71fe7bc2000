"""Workers and the job admin over queue shards: each test runs on one shard (the keys of one Redis,
untagged) and on four (QUEUE_SHARDS=4: every key tagged, so the sharded paths run on the run's
Redis, a standalone one or a cluster under TEST_REDIS_MODE=cluster)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from api.deps import Deps
from chat.cli import set_admin
from chat.jobqueue import deadletters, heartbeats, jobstats, keys, monitor
from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.lanes import Queues
from chat.jobqueue.shards import shards_of
from chat.settings import Settings
from chat.usecases import deadletters as dead_letter_admin
from tests.support import ApiClient
from workers.main import create_worker
from workers.runtime import ChatWorker


@pytest.fixture(params=[1, 4], ids=["one-shard", "four-shards"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    return settings.model_copy(update={"queue_shards": request.param})


def _ids(deps: Deps, per_shard: int, prefix: str = "job") -> list[str]:
    """Job ids carrying each shard's tag in turn, as the api's ids do."""
    shards = shards_of(deps.redis)
    return [f"{prefix}:{shards.tag(k)}{n}" for n in range(per_shard) for k in shards.all]


async def _enqueue(deps: Deps, function: str, job_ids: list[str]) -> None:
    writer = QueueWriter(deps.redis, deps.settings.queue_name)
    for job_id in job_ids:
        assert await writer.enqueue(function, [{}], job_id)


async def _run(worker: ChatWorker) -> None:
    try:
        await worker.main()
    finally:
        await worker.close()


async def test_jobs_on_every_shard_are_claimed_and_finished_within_the_lanes_slots(
    deps: Deps, settings: Settings
) -> None:
    running = 0
    most = 0

    async def work(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return str(ctx["job_id"])

    work.__qualname__ = "work"
    job_ids = _ids(deps, 5)
    await _enqueue(deps, "work", job_ids)
    worker = create_worker(
        settings, burst=True, handle_signals=False, poll_delay=0.01, max_jobs=3, functions=[work]
    )
    await _run(worker)

    assert worker.jobs_complete == len(job_ids)
    assert 1 < most <= 3  # the lane's three slots, shared by its shards, never more
    for job_id in job_ids:
        assert await deps.redis.exists(keys.result_key(job_id))
    queues = Queues.from_settings(settings)
    for queue in queues.shard_queues(queues.messages):
        assert await deps.redis.zcard(queue) == 0
    for tag in heartbeats.all_tags(deps.redis):
        assert not await deps.redis.exists(heartbeats.held_key(worker.worker_id, tag))
    minutes = await jobstats.history(deps.redis, queues.shard_queues(queues.messages), 2)
    assert sum(m["complete"] for m in minutes) == len(job_ids)


async def test_a_lanes_free_slots_are_split_over_its_shards_woken_ones_first(settings: Settings) -> None:
    worker = create_worker(settings, handle_signals=False, max_jobs=10)
    try:
        lane = settings.queue_name
        shards = [s.queue for s in worker.shard_queues[lane]]
        polled = worker._split({lane: 10}, None)
        assert sum(polled.values()) == 10 and set(polled) == set(shards)
        hot = worker._split({lane: 10}, {shards[-1]})
        assert sum(hot.values()) == 10 and hot[shards[-1]] == max(hot.values())
        # With shards, the woken one and one other in rotation; alone, the one queue gets all.
        assert len(hot) == min(2, len(shards))
        few = worker._split({lane: 1}, None)
        assert list(few.values()) == [1]
    finally:
        await worker.close()


async def test_a_wake_up_on_any_shard_brings_its_job_at_once(deps: Deps, settings: Settings) -> None:
    """A listening worker polls every five seconds; each shard's enqueue wakes it."""
    worker = create_worker(settings, handle_signals=False)
    running = asyncio.create_task(worker.main())
    try:
        deadline = time.monotonic() + 10
        while not worker._listening:
            assert time.monotonic() < deadline, "the worker never subscribed"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the claim the subscription triggers finds nothing
        shards = shards_of(deps.redis)
        for k in shards.all:
            job_id = f"erase:{shards.tag(k)}{uuid.uuid4()}"
            await QueueWriter(deps.redis, settings.queue_name).enqueue("no_such_function", [{}], job_id)
            started = time.monotonic()
            while await deadletters.get(deps.redis, job_id) is None:
                assert time.monotonic() - started < 2, f"shard {k}'s job waited for the poll"
                await asyncio.sleep(0.01)
    finally:
        worker.handle_sig(15)  # type: ignore[arg-type]
        await running
        await worker.close()


async def test_a_dead_workers_jobs_on_every_shard_are_released(deps: Deps, settings: Settings) -> None:
    job_ids = _ids(deps, 2, "persist")
    await _enqueue(deps, "work", job_ids)
    dying = create_worker(settings, handle_signals=False, max_jobs=50)
    claims = await dying._claim({s.queue: 10 for s in dying.shard_queues[settings.queue_name]})
    assert sorted(job.id for claimed, _ in claims for job in claimed) == sorted(job_ids)
    await heartbeats.beat(deps.redis, dying._record(), 0.05, dying._tags)
    assert [w["id"] for w in await heartbeats.live(deps.redis)] == [dying.worker_id]
    await dying.pool.aclose(close_connection_pool=True)
    await asyncio.sleep(0.1)  # its record expires: it stopped beating

    dead, released = await heartbeats.reap(deps.redis)
    assert dead == [dying.worker_id]
    assert sorted(released) == sorted(job_ids)
    for job_id in job_ids:
        assert not await deps.redis.exists(keys.in_progress_key(job_id))
    assert await heartbeats.live(deps.redis) == []

    async def work(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        return None

    work.__qualname__ = "work"
    heir = create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01, functions=[work])
    await _run(heir)
    assert heir.jobs_complete == len(job_ids)


async def test_dead_letters_on_two_shards_are_listed_counted_and_retried(
    deps: Deps, settings: Settings
) -> None:
    shards = shards_of(deps.redis)
    last = shards.count - 1
    job_ids = [f"edit:{shards.tag(0)}{uuid.uuid4()}", f"edit:{shards.tag(last)}{uuid.uuid4()}"]
    for job_id in job_ids:
        await _enqueue(deps, "no_such_function", [job_id])
        await asyncio.sleep(0.002)  # failed one after the other: the page's order
    worker = create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01)
    await _run(worker)

    assert await deadletters.count(deps.redis) == 2
    listed, cursor = await deadletters.page(deps.redis, limit=10)
    assert {e["job_id"] for e in listed} == set(job_ids) and cursor is None
    first, cursor = await deadletters.page(deps.redis, limit=1)
    second, end = await deadletters.page(deps.redis, limit=1, cursor=cursor)
    assert [e["job_id"] for e in first + second] == [e["job_id"] for e in listed] and end is None
    if last:
        assert await deps.redis.hlen(deadletters.hash_key(shards.tag(last))) == 1  # type: ignore[misc]
    counts = await monitor.queue_counts(deps.redis, Queues.from_settings(settings).every)
    assert counts["dead"] == 2

    queues = Queues.from_settings(settings)
    for job_id in job_ids:
        await dead_letter_admin.retry(deps.redis, queues, job_id)
        assert await deps.redis.zscore(queues.for_job(job_id), job_id) is not None
        assert await deadletters.get(deps.redis, job_id) is None
        view = await monitor.job_detail(deps.redis, queues.for_job(job_id), job_id)
        assert view is not None and view["status"] == "queued"
    assert await deadletters.count(deps.redis) == 0


async def test_admin_queue_sums_every_shard(api: ApiClient, deps: Deps, settings: Settings) -> None:
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    job_ids = _ids(deps, 2, "persist")
    await _enqueue(deps, "persist_message", job_ids)
    await deps.redis.set(keys.in_progress_key(job_ids[-1]), "w-1")
    shards = shards_of(deps.redis)
    delivery = f"webhook:{shards.tag(shards.count - 1)}{uuid.uuid4()}"
    await QueueWriter(deps.redis, settings.webhook_queue_name).enqueue("deliver_webhook", [{}], delivery)
    record = {"id": "w-1", "started_at": "2026-12-04T00:00:00Z", "last_beat_at": "2026-12-04T00:00:01Z"}
    await heartbeats.beat(deps.redis, record, ttl_seconds=5)

    stats = (await api.get("/admin/queue", admin)).json
    assert (stats["queued"], stats["in_progress"], stats["workers"]) == (len(job_ids), 1, 1)
    assert stats["functions"]["persist_message"] == {"queued": len(job_ids) - 1, "in_progress": 1}
    assert stats["functions"]["deliver_webhook"] == {"queued": 1, "in_progress": 0}
    workers = (await api.get("/admin/workers", admin)).json["items"]
    assert [w["id"] for w in workers] == ["w-1"]
    job = (await api.get(f"/admin/jobs/{job_ids[-1]}", admin)).json
    assert (job["status"], job["worker_id"]) == ("in_progress", "w-1")
