"""The arq internals `chat.jobqueue` and `workers.runtime` rely on, as behaviour against the pinned
arq: what our Lua writes, arq reads; what our worker writes, arq's Job reads; our claim and
requeue keep arq's invariants. An arq upgrade that changes one of them fails here."""

from __future__ import annotations

import inspect
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import arq.constants
from arq import Retry, Worker
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus, deserialize_job_raw, deserialize_result
from redis.asyncio import Redis

from api.deps import Deps
from chat.jobqueue import codec, deadletters, enqueue, keys
from chat.jobqueue.codec import deserialize
from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.jobs import PersistMessage
from chat.jobqueue.lanes import DELIVER_WEBHOOK
from chat.jobqueue.state import job_state
from chat.settings import Settings
from tests.support import ApiClient, services
from tests.support.messages import send
from tests.support.settings import RunWorker
from workers import main as worker_main
from workers.main import FUNCTIONS, create_worker, worker_options
from workers.runtime import ChatWorker


def test_key_layout_is_arqs() -> None:
    assert arq.constants.job_key_prefix == "arq:job:"
    assert arq.constants.in_progress_key_prefix == "arq:in-progress:"
    assert arq.constants.result_key_prefix == "arq:result:"
    assert arq.constants.retry_key_prefix == "arq:retry:"
    assert arq.constants.default_queue_name == "arq:queue"
    assert arq.constants.expires_extra_ms == 86_400_000
    source = inspect.getsource(Worker.run_job)
    # The try counter's life, which the claim script copies.
    assert f"retry_key_prefix + job_id, {keys.RETRY_KEY_SECONDS}" in source


async def test_a_lua_written_job_reads_like_one_from_enqueue_job(deps: Deps) -> None:
    redis: ArqRedis = deps.redis
    payload = {"message_id": str(uuid.uuid4()), "body": 'héllo "quoted"', "n": [1, 2.5, None]}
    await redis.enqueue_job("persist_message", payload, _job_id="from-arq")
    await QueueWriter(redis, deps.settings.queue_name).enqueue("persist_message", [payload], "from-lua")
    ours = deserialize_job_raw(await redis.get(keys.job_key("from-lua")), deserializer=deserialize)
    theirs = deserialize_job_raw(await redis.get(keys.job_key("from-arq")), deserializer=deserialize)
    assert ours[:4] == theirs[:4]  # function, args, kwargs, tries; the enqueue times differ
    assert abs(ours[4] - theirs[4]) < 5000
    for job_id in ("from-lua", "from-arq"):
        assert await redis.zscore(deps.settings.queue_name, job_id) is not None
        assert (await Job(job_id, redis, _deserializer=deserialize).status()) == JobStatus.queued
    # The same id again enqueues nothing, as enqueue_job refuses a second job with one id.
    again = QueueWriter(redis, deps.settings.queue_name)
    assert not await again.enqueue("persist_message", [payload], "from-arq")


async def test_results_chatworker_writes_are_read_by_arq(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, _, cid = await api.pair()
    sent = await send(api, alice, cid, "finished in a batch")
    await run_worker()
    job = Job(sent["job_id"], deps.redis, _deserializer=deserialize)
    assert await job.status() == JobStatus.complete
    info = await job.result_info()
    assert info is not None and info.success and info.result == "stored seq 1" and info.job_try == 1
    assert info.function == "persist_message" and info.args[0]["message_id"] == sent["id"]
    stored = await deps.redis.get(keys.result_key(sent["job_id"]))
    raw = deserialize_result(stored, deserializer=deserialize)
    assert raw.queue_name == deps.settings.queue_name
    # Everything but the result is gone, as arq's finish_job leaves it.
    for key in (keys.job_key, keys.in_progress_key, keys.retry_key):
        assert not await deps.redis.exists(key(sent["job_id"]))
    assert await deps.redis.zscore(deps.settings.queue_name, sent["job_id"]) is None


async def test_a_job_held_by_chatworker_is_in_progress_for_arq(deps: Deps) -> None:
    await deps.redis.enqueue_job("persist_message", {}, _job_id="held")
    await deps.redis.set(keys.in_progress_key("held"), "some-worker-id", px=10_000)
    assert await Job("held", deps.redis, _deserializer=deserialize).status() == JobStatus.in_progress
    state = await job_state(deps.redis, deps.settings.queue_name, "held")
    assert state.status == "in_progress" and state.worker_id == "some-worker-id"


async def test_the_worker_members_only_signals_reach_still_exist(settings: Settings) -> None:
    """What the tests below do not run: a signal's handling, and the constructor's parameters that
    create_worker passes (every other member is used by every run of a worker)."""
    parameters = set(inspect.signature(Worker.__init__).parameters)
    assert set(worker_options(settings)) <= parameters
    assert {"redis_pool", "redis_settings", "burst", "handle_signals", "ctx", "max_burst_jobs"} <= parameters
    worker = Worker(functions=list(FUNCTIONS), redis_settings=None, handle_signals=False)  # type: ignore[arg-type]
    assert callable(worker.handle_sig) and hasattr(worker, "on_stop")
    assert issubclass(ChatWorker, Worker)


async def test_a_sent_message_is_a_job_body_arq_reads_byte_for_byte(api: ApiClient, deps: Deps) -> None:
    """The send script splices the seq into the body it enqueues (codec.seq_splice): arq reads it
    as a job like any other, and it is exactly the body `job_body` writes for that payload."""
    alice, _, cid = await api.pair()
    sent = await send(api, alice, cid, 'spliced "seq" é')
    raw = await deps.redis.get(keys.job_key(sent["job_id"]))
    function, args, kwargs, tries, enqueued_ms = deserialize_job_raw(raw, deserializer=deserialize)
    assert function == "persist_message" and kwargs == {} and tries is None
    [payload] = args
    assert payload["seq"] == 1 and list(payload)[-1] == "seq"
    assert PersistMessage.model_validate(payload).body == 'spliced "seq" é'
    assert raw == codec.job_body(function, args, enqueued_ms)
    job = Job(sent["job_id"], deps.redis, _deserializer=deserialize)
    assert await job.status() == JobStatus.queued
    info = await job.info()
    assert info is not None and info.function == "persist_message" and list(info.args) == [payload]


async def test_a_claim_keeps_arqs_invariants(deps: Deps, settings: Settings) -> None:
    """In progress: the in-progress key set with a PX life, the try counted by INCR (with arq's
    life for the counter), the job still in the queue; arq's Job says in progress."""
    await enqueue.QueueWriter(deps.redis, settings.queue_name).enqueue("persist_message", [{}], "claimed")
    await deps.redis.set(keys.retry_key("claimed"), 2)  # two earlier tries: INCR, not SET 1
    worker = create_worker(settings, handle_signals=False)
    try:
        [(claimed, _)] = await worker._claim({settings.queue_name: 1})
    finally:
        await worker.pool.aclose(close_connection_pool=True)
    assert [(job.id, job.tries) for job in claimed] == [("claimed", 3)]
    life_ms = await deps.redis.pttl(keys.in_progress_key("claimed"))
    assert 0 < life_ms <= int(worker.in_progress_timeout_s * 1000)
    assert await deps.redis.get(keys.in_progress_key("claimed")) == worker.worker_id.encode()
    assert await deps.redis.get(keys.retry_key("claimed")) == b"3"
    assert 0 < await deps.redis.ttl(keys.retry_key("claimed")) <= keys.RETRY_KEY_SECONDS
    assert await deps.redis.zscore(settings.queue_name, "claimed") is not None
    job = Job("claimed", deps.redis, _deserializer=deserialize)
    assert await job.status() == JobStatus.in_progress


async def test_arq_reads_the_failed_and_deferred_jobs_chatworker_finished(
    deps: Deps, settings: Settings
) -> None:
    async def later(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
        raise Retry(defer=60)

    async def broken(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
        raise ValueError("not this one")

    for fn in (later, broken):
        fn.__qualname__ = fn.__name__
    writer = enqueue.QueueWriter(deps.redis, settings.queue_name)
    await writer.enqueue("later", [{}], "later:1")
    await writer.enqueue("broken", [{}], "broken:1")
    worker = create_worker(
        settings,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
        max_burst_jobs=2,
        functions=[later, broken],
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    assert (worker.jobs_retried, worker.jobs_failed) == (1, 1)

    # Deferred: back in the queue at its new due time, only its in-progress key gone.
    deferred = Job("later:1", deps.redis, _deserializer=deserialize)
    assert await deferred.status() == JobStatus.deferred
    assert not await deps.redis.exists(keys.in_progress_key("later:1"))
    assert await deps.redis.get(keys.retry_key("later:1")) == b"1"
    # Failed: a result arq reads as unsuccessful, kept for keep_result; the rest gone.
    failed = Job("broken:1", deps.redis, _deserializer=deserialize)
    assert await failed.status() == JobStatus.complete
    info = await failed.result_info()
    assert info is not None and not info.success and info.function == "broken" and info.job_try == 1
    assert "not this one" in str(info.result)
    life_ms = await deps.redis.pttl(keys.result_key("broken:1"))
    assert 0 < life_ms <= settings.job_keep_result_seconds * 1000
    for key in (keys.job_key, keys.in_progress_key, keys.retry_key):
        assert not await deps.redis.exists(key("broken:1"))
    assert await deps.redis.zscore(settings.queue_name, "broken:1") is None


async def test_a_requeued_dead_letter_is_a_fresh_job_for_arq(deps: Deps, settings: Settings) -> None:
    """The requeue script puts the body back with its PX life and in the queue, with no result and
    no try counted; arq says queued, and a worker runs it as a first try."""
    await enqueue.QueueWriter(deps.redis, settings.queue_name).enqueue("no_such_function", [{}], "dead:1")
    worker = create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01)
    try:
        await worker.main()
    finally:
        await worker.close()
    entry = await deadletters.get(deps.redis, "dead:1")
    assert entry is not None and entry["reason"] == "unknown_function"

    assert await enqueue.requeue_dead_letter(deps.redis, settings.queue_name, entry) == 1
    assert 0 < await deps.redis.pttl(keys.job_key("dead:1")) <= keys.EXPIRES_EXTRA_MS
    assert await deps.redis.zscore(settings.queue_name, "dead:1") is not None
    assert not await deps.redis.exists(keys.result_key("dead:1"), keys.retry_key("dead:1"))
    assert await Job("dead:1", deps.redis, _deserializer=deserialize).status() == JobStatus.queued
    assert await deadletters.get(deps.redis, "dead:1") is None
    # Out of the dead letters: a second requeue finds none and does nothing.
    assert await enqueue.requeue_dead_letter(deps.redis, settings.queue_name, entry) == -1
    worker = create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01)
    try:
        await worker.main()
    finally:
        await worker.close()
    again = await deadletters.get(deps.redis, "dead:1")
    assert again is not None and again["tries"] == 1  # a first try again: the counter was reset


def test_arqs_own_worker_refuses_to_start_and_names_the_command_to_run() -> None:
    """`arq workers.main.WorkerSettings` lacks heartbeats, lanes, the outage rule and most dead
    letters: it stops at start, saying to run `python -m workers` instead."""
    arq_cli = Path(sys.executable).with_name("arq")
    for name in ("WorkerSettings", "WebhookWorkerSettings"):
        done = subprocess.run(
            [str(arq_cli), f"workers.main.{name}"],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, done.stdout
        assert "python -m workers" in done.stderr and "not supported" in done.stderr, done.stderr


async def test_a_worker_claims_from_both_queues_of_a_redis_that_does_not_know_its_script(
    settings: Settings, tmp_path: Path
) -> None:
    # A fresh or restarted Redis has no scripts: the first claim loads it and claims all the same.
    server = services.private_redis(str(tmp_path))
    own = settings.model_copy(update={"redis_url": server.url})
    redis = Redis.from_url(server.url)
    try:
        for round_ in range(2):
            args = {"webhook_id": str(uuid.uuid4()), "delivery_id": str(uuid.uuid4()), "event": {}}
            await QueueWriter(redis, own.webhook_queue_name).enqueue(
                DELIVER_WEBHOOK, [args], f"webhook:{round_}"
            )
            await QueueWriter(redis, own.queue_name).enqueue("no_such_function", [], f"unknown:{round_}")
            worker = worker_main.create_worker(own, burst=True, handle_signals=False, poll_delay=0.01)
            try:
                await worker.main()
            finally:
                await worker.close()
            assert (worker.jobs_complete, worker.jobs_failed) == (1, 1)
            assert await redis.zcard(own.queue_name) == await redis.zcard(own.webhook_queue_name) == 0
            await redis.script_flush()  # as a restart would
    finally:
        await redis.aclose()
        server.stop()


async def test_max_burst_jobs_counts_the_jobs_of_every_lane(settings: Settings, deps: Deps) -> None:
    for n in range(2):
        args = {"webhook_id": str(uuid.uuid4()), "delivery_id": str(uuid.uuid4()), "event": {}}
        await QueueWriter(deps.redis, settings.webhook_queue_name).enqueue(
            DELIVER_WEBHOOK, [args], f"webhook:{n}"
        )
        await QueueWriter(deps.redis, settings.queue_name).enqueue("no_such_function", [], f"unknown:{n}")
    worker = worker_main.create_worker(
        settings, burst=True, handle_signals=False, poll_delay=0.01, max_burst_jobs=3
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    assert worker.jobs_complete + worker.jobs_failed == 3
