"""A Postgres outage longer than a job's tries: the jobs wait for it without spending their tries.

Postgres stopped under load used to turn every message accepted early in the outage into a dead
letter once its JOB_MAX_TRIES tries (about 141 s by default) were spent. Here the tries are made
few (3, about 0.6 s of back-off) so that the old rule would dead-letter every message within a
second or two, and Postgres stays down several times that long.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from chat.jobqueue import deadletters
from chat.jobqueue.state import job_state
from chat.settings import Settings
from tests.support import services
from tests.support.chatload import conversation, register, stored_count, until
from tests.support.stack import Stack, stack_env

MAX_TRIES = 3
MESSAGES = 60
DOWN_SECONDS = 6.0  # several times what 3 tries took under the old rule


async def _send(http: aiohttp.ClientSession, user: dict[str, Any], cid: str, n: int) -> dict[str, Any]:
    payload = {"body": f"during the outage {n}", "client_id": f"outage-{n}"}
    url = f"/api/v1/conversations/{cid}/messages"
    async with http.post(url, json=payload, headers=user["headers"]) as answer:
        assert answer.status == 202, await answer.text()
        accepted: dict[str, Any] = await answer.json()
        return accepted


async def test_jobs_wait_out_a_postgres_outage_longer_than_their_tries(
    own_postgres: services.PrivatePostgres, own_redis: services.PrivateRedis, tmp_path: Path
) -> None:
    env = {
        **stack_env(own_postgres.url),
        "REDIS_URL": own_redis.url,
        "JOB_MAX_TRIES": str(MAX_TRIES),
        # Deferrals while a dependency is away back off to at most this, so the backlog is
        # claimed again within a second or two of Postgres being back.
        "JOB_OUTAGE_RETRY_MAX_SECONDS": "1",
    }
    stack = Stack(env, tmp_path)
    queue = str(Settings.model_fields["queue_name"].default)
    redis = Redis.from_url(own_redis.url)
    try:
        web, worker = stack.start("web"), stack.start("worker")
        async with aiohttp.ClientSession(base_url=web.url) as http:
            alice, bob = await register(http), await register(http)
            cid = await conversation(http, alice, [bob])

            await asyncio.to_thread(own_postgres.stop)
            accepted = [await _send(http, alice, cid, n) for n in range(MESSAGES)]
            await asyncio.sleep(DOWN_SECONDS)  # the outage itself: what the jobs must wait out
            during = [await job_state(redis, queue, a["job_id"]) for a in accepted]
            dead_during = await deadletters.count(redis)

            up_started = time.monotonic()
            await asyncio.to_thread(own_postgres.start)
            ids = [a["id"] for a in accepted]
            drained_at = await until(lambda: _all_stored(own_postgres.dsn, ids), "all stored", 30, every=0.1)
            after = [await job_state(redis, queue, a["job_id"]) for a in accepted]
            dead_after = await deadletters.count(redis)
        print(
            f"\n{MESSAGES} sent while Postgres was down for {DOWN_SECONDS} s; "
            f"stored {drained_at - up_started:.1f} s after Postgres was started; "
            f"dead letters during {dead_during}, after {dead_after}; "
            f"tries during {sorted({s.tries for s in during})}, "
            f"at completion {sorted({s.tries for s in after})}"
        )
        # Waiting for Postgres spent no tries: none was dead-lettered, and every job was still on
        # the queue (or running) at its first try.
        assert dead_during == 0 and dead_after == 0
        assert {s.status for s in during} <= {"queued", "deferred", "in_progress"}, during[:3]
        assert max(s.tries for s in during) <= 1
        assert {(s.status, s.success) for s in after} == {("complete", True)}
        assert max(s.tries for s in after) == 1
        assert worker.popen.poll() is None, worker.output()[-3000:]
    finally:
        await redis.aclose()
        stack.stop_all()


async def _all_stored(dsn: str, ids: list[str]) -> bool:
    return await stored_count(dsn, ids) == len(ids)
