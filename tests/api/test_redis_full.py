"""A full Redis (maxmemory reached under `noeviction`) is an outage like Redis being away: `503`
with `Retry-After`, one log line per interval rather than a traceback per request, `/readyz`
saying so, and no half-done send (a seq claimed without its job). Once Redis has room, sends go
through again.

Redis refuses an unflagged script's first write (and so every later one) when it was over
maxmemory as the script started, and refuses a flagged script before it runs: the send script
either writes everything or nothing, which the counter and queue checks below pin.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio
import redis.exceptions
from falcon.testing import ASGIConductor

from api.app import build_deps, create_app
from chat.domain.sequence import counter_key
from chat.settings import Settings
from tests.support import ApiClient, TestUser, assert_problem, services
from workers.main import create_worker


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[services.PrivateRedis]:
    server = services.private_redis(str(tmp_path))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ours(settings: Settings, full_redis: services.PrivateRedis) -> Settings:
    """Settings on the private Redis, with every Redis-backed limit on (each is a write)."""
    return settings.model_copy(
        update={
            "redis_url": full_redis.url,
            "rate_limit_sends_per_user": "1000/second",
            "rate_limit_login_per_address": "1000/minute",
            "rate_limit_uploads_per_user": "1000/minute",
        }
    )


@pytest.fixture
async def parts(ours: Settings) -> AsyncIterator[tuple[ApiClient, redis.asyncio.Redis]]:
    deps = build_deps(ours)
    admin = redis.asyncio.Redis.from_url(ours.redis_url)
    try:
        async with ASGIConductor(create_app(ours, deps)) as conductor:
            yield ApiClient(conductor), admin
    finally:
        await admin.config_set("maxmemory", 0)
        await admin.aclose()
        await deps.aclose()


async def drain(settings: Settings) -> None:
    worker = create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01)
    try:
        await worker.main()
    finally:
        await worker.close()


async def fill(admin: redis.asyncio.Redis) -> None:
    """Cap Redis a little above what it holds, then write until it refuses."""
    await admin.config_set("maxmemory-policy", "noeviction")
    used = int((await admin.info("memory"))["used_memory"])
    await admin.config_set("maxmemory", used + 256 * 1024)
    for n in range(10_000):
        try:
            await admin.set(f"filler:{n}", b"x" * 16 * 1024)
        except redis.exceptions.OutOfMemoryError:
            break
    else:
        raise AssertionError("Redis never filled up")
    # Freed query buffers can bring it back just under the cap: keep it a little over.
    used = int((await admin.info("memory"))["used_memory"])
    await admin.config_set("maxmemory", used - 64 * 1024)


async def send(api: ApiClient, user: TestUser, cid: str, body: str) -> int:
    result = await api.post(f"/conversations/{cid}/messages", user, json={"body": body})
    if result.status_code == 503:
        assert_problem(result, 503)
        assert result.headers["retry-after"].isdigit()
    return result.status_code


async def test_a_full_redis_is_503_with_retry_after_logged_once_and_in_readyz(
    parts: tuple[ApiClient, redis.asyncio.Redis], ours: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    api, admin = parts
    alice, bob, cid = await api.pair()
    before = await api.post(f"/conversations/{cid}/messages", alice, json={"body": "before"})
    assert before.status_code == 202, before.text
    first = before.json["id"]
    await drain(ours)
    counter = counter_key(cid, "")
    seq_before = await admin.get(counter)
    queued_before = await admin.zcard("arq:queue")
    assert (await api.get("/readyz")).status_code == 200

    await fill(admin)
    with caplog.at_level(logging.INFO):
        statuses = [await send(api, alice, cid, f"full {n}") for n in range(100)]
        assert statuses == [503] * 100
        # Every other route that writes Redis answers the same, never 500.
        assert_problem(await api.post(f"/conversations/{cid}/typing", alice), 503)
        assert_problem(await api.patch(f"/messages/{first}", alice, json={"body": "edited"}), 503)
        read = await api.post(f"/conversations/{cid}/read", bob, json={"seq": 1})
        assert read.status_code in (204, 503), read.text  # Postgres first; the event may not fit
        login = {"username": alice.username, "password": "correct horse battery"}
        assert_problem(await api.post("/auth/login", json=login), 503)
        upload = {"filename": "a.txt", "content_type": "text/plain", "size": 3}
        assert_problem(await api.post("/uploads", alice, json=upload), 503)
        ready = await api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"]["redis"] == "full"
    assert ready.json["checks"]["database"] == "ok"
    about_it = [r for r in caplog.records if "redis" in r.getMessage().lower()]
    assert 1 <= len(about_it) <= 2, [r.getMessage() for r in about_it]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    # Nothing half-written: no seq was claimed, no job enqueued.
    assert await admin.get(counter) == seq_before
    assert await admin.zcard("arq:queue") == queued_before

    await admin.config_set("maxmemory", 0)
    assert await send(api, bob, cid, "after") == 202
    assert (await api.get("/readyz")).status_code == 200
