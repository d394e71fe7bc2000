"""`/admin/*`: who may call it (generated from the route table) and what the queue views show."""

from __future__ import annotations

import time
import uuid

from falcon import inspect

from api.deps import Deps
from chat.cli import set_admin
from chat.jobqueue import deadletters, heartbeats
from chat.jobqueue.enqueue import QueueWriter
from tests.support import ApiClient, assert_problem


def admin_routes(api: ApiClient) -> list[tuple[str, str]]:
    """Every (method, path) under /admin that serves data, as the app routes it."""
    found = []
    for route in inspect.inspect_routes(api.conductor.app):
        if not route.path.startswith("/api/v1/admin/") or route.path == "/api/v1/admin/ui":
            continue
        for method in route.methods:
            if not method.internal and method.method != "OPTIONS":
                path = route.path.replace("{job_id}", "persist:nope")
                found.append((method.method, path.replace("{webhook_id}", str(uuid.uuid4()))))
    return found


async def test_every_admin_route_needs_a_token_and_an_admin(api: ApiClient, deps: Deps) -> None:
    routes = admin_routes(api)
    assert len(routes) >= 8, routes
    member = await api.user()
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    for method, path in routes:
        bare = path.removeprefix("/api/v1")
        assert_problem(await api.request(method, bare), 401)
        assert_problem(await api.request(method, bare, member), 403)
        answered = await api.request(method, bare, admin)
        # Registering a webhook without a body gets as far as reading it: 400, past the admin check.
        takes_body = (method, bare) == ("POST", "/admin/webhooks")
        assert answered.status_code in ((400,) if takes_body else (200, 204, 404)), (
            method,
            path,
            answered.text,
        )
    # Revoking takes effect on the next call, not when the token expires.
    assert await set_admin(deps.settings, admin.username, False)
    assert_problem(await api.get("/admin/queue", admin), 403)


async def test_retry_answers_only_post(api: ApiClient, deps: Deps) -> None:
    # DELETE .../retry used to be routed to the dead letter's own DELETE, and discarded it.
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    entry = {"job_id": "job:1", "function": "edit_message", "args": [{}], "failed_at": "2026-11-27T00:00:00Z"}
    await deadletters.record(deps.redis, entry, 100, 10**9)
    for method in ("GET", "DELETE"):
        assert_problem(await api.request(method, "/admin/dead-letters/job:1/retry", admin), 405)
    assert (await api.get("/admin/dead-letters/job:1", admin)).json == entry


async def test_queue_workers_and_history(api: ApiClient, deps: Deps) -> None:
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    queue = deps.settings.queue_name
    enqueuer = QueueWriter(deps.redis, queue)
    for i in range(3):
        await enqueuer.enqueue("persist_message", [{}], f"persist:{i}")
    await enqueuer.enqueue("edit_message", [{}], "edit:0")
    await deps.redis.set("arq:in-progress:persist:0", "w-1")
    await deps.redis.zadd(queue, {"edit:later": time.time() * 1000 + 60_000})
    record = {
        "id": "w-1",
        "host": "h",
        "pid": 1,
        "queue": queue,
        "started_at": "2026-11-27T00:00:00Z",
        "last_beat_at": "2026-11-27T00:00:01Z",
        "max_jobs": 50,
        "running": 1,
        "lanes": [{"queue": queue, "max_jobs": 50, "running": 1}],
        "done": 0,
        "failed": 0,
        "job_ids": ["persist:0"],
    }
    await heartbeats.beat(deps.redis, record, ttl_seconds=5)

    stats = (await api.get("/admin/queue", admin)).json
    assert stats | {"oldest_queued_age_s": 0} == {
        "queued": 3,
        "deferred": 1,
        "in_progress": 1,
        "dead": 0,
        "oldest_queued_age_s": 0,
        "workers": 1,
        "functions": {
            "persist_message": {"queued": 2, "in_progress": 1},
            "edit_message": {"queued": 1, "in_progress": 0},
        },
    }
    assert stats["oldest_queued_age_s"] >= 0
    workers = (await api.get("/admin/workers", admin)).json["items"]
    assert workers == [record]
    history = (await api.get("/admin/queue/history", admin, query_string="minutes=5")).json["items"]
    assert len(history) == 5 and all(set(m) == {"minute", "complete", "failed", "retried"} for m in history)
    assert_problem(await api.get("/admin/queue/history", admin, query_string="minutes=0"), 422)
    assert_problem(await api.get("/admin/jobs/persist:nope", admin), 404)
    held = (await api.get("/admin/jobs/persist:0", admin)).json
    assert held["status"] == "in_progress" and held["worker_id"] == "w-1" and held["args"] == [{}]
