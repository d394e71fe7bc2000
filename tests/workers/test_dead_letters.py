"""Every way a job fails for good ends in the dead letters, which an admin can retry or discard."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.deps import Deps
from chat.cli import set_admin
from chat.jobqueue import deadletters, keys
from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.jobs import PERSIST_MESSAGE
from tests.support import ApiClient, TestUser, assert_problem
from tests.support.messages import send, stored_count
from tests.support.settings import RunWorker
from workers import store


async def _admin(api: ApiClient, deps: Deps) -> TestUser:
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    return admin


async def _dead(deps: Deps) -> dict[str, dict[str, Any]]:
    entries, _ = await deadletters.page(deps.redis, limit=200)
    return {e["job_id"]: e for e in entries}


async def test_every_way_a_job_fails_for_good_lands_in_the_dead_letters(
    api: ApiClient, deps: Deps, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, _, cid = await api.pair()
    queue = deps.settings.queue_name
    # Its workers died on every try: the try counter already stands at the limit.
    died = await send(api, alice, cid, "its workers kept dying")
    await deps.redis.set(keys.retry_key(died["job_id"]), deps.settings.job_max_tries)
    # Expired: still queued, but the job itself is gone.
    await deps.redis.zadd(queue, {"persist:expired": 1})
    # A function no worker knows.
    await QueueWriter(deps.redis, queue).enqueue("no_such_function", [{}], "mystery:1")
    await run_worker()

    dead = await _dead(deps)
    assert dead[died["job_id"]]["reason"] == "max_tries"
    assert dead[died["job_id"]]["error"] == f"max {deps.settings.job_max_tries} tries exceeded"
    assert dead[died["job_id"]]["args"][0]["message_id"] == died["id"]
    assert dead["persist:expired"]["reason"] == "expired"
    assert dead["mystery:1"]["reason"] == "unknown_function"
    for entry in dead.values():
        assert entry["failed_at"] and entry["worker_id"] and entry["tries"] >= 1
    assert await deps.redis.zcard(queue) == 0

    # Ran over its timeout on its last try.
    async def hangs(*args: Any) -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(store, "persist_batch", hangs)
    slow = await send(api, alice, cid, "never finishes")
    await run_worker(job_timeout=0.3, max_tries=1)
    assert (await _dead(deps))[slow["job_id"]]["reason"] == "timeout"


async def test_a_failing_job_leaves_the_dead_letters_after_a_retry_once_fixed(
    api: ApiClient, deps: Deps, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await _admin(api, deps)
    alice, _, cid = await api.pair()
    sent = await send(api, alice, cid, "fails until the bug is fixed")

    async def broken(*args: Any) -> None:
        raise ValueError("a bug, not a blip")

    real = store.persist_batch
    monkeypatch.setattr(store, "persist_batch", broken)
    await run_worker()
    path = f"/admin/dead-letters/{sent['job_id']}"
    entry = await api.get(path, admin)
    assert entry.status_code == 200, entry.text
    assert entry.json["function"] == PERSIST_MESSAGE and "ValueError: a bug" in entry.json["traceback"]
    detail = (await api.get(f"/admin/jobs/{sent['job_id']}", admin)).json
    assert detail["status"] == "failed" and "a bug" in detail["error"] and "Traceback" in detail["traceback"]
    assert detail["args"][0]["message_id"] == sent["id"] and detail["worker_id"]

    monkeypatch.setattr(store, "persist_batch", real)
    retried = await api.post(f"{path}/retry", admin)
    assert retried.status_code == 202, retried.text
    assert retried.json == {"job_id": sent["job_id"], "status": "queued"}
    assert_problem(await api.get(path, admin), 404)  # it left the dead letters
    assert (await api.get(f"/admin/jobs/{sent['job_id']}", admin)).json["status"] == "queued"
    # Retrying again while it is queued: the entry is gone, so 404; a stale entry would be 409.
    assert_problem(await api.post(f"{path}/retry", admin), 404)
    stale = {**entry.json, "failed_at": datetime.now(UTC).isoformat()}
    await deadletters.record(deps.redis, stale, 100, 3600)
    assert_problem(await api.post(f"{path}/retry", admin), 409)
    await deadletters.discard(deps.redis, sent["job_id"])

    await run_worker()
    assert await stored_count(deps, id=uuid.UUID(sent["id"])) == 1
    assert (await api.get(f"/admin/jobs/{sent['job_id']}", admin)).json["status"] == "complete"
    job = await api.get(f"/jobs/{sent['job_id']}", alice)
    assert job.json["status"] == "complete" and job.json["tries"] == 1  # the tries were reset


async def test_discard_and_paging(api: ApiClient, deps: Deps) -> None:
    admin = await _admin(api, deps)
    now = datetime.now(UTC)
    for i in range(5):
        await deadletters.record(
            deps.redis,
            {
                "job_id": f"job:{i}",
                "function": "persist_message" if i % 2 else "edit_message",
                "args": [{"i": i}],
                "error": "boom",
                "failed_at": (now - timedelta(seconds=10 - i)).isoformat(),
                "tries": 1,
            },
            100,
            3600,
        )
    first = await api.get("/admin/dead-letters", admin, query_string="limit=2")
    assert [e["job_id"] for e in first.json["items"]] == ["job:4", "job:3"]
    second = await api.get(
        "/admin/dead-letters", admin, query_string=f"limit=2&cursor={first.json['next_cursor']}"
    )
    assert [e["job_id"] for e in second.json["items"]] == ["job:2", "job:1"]
    edits = await api.get("/admin/dead-letters", admin, query_string="function=edit_message")
    assert [e["job_id"] for e in edits.json["items"]] == ["job:4", "job:2", "job:0"]
    assert edits.json["next_cursor"] is None
    assert_problem(await api.get("/admin/dead-letters", admin, query_string="cursor=zzz"), 422)
    assert (await api.delete("/admin/dead-letters/job:3", admin)).status_code == 204
    assert_problem(await api.delete("/admin/dead-letters/job:3", admin), 404)
    assert_problem(await api.post("/admin/dead-letters/job:3/retry", admin), 404)
    assert (await api.get("/admin/queue", admin)).json["dead"] == 4


async def test_dead_letters_are_capped_by_count_and_age(deps: Deps) -> None:
    now = datetime.now(UTC)

    def entry(i: int, age: timedelta) -> dict[str, Any]:
        failed_at = (now - age).isoformat()
        return {"job_id": f"j{i}", "function": "f", "args": [], "error": "e", "failed_at": failed_at}

    await deadletters.record(deps.redis, entry(0, timedelta(days=8)), 3, 7 * 86400)
    for i in range(1, 6):
        await deadletters.record(deps.redis, entry(i, timedelta(seconds=10 - i)), 3, 7 * 86400)
    assert sorted(await _dead(deps)) == ["j3", "j4", "j5"]
    assert await deps.redis.hlen(deadletters.HASH) == 3  # type: ignore[misc]
