from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from typing import Any

import pytest
import redis.exceptions
from arq import Retry

from api.deps import Deps
from chat.cli import set_admin
from chat.domain.sequence import Sequencer, counter_key
from chat.jobqueue import codec, enqueue, heartbeats, keys
from chat.jobqueue.jobs import PersistMessage
from chat.jobqueue.shards import shards_of
from chat.realtime.events import MessageCreated
from chat.settings import Settings
from tests.support import ApiClient, assert_problem
from tests.support.chatload import until
from tests.support.messages import send, stored_count, stream
from tests.support.settings import RunWorker
from tests.support.webhooks import Receiver, receiving
from workers import store
from workers.main import create_worker
from workers.runtime import ChatWorker


async def test_send_is_queued_then_persisted(api: ApiClient, run_worker: RunWorker) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob, kind="direct")
    sent = await send(api, alice, conv["id"], "hi bob")
    assert sent["status"] == "queued" and sent["seq"] == 1 and sent["conversation_id"] == conv["id"]
    assert (await api.get(f"/messages/{sent['id']}", alice)).status_code == 404  # not persisted yet
    job = await api.get(f"/jobs/{sent['job_id']}", alice)
    assert job.json["status"] == "queued" and job.json["function"] == "persist_message"

    assert await run_worker() == 1

    got = await api.get(f"/messages/{sent['id']}", bob)
    assert got.status_code == 200, got.text
    assert got.json | {"created_at": None} == {
        "id": sent["id"],
        "conversation_id": conv["id"],
        "seq": 1,
        "kind": "user",
        "sender_id": alice.id,
        "body": "hi bob",
        "client_id": None,
        "created_at": None,
        "edited_at": None,
        "deleted": False,
        "reply_to": None,
        "reply_count": 0,
        "last_reply_at": None,
        "reactions": [],
        "mentions": [],
        "attachments": [],
    }
    job = await api.get(f"/jobs/{sent['job_id']}", alice)
    assert job.json["status"] == "complete" and job.json["tries"] == 1 and job.json["finished_at"]
    assert_problem(await api.get(f"/jobs/{sent['job_id']}", bob), 404)  # only who caused it
    assert_problem(await api.get("/jobs/persist:nothing", alice), 404)

    view = (await api.get(f"/conversations/{conv['id']}", bob)).json
    assert view["last_seq"] == 1 and view["last_message"]["id"] == sent["id"] and view["unread_count"] == 1
    assert (await api.get(f"/conversations/{conv['id']}", alice)).json["unread_count"] == 0


async def test_events_reach_participants_only(api: ApiClient, deps: Deps, run_worker: RunWorker) -> None:
    alice, bob, carol, eve = [await api.user() for _ in range(4)]
    conv = await api.conversation(alice, bob, carol)
    sent = await send(api, bob, conv["id"], "to the group")
    await run_worker()
    for user in (alice, bob, carol):
        created = [e for e in await stream(deps.redis, user.id) if e.type == "message.created"]
        assert [str(e.data.id) for e in created] == [sent["id"]]
    assert await stream(deps.redis, eve.id) == []


async def test_client_id_is_idempotent_before_and_after_persist(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    first = await send(api, alice, cid, "once", client_id="c-1")
    queued_repeat = await send(api, alice, cid, "once", client_id="c-1")
    assert (queued_repeat["id"], queued_repeat["seq"]) == (first["id"], first["seq"])
    # Concurrent repeats of a new client_id still map to one message and one seq.
    burst = await asyncio.gather(*(send(api, alice, cid, "twice", client_id="c-2") for _ in range(8)))
    assert len({(r["id"], r["seq"]) for r in burst}) == 1
    await run_worker()
    after_persist = await send(api, alice, cid, "once", client_id="c-1")
    assert (after_persist["id"], after_persist["seq"]) == (first["id"], first["seq"])
    # Forget the queue's memory entirely: Postgres still guards against the duplicate.
    await deps.redis.flushdb()
    days_later = await send(api, alice, cid, "once", client_id="c-1")
    assert (days_later["id"], days_later["seq"]) == (first["id"], first["seq"])
    await run_worker()
    assert await stored_count(deps, client_id="c-1") == 1
    assert await stored_count(deps, client_id="c-2") == 1
    # The same client_id from another sender is a different message.
    other = await send(api, bob, cid, "once", client_id="c-1")
    assert other["id"] != first["id"]
    # Same client_id, different body: a conflict, queued or persisted.
    assert_problem(
        await api.post(f"/conversations/{cid}/messages", alice, json={"body": "x", "client_id": "c-1"}), 409
    )
    await send(api, alice, cid, "three", client_id="c-3")
    assert_problem(
        await api.post(f"/conversations/{cid}/messages", alice, json={"body": "y", "client_id": "c-3"}), 409
    )


async def test_rapid_sends_with_two_workers_keep_send_order(
    api: ApiClient, deps: Deps, settings: Settings
) -> None:
    alice, bob, cid = await api.pair()
    # The backlog is there before the workers start, so each one's first claim takes its five: both
    # work on the conversation at once, which is what the order must survive.
    sent = [await send(api, alice, cid, f"message {i}") for i in range(60)]
    workers = [create_worker(settings, handle_signals=False, max_jobs=5) for _ in range(2)]
    tasks = [asyncio.create_task(w.main()) for w in workers]
    try:
        async with asyncio.timeout(20):
            while await stored_count(deps, conversation_id=uuid.UUID(cid)) < 60:
                await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in workers:
            await w.close()
    taken = [w.jobs_complete for w in workers]
    assert all(taken) and sum(taken) == 60, f"jobs each worker completed: {taken}"
    seqs = [s["seq"] for s in sent]
    assert seqs == list(range(1, 61))
    history = await api.get(f"/conversations/{cid}/messages", bob, query_string="limit=200")
    assert [m["body"] for m in history.json["items"]] == [f"message {i}" for i in range(60)]
    assert [m["seq"] for m in history.json["items"]] == seqs
    assert history.json["has_more"] is False


@pytest.mark.parametrize(
    ("target", "name", "error", "body", "tries"),
    [
        # The batch's write is lost with its connection: the job is tried again, and the try
        # that met the outage is given back (an outage spends no tries).
        pytest.param(
            store,
            "persist_batch",
            ConnectionResetError("connection to Postgres lost"),
            "survives a blip",
            1,
            id="postgres-lost-before-commit",
        ),
        # Committed, then the transaction that finishes the job is lost with Redis: the worker
        # keeps the outcome and writes it again, within the same try.
        pytest.param(
            ChatWorker,
            "_write",
            redis.exceptions.ConnectionError("worker lost Redis right after commit"),
            "committed, then Redis went away",
            1,
            id="redis-lost-after-commit",
        ),
    ],
)
async def test_a_blip_before_or_after_the_commit_stores_and_publishes_once(
    api: ApiClient,
    deps: Deps,
    run_worker: RunWorker,
    monkeypatch: pytest.MonkeyPatch,
    target: object,
    name: str,
    error: Exception,
    body: str,
    tries: int,
) -> None:
    alice, bob, cid = await api.pair()
    sent = await send(api, alice, cid, body)
    real = getattr(target, name)
    calls = 0

    async def fails_once(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        return await real(*args)

    monkeypatch.setattr(target, name, fails_once)
    await run_worker()
    assert calls == 2
    assert await stored_count(deps, id=uuid.UUID(sent["id"])) == 1
    job = await api.get(f"/jobs/{sent['job_id']}", alice)
    assert job.json["status"] == "complete" and job.json["tries"] == tries
    for user in (alice, bob):
        created = [e for e in await stream(deps.redis, user.id) if e.type == "message.created"]
        assert [str(e.data.id) for e in created] == [sent["id"]]


async def test_worker_dead_after_commit_its_job_runs_again_and_publishes_once(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    sent = await send(api, alice, cid, "stored by a worker that died before finishing")
    # A worker that claimed the job, committed the message and died: it holds the job, its
    # heartbeat record is gone, and nothing was published.
    ghost = "ghost-worker"
    await deps.redis.set(keys.in_progress_key(sent["job_id"]), ghost, px=60_000)
    await deps.redis.sadd(heartbeats.held_key(ghost), sent["job_id"])  # type: ignore[misc]
    await deps.redis.zadd(heartbeats.REGISTRY, {ghost: 0})
    body = await deps.redis.get(keys.job_key(sent["job_id"]))
    payload = codec.deserialize(body)["a"][0]
    async with deps.sessions() as session:
        await store.persist_messages(session, [PersistMessage.model_validate(payload)], Sequencer(deps.redis))
        await session.commit()

    started = asyncio.get_running_loop().time()
    await run_worker(heartbeat_seconds=0.05, heartbeat_ttl_seconds=0.3)
    # Released after the live worker had itself been up for one expiry, not after arq's 40 s.
    assert asyncio.get_running_loop().time() - started < 5
    assert await stored_count(deps, id=uuid.UUID(sent["id"])) == 1
    for user in (alice, bob):
        created = [e for e in await stream(deps.redis, user.id) if e.type == "message.created"]
        assert [str(e.data.id) for e in created] == [sent["id"]]
    assert await deps.redis.zscore(heartbeats.REGISTRY, ghost) is None


async def test_permanent_failure_goes_to_dead_letters(
    api: ApiClient, deps: Deps, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat.jobqueue import deadletters

    alice, _, cid = await api.pair()
    sent = await send(api, alice, cid, "doomed")

    async def broken(*args: Any) -> None:
        raise ValueError("a bug, not a blip")

    monkeypatch.setattr(store, "persist_batch", broken)
    await run_worker()
    [entry], _ = await deadletters.page(deps.redis, limit=10)
    assert entry["job_id"] == sent["job_id"] and "a bug" in entry["error"] and entry["tries"] == 1
    assert entry["reason"] == "raised" and "ValueError: a bug, not a blip" in entry["traceback"]
    assert entry["args"][0]["message_id"] == sent["id"]
    job = await api.get(f"/jobs/{sent['job_id']}", alice)
    assert job.json["status"] == "failed" and "a bug" in job.json["error"]


async def test_lost_counter_is_reseeded(api: ApiClient, deps: Deps, run_worker: RunWorker) -> None:
    alice, _, cid = await api.pair()
    for i in range(3):
        await send(api, alice, cid, f"m{i}")
    await run_worker()
    # The key vanished: the api seeds from Postgres and carries on after the last stored seq.
    await deps.redis.delete(counter_key(cid, ""))
    assert (await send(api, alice, cid, "after loss"))["seq"] == 4
    await run_worker()
    # The key went back in time: the worker finds its seq taken and takes the next free one.
    await deps.redis.set(counter_key(cid, ""), 2)
    late = await send(api, alice, cid, "collides")
    assert late["seq"] == 3
    await run_worker()
    stored = await api.get(f"/messages/{late['id']}", alice)
    assert stored.json["seq"] == 5
    history = await api.get(f"/conversations/{cid}/messages", alice)
    assert [m["seq"] for m in history.json["items"]] == [1, 2, 3, 4, 5]
    assert (await send(api, alice, cid, "next"))["seq"] == 6


async def test_edit_and_delete(api: ApiClient, deps: Deps, run_worker: RunWorker) -> None:
    alice, bob, carol = [await api.user() for _ in range(3)]
    cid = (await api.conversation(alice, bob, carol))["id"]
    mine = await send(api, bob, cid, "typo")
    await run_worker()
    mid = mine["id"]
    assert_problem(await api.patch(f"/messages/{mid}", carol, json={"body": "hack"}), 403)
    assert_problem(await api.patch(f"/messages/{mid}", bob, json={"body": "  "}), 422)
    edit = await api.patch(f"/messages/{mid}", bob, json={"body": "fixed"})
    assert edit.status_code == 202 and edit.json["status"] == "queued" and edit.json["seq"] == 1
    await run_worker()
    edited = (await api.get(f"/messages/{mid}", carol)).json
    assert edited["body"] == "fixed" and edited["edited_at"] is not None
    assert_problem(await api.delete(f"/messages/{mid}", carol), 403)  # neither sender nor owner
    deleted = await api.delete(f"/messages/{mid}", alice)  # the group's owner may
    assert deleted.status_code == 202, deleted.text
    await run_worker()
    gone = (await api.get(f"/messages/{mid}", bob)).json
    assert gone["deleted"] is True and gone["body"] is None
    assert_problem(await api.patch(f"/messages/{mid}", bob, json={"body": "again"}), 409)
    types = [e.type for e in await stream(deps.redis, carol.id) if e.type.startswith("message.")]
    assert types == ["message.created", "message.updated", "message.deleted"]
    job = await api.get(f"/jobs/{edit.json['job_id']}", bob)
    assert job.json["status"] == "complete" and job.json["function"] == "edit_message"


async def test_history_paging(api: ApiClient, run_worker: RunWorker) -> None:
    alice, bob, cid = await api.pair()
    for i in range(7):
        await send(api, alice, cid, f"m{i + 1}")
    await run_worker()

    async def seqs(query: str) -> tuple[list[int], bool]:
        page = await api.get(f"/conversations/{cid}/messages", bob, query_string=query)
        assert page.status_code == 200, page.text
        return [m["seq"] for m in page.json["items"]], page.json["has_more"]

    assert await seqs("limit=3") == ([5, 6, 7], True)
    assert await seqs("before=5&limit=3") == ([2, 3, 4], True)
    assert await seqs("before=3&limit=3") == ([1, 2], False)
    assert await seqs("after=2&limit=3") == ([3, 4, 5], True)
    assert await seqs("after=5") == ([6, 7], False)
    assert await seqs("after=7") == ([], False)
    for bad in ("before=1&after=2", "limit=0", "limit=201", "before=x", "after=-1"):
        assert_problem(await api.get(f"/conversations/{cid}/messages", bob, query_string=bad), 422)


async def test_read_marker_only_moves_forward(api: ApiClient, deps: Deps, run_worker: RunWorker) -> None:
    alice, bob, cid = await api.pair()
    for i in range(4):
        await send(api, alice, cid, f"m{i}")
    await run_worker()
    assert (await api.get(f"/conversations/{cid}", bob)).json["unread_count"] == 4
    assert (await api.post(f"/conversations/{cid}/read", bob, json={"seq": 3})).status_code == 204
    assert (await api.post(f"/conversations/{cid}/read", bob, json={"seq": 1})).status_code == 204
    view = (await api.get(f"/conversations/{cid}", bob)).json
    marker = {p["user_id"]: p["last_read_seq"] for p in view["participants"]}
    assert marker[bob.id] == 3 and view["unread_count"] == 1
    # Past the newest message it stops at the newest.
    assert (await api.post(f"/conversations/{cid}/read", bob, json={"seq": 99})).status_code == 204
    assert (await api.get(f"/conversations/{cid}", bob)).json["unread_count"] == 0
    reads = [e for e in await stream(deps.redis, alice.id) if e.type == "conversation.read"]
    assert [(str(e.data.user_id), e.data.seq) for e in reads] == [(bob.id, 3), (bob.id, 4)]
    for bad in ({"seq": -1}, {"seq": "3"}, {}, {"seq": 1.5}):
        assert_problem(await api.post(f"/conversations/{cid}/read", bob, json=bad), 422)


async def test_an_idle_worker_runs_a_retry_when_it_falls_due(deps: Deps, settings: Settings) -> None:
    """A job that asks to be tried again in 0.2 s is, even by a worker that otherwise sleeps
    between wake-ups (workers.runtime.base.IDLE_POLL_SECONDS): nothing else wakes it for that retry."""
    tried: list[float] = []

    async def flaky(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
        tried.append(asyncio.get_running_loop().time())
        if len(tried) < 3:
            raise Retry(defer=0.2)
        return "third time"

    flaky.__qualname__ = flaky.__name__ = "flaky"
    worker = create_worker(settings, handle_signals=False, functions=[flaky])
    task = asyncio.create_task(worker.main())
    try:
        # Idle once subscribed to wake-ups: waited for, not guessed at.
        async def subscribed() -> bool:
            [(_, listeners)] = await deps.redis.pubsub_numsub(keys.wake_channel(settings.queue_name))
            return int(listeners) > 0

        await until(subscribed, "the worker subscribed to wake-ups", 10)
        await enqueue.QueueWriter(deps.redis, settings.queue_name).enqueue("flaky", [{}], "flaky:1")
        async with asyncio.timeout(4):  # well short of an idle poll after each retry
            while len(tried) < 3:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(tried)]
    assert all(0.19 <= gap < 1.0 for gap in gaps), gaps


@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "with-a-webhook"])
async def test_one_worker_publishes_a_conversations_messages_in_seq_order_when_their_jobs_tie(
    api: ApiClient, deps: Deps, settings: Settings, run_worker: RunWorker, hooked: bool
) -> None:
    """Jobs enqueued within one millisecond share a score, and the queue hands out a tie in job id
    order, not acceptance order; the worker must still store and publish them by `seq`. With a
    webhook registered each job awaits the registry once more before it finishes."""
    alice, bob, cid = await api.pair()
    async with contextlib.AsyncExitStack() as stack:
        if hooked:
            receiver = await stack.enter_async_context(receiving(Receiver()))
            admin = await api.user()
            assert await set_admin(deps.settings, admin.username, True)
            hook = await api.post(
                "/admin/webhooks", admin, json={"url": receiver.url, "events": ["message.created"]}
            )
            assert hook.status_code == 201, hook.text
        sent = [await send(api, alice, cid, f"message {i}") for i in range(20)]
        shards = shards_of(deps.redis)
        queue = shards.queue(settings.queue_name, shards.of(cid))
        scores = await deps.redis.zrange(queue, 0, -1, withscores=True)
        assert len(scores) == 20
        await deps.redis.zadd(queue, {member: scores[0][1] for member, _ in scores}, xx=True)
        assert await run_worker() == (40 if hooked else 20)
    for user in (alice, bob):
        created = [e.data.seq for e in await stream(deps.redis, user.id) if isinstance(e, MessageCreated)]
        assert created == [m["seq"] for m in sent]
