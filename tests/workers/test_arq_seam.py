"""The arq internals `chat.arqseam` relies on: an arq upgrade that changes one of them fails here."""

from __future__ import annotations

import inspect
import uuid
from pathlib import Path

import arq.constants
import pytest
from arq import Worker
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus, deserialize_job_raw, deserialize_result
from redis.asyncio import Redis

from api.deps import Deps
from chat import arqseam
from chat.arqseam import ChatWorker, QueueWriter, deserialize, serialize
from chat.queues import DELIVER_WEBHOOK
from chat.settings import Settings
from tests.support import ApiClient, services
from tests.support.messages import send, stored_count
from tests.support.settings import RunWorker
from workers import main as worker_main
from workers.main import FUNCTIONS, arq_cli_settings, worker_options


def test_key_layout_is_arqs() -> None:
    assert arq.constants.job_key_prefix == "arq:job:"
    assert arq.constants.in_progress_key_prefix == "arq:in-progress:"
    assert arq.constants.result_key_prefix == "arq:result:"
    assert arq.constants.retry_key_prefix == "arq:retry:"
    assert arq.constants.default_queue_name == "arq:queue"
    assert arq.constants.expires_extra_ms == 86_400_000
    source = inspect.getsource(Worker.run_job)
    # The try counter's life, which the claim script copies.
    assert f"retry_key_prefix + job_id, {arqseam.RETRY_KEY_SECONDS}" in source


async def test_a_lua_written_job_reads_like_one_from_enqueue_job(deps: Deps) -> None:
    redis: ArqRedis = deps.redis
    payload = {"message_id": str(uuid.uuid4()), "body": 'héllo "quoted"', "n": [1, 2.5, None]}
    await redis.enqueue_job("persist_message", payload, _job_id="from-arq")
    await QueueWriter(redis, deps.settings.queue_name).enqueue("persist_message", [payload], "from-lua")
    ours = deserialize_job_raw(await redis.get(arqseam.job_key("from-lua")), deserializer=deserialize)
    theirs = deserialize_job_raw(await redis.get(arqseam.job_key("from-arq")), deserializer=deserialize)
    assert ours[:4] == theirs[:4]  # function, args, kwargs, tries; the enqueue times differ
    assert abs(ours[4] - theirs[4]) < 5000
    for job_id in ("from-lua", "from-arq"):
        assert await redis.zscore(deps.settings.queue_name, job_id) is not None
        assert (await Job(job_id, redis, _deserializer=deserialize).status()) == JobStatus.queued
    # The same id again enqueues nothing, as enqueue_job refuses a second job with one id.
    again = QueueWriter(redis, deps.settings.queue_name)
    assert not await again.enqueue("persist_message", [payload], "from-arq")


async def test_the_stock_arq_worker_runs_a_job_the_api_wrote(
    api: ApiClient, deps: Deps, settings: Settings
) -> None:
    alice, _, cid = await api.pair()
    sent = await send(api, alice, cid, "run by arq itself")
    options = {**arq_cli_settings(settings), "burst": True, "handle_signals": False, "poll_delay": 0.01}
    stock = Worker(**options)
    try:
        await stock.main()
    finally:
        # arq's own close() calls redis-py's deprecated close(); the same steps with aclose().
        await worker_main.on_shutdown(stock.ctx)  # type: ignore[arg-type]  # arq's ctx is a plain dict
        await stock.pool.aclose(close_connection_pool=True)
    assert stock.jobs_complete == 1 and stock.jobs_failed == 0
    assert await stored_count(deps, id=uuid.UUID(sent["id"])) == 1
    job = await api.get(f"/jobs/{sent['job_id']}", alice)
    assert job.json["status"] == "complete" and job.json["tries"] == 1


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
    stored = await deps.redis.get(arqseam.result_key(sent["job_id"]))
    raw = deserialize_result(stored, deserializer=deserialize)
    assert raw.queue_name == deps.settings.queue_name
    # Everything but the result is gone, as arq's finish_job leaves it.
    for key in (arqseam.job_key, arqseam.in_progress_key, arqseam.retry_key):
        assert not await deps.redis.exists(key(sent["job_id"]))
    assert await deps.redis.zscore(deps.settings.queue_name, sent["job_id"]) is None


async def test_a_job_held_by_chatworker_is_in_progress_for_arq(deps: Deps) -> None:
    await deps.redis.enqueue_job("persist_message", {}, _job_id="held")
    await deps.redis.set(arqseam.in_progress_key("held"), "some-worker-id", px=10_000)
    assert await Job("held", deps.redis, _deserializer=deserialize).status() == JobStatus.in_progress
    state = await arqseam.job_state(deps.redis, deps.settings.queue_name, "held")
    assert state.status == "in_progress" and state.worker_id == "some-worker-id"


async def test_the_worker_members_chatworker_uses_still_exist(settings: Settings) -> None:
    # Async: arq's Worker takes the running event loop instead of making one of its own.
    parameters = set(inspect.signature(Worker.__init__).parameters)
    assert set(worker_options(settings)) <= parameters
    assert {"redis_pool", "redis_settings", "burst", "handle_signals", "ctx", "max_burst_jobs"} <= parameters
    for method in ("main", "close", "handle_sig", "record_health", "_jobs_started", "run", "async_run"):
        assert callable(getattr(Worker, method)), method
    worker = Worker(functions=list(FUNCTIONS), redis_settings=None, handle_signals=False)  # type: ignore[arg-type]
    for attribute in (
        "functions",
        "queue_name",
        "max_jobs",
        "job_timeout_s",
        "keep_result_s",
        "keep_result_forever",
        "poll_delay_s",
        "in_progress_timeout_s",
        "max_tries",
        "burst",
        "max_burst_jobs",
        "ctx",
        "on_startup",
        "on_shutdown",
        "_pool",
        "redis_settings",
        "job_serializer",
        "job_deserializer",
        "expires_extra_ms",
        "allow_pick_jobs",
        "health_check_key",
        "jobs_complete",
        "jobs_failed",
        "jobs_retried",
        "on_stop",
    ):
        assert hasattr(worker, attribute), attribute
    function = worker.functions["persist_message"]
    for attribute in ("coroutine", "timeout_s", "keep_result_s", "keep_result_forever", "max_tries"):
        assert hasattr(function, attribute), attribute
    assert issubclass(ChatWorker, Worker)


async def test_arq_cli_settings_come_from_the_same_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/14")
    monkeypatch.setenv("JOB_TIMEOUT_SECONDS", "30")
    monkeypatch.setenv("WORKER_MAX_JOBS", "7")
    cli = worker_main.WorkerSettings
    stock = Worker(**{**cli, "handle_signals": False})
    assert stock.job_timeout_s == 30 and stock.keep_result_s == 86400 and stock.max_jobs == 7
    assert stock.max_tries == 12 and stock.queue_name == "arq:queue"
    assert stock.job_serializer is serialize and stock.job_deserializer is deserialize
    assert cli["redis_settings"].database == 14
    hooks = Worker(**{**worker_main.WebhookWorkerSettings, "handle_signals": False})
    assert hooks.queue_name == "arq:queue:webhooks" and hooks.max_jobs == 20
    # Dev mode's in-process Redis cannot be joined by another process; resolving still works.
    monkeypatch.setenv("REDIS_URL", "memory://")
    assert worker_main.WorkerSettings["redis_settings"].host == "localhost"


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
