"""A worker's background loops outlive any Redis error: a full Redis (OOM) stops the heartbeat only
while it is full, and the worker is listed and claims again once Redis has room."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from chat.jobqueue import monitor
from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.lanes import DELIVER_WEBHOOK
from chat.jobqueue.state import job_state
from chat.settings import Settings
from tests.support import services
from workers import main as worker_main


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def _fill(redis: Redis) -> None:
    """Leave Redis no room: data past maxmemory, so every write that needs memory answers OOM."""
    await redis.config_set("maxmemory-policy", "noeviction")
    for n in range(40):
        await redis.set(f"filler:{n}", b"x" * 64 * 1024)
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory", str(used - 1024 * 1024))
    with pytest.raises(OutOfMemoryError):
        await redis.set("probe", "1")


async def test_the_heartbeat_comes_back_after_redis_was_out_of_memory(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = services.private_redis(str(tmp_path))
    beats = {"worker_heartbeat_seconds": 0.05, "worker_heartbeat_ttl_seconds": 0.3}
    own = settings.model_copy(update={"redis_url": server.url, **beats})
    redis = Redis.from_url(server.url)
    worker = worker_main.create_worker(own, handle_signals=False, poll_delay=0.05)
    running = asyncio.create_task(worker.main())

    async def listed() -> bool:
        counts = await monitor.queue_counts(redis, [own.queue_name, own.webhook_queue_name])
        return bool(counts["workers"] == 1 and monitor.check(counts, None)[0] == 0)

    async def gone() -> bool:
        return not await listed()

    try:
        await _until(listed, "the worker listed", 10)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="workers.arq"):
            await _fill(redis)
            # Its record expires while every beat is refused, then a few more beats are refused.
            await _until(gone, "the worker's record expired while Redis was full", 10)
            beats_refused = time.monotonic() + 5 * own.worker_heartbeat_seconds
            while time.monotonic() < beats_refused:
                await asyncio.sleep(own.worker_heartbeat_seconds)
            await redis.config_set("maxmemory", "0")
            await _until(listed, "the worker listed again once Redis had room", 10)
        assert not running.done(), running
        heartbeat_lines = [r for r in caplog.records if "heartbeat" in r.getMessage()]
        # One line when the beats start failing and one when they work again, not one per beat.
        assert len(heartbeat_lines) == 2, [r.getMessage() for r in heartbeat_lines]
        assert "OutOfMemoryError" in heartbeat_lines[0].getMessage()

        # And it still claims and finishes a new job (a delivery to a webhook that does not exist).
        job_id = f"webhook:{uuid.uuid4()}"
        args = {"webhook_id": str(uuid.uuid4()), "delivery_id": str(uuid.uuid4()), "event": {}}
        await QueueWriter(redis, own.webhook_queue_name).enqueue(DELIVER_WEBHOOK, [args], job_id)

        async def complete() -> bool:
            state = await job_state(redis, own.webhook_queue_name, job_id)
            return state.status == "complete" and bool(state.success)

        await _until(complete, "the new job completed", 10)
    finally:
        await redis.config_set("maxmemory", "0")
        worker.handle_sig(signal.SIGTERM)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 10)
        await worker.close()
        await redis.aclose()
        server.stop()
