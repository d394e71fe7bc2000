"""Webhook deliveries through the real api, worker, Postgres and Redis, to a real HTTP receiver."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from api.deps import Deps
from chat.cli import set_admin
from chat.domain import webhooks
from chat.jobqueue import deadletters
from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.lanes import DELIVER_WEBHOOK
from chat.jobqueue.outbox import Outbox
from chat.jobqueue.state import job_state
from chat.realtime import presence
from chat.realtime.eventbus import RedisPublisher
from chat.realtime.events import MessageCreated
from chat.settings import Settings
from tests.support import ApiClient, TestUser
from tests.support.chatload import until
from tests.support.messages import message_created, send, stream
from tests.support.settings import RunWorker
from tests.support.webhooks import Received, Receiver, quick_deliveries, receiving, verify
from workers.main import create_worker

MAX_TRIES = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return quick_deliveries(settings, MAX_TRIES)


async def _admin(api: ApiClient, deps: Deps) -> TestUser:
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    return admin


async def _register(api: ApiClient, admin: TestUser, url: str, *events: str) -> dict[str, Any]:
    result = await api.post("/admin/webhooks", admin, json={"url": url, "events": list(events)})
    assert result.status_code == 201, result.text
    hook: dict[str, Any] = result.json
    return hook


async def test_a_delivery_is_retried_until_accepted_with_the_same_id_and_a_valid_signature(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    admin = await _admin(api, deps)
    alice, bob, cid = await api.pair()
    async with receiving(Receiver(script=["fail", "hang", "ok"])) as receiver:
        hook = await _register(api, admin, receiver.url, "message.created")
        sent = await send(api, alice, cid, "hello hooks")
        await run_worker()

    assert len(receiver.received) == 3
    assert len({r.headers["x-webhook-id"] for r in receiver.received}) == 1
    # The same event every time; only the attempt's timestamp and signature may differ.
    assert len({r.body for r in receiver.received}) == 1
    last = receiver.received[-1]
    assert last.headers["content-type"] == "application/json"
    event = last.json
    assert set(event) == {"id", "type", "created_at", "data"}
    assert event["type"] == "message.created"
    uuid.UUID(event["id"])
    assert event["created_at"].endswith("Z")
    data = event["data"]
    assert (data["id"], data["seq"], data["body"]) == (sent["id"], sent["seq"], "hello hooks")
    assert (data["conversation_id"], data["sender_id"]) == (cid, alice.id)
    assert data["offline_recipient_ids"] == [bob.id]  # bob holds no WebSocket; the sender is no recipient

    # The receiver's check, run from docs/api.md; and the wrong secret, a changed body and a
    # correctly signed but stale request all fail it.
    assert verify(hook["secret"], last)
    assert not verify("another-secret-of-some-length", last)
    assert not verify(hook["secret"], Received(last.headers, last.body + b" "))
    stale = str(int(time.time()) - 301)
    old_headers = last.headers | {
        "x-webhook-timestamp": stale,
        "x-webhook-signature": webhooks.signature(hook["secret"], stale, last.body),
    }
    assert not verify(hook["secret"], Received(old_headers, last.body))
    assert webhooks.verify(
        hook["secret"], last.headers["x-webhook-timestamp"], last.body, last.headers["x-webhook-signature"]
    )
    assert await deadletters.page(deps.redis, limit=10) == ([], None)


async def test_after_the_last_try_the_delivery_is_a_dead_letter_and_retrying_it_delivers(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    admin = await _admin(api, deps)
    alice, _, cid = await api.pair()
    async with receiving(Receiver(then="fail")) as receiver:
        await _register(api, admin, receiver.url, "message.created")
        await send(api, alice, cid, "nobody takes this")
        await run_worker()
        assert len(receiver.received) == MAX_TRIES and receiver.accepted == []

        dead = (await api.get("/admin/dead-letters?function=deliver_webhook", admin)).json["items"]
        assert len(dead) == 1
        entry = dead[0]
        assert entry["tries"] == MAX_TRIES and "HTTP 500" in entry["error"]
        assert entry["args"][0]["delivery_id"] == receiver.received[0].headers["x-webhook-id"]

        receiver.then = "ok"  # the receiver is back
        retried = await api.post(f"/admin/dead-letters/{entry['job_id']}/retry", admin)
        assert retried.status_code == 202, retried.text
        # Back on the deliveries' own queue, and seen there by the admin views of the whole queue.
        job_id = entry["job_id"]
        assert await deps.redis.zscore(deps.settings.webhook_queue_name, job_id) is not None
        assert await deps.redis.zscore(deps.settings.queue_name, job_id) is None
        job = (await api.get(f"/admin/jobs/{job_id}", admin)).json
        assert (job["status"], job["function"]) == ("queued", DELIVER_WEBHOOK)
        queue = (await api.get("/admin/queue", admin)).json
        assert queue["queued"] == 1 and queue["functions"][DELIVER_WEBHOOK]["queued"] == 1
        await run_worker()

    assert len(receiver.accepted) == 1
    assert receiver.accepted[0].headers["x-webhook-id"] == receiver.received[0].headers["x-webhook-id"]
    assert receiver.accepted[0].body == receiver.received[0].body
    assert (await api.get("/admin/dead-letters", admin)).json["items"] == []


async def test_subscriptions_filter_by_type_reactions_arrive_and_deleting_stops_deliveries(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    admin = await _admin(api, deps)
    alice, bob, cid = await api.pair()
    async with receiving(Receiver()) as reactions, receiving(Receiver()) as messages:
        await _register(api, admin, reactions.url, "reaction.added", "reaction.removed")
        hook = await _register(api, admin, messages.url, "message.created", "message.updated")
        sent = await send(api, alice, cid, "react to me")
        await run_worker()
        mid = sent["id"]
        assert (await api.put(f"/messages/{mid}/reactions/%F0%9F%91%8D", bob)).status_code == 204
        await run_worker()
        assert (await api.delete(f"/messages/{mid}/reactions/%F0%9F%91%8D", bob)).status_code == 204
        assert (await api.patch(f"/messages/{mid}", alice, json={"body": "edited"})).status_code == 202
        await run_worker()

        assert [r.json["type"] for r in reactions.accepted] == ["reaction.added", "reaction.removed"]
        added = reactions.accepted[0].json["data"]
        assert added == {"message_id": mid, "emoji": "👍", "user_id": bob.id, "conversation_id": cid}
        assert [r.json["type"] for r in messages.accepted] == ["message.created", "message.updated"]
        assert messages.accepted[1].json["data"]["body"] == "edited"
        assert "offline_recipient_ids" not in messages.accepted[1].json["data"]

        assert (await api.delete(f"/admin/webhooks/{hook['id']}", admin)).status_code == 204
        await send(api, alice, cid, "after the delete")
        await run_worker()
        assert len(messages.received) == 2


async def test_offline_recipients_are_those_without_a_live_websocket(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    admin = await _admin(api, deps)
    alice, bob, carol = await api.user(), await api.user(), await api.user()
    cid = (await api.conversation(alice, bob, carol))["id"]
    # As the push process records an open socket; alice's own doesn't matter, she is the sender.
    for user in (alice, bob):
        assert await presence.claim(deps.redis, user.id, f"conn-{user.id}", ttl_seconds=60, cap=None)
    async with receiving(Receiver()) as receiver:
        await _register(api, admin, receiver.url, "message.created")
        await send(api, alice, cid, "who is there?")
        await run_worker()
        # Everyone online: the flag says so, and the list is empty.
        assert await presence.claim(deps.redis, carol.id, f"conn-{carol.id}", ttl_seconds=60, cap=None)
        await send(api, alice, cid, "all here")
        await run_worker()
    first, second = (delivery.json["data"] for delivery in receiver.accepted)
    assert (first["offline_recipient_ids"], first["recipient_offline"]) == ([carol.id], True)
    assert (second["offline_recipient_ids"], second["recipient_offline"]) == ([], False)


async def test_events_the_api_publishes_are_delivered_too(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    admin = await _admin(api, deps)
    alice, bob, carol = await api.user(), await api.user(), await api.user()
    cid = (await api.conversation(alice, bob))["id"]
    async with receiving(Receiver()) as receiver:
        await _register(api, admin, receiver.url, "participant.added")
        added = await api.post(f"/conversations/{cid}/participants", alice, json={"user_ids": [carol.id]})
        assert added.status_code == 200, added.text
        await run_worker()
    [delivery] = receiver.accepted
    assert delivery.json["type"] == "participant.added"
    assert delivery.json["data"] == {"user_id": carol.id, "conversation_id": cid}


async def test_a_delivery_for_a_deleted_webhook_ends_quietly(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    args = {"webhook_id": str(uuid.uuid4()), "delivery_id": str(uuid.uuid4()), "event": {"type": "x"}}
    await QueueWriter(deps.redis, deps.settings.webhook_queue_name).enqueue(
        DELIVER_WEBHOOK, [args], "webhook:gone"
    )
    assert await run_worker() == 1
    assert await deadletters.page(deps.redis, limit=10) == ([], None)


async def test_the_registry_reads_postgres_only_after_a_change(deps: Deps) -> None:
    loads = 0
    load = webhooks.loader(deps.sessions)

    async def counted() -> list[webhooks.Hook]:
        nonlocal loads
        loads += 1
        return await load()

    registry = webhooks.Registry(deps.redis, counted, refresh_seconds=0)
    for _ in range(5):
        assert await registry.subscribed("message.created") == []
    assert loads == 1  # four more checks of the version key, no more reads
    await webhooks.bump(deps.redis)
    await registry.hooks()
    assert loads == 2
    cached = webhooks.Registry(deps.redis, counted, refresh_seconds=60)
    await cached.hooks()
    await webhooks.bump(deps.redis)
    await cached.hooks()
    assert loads == 3  # within the refresh interval even the version key is not read


async def test_a_webhook_registered_before_a_message_was_accepted_gets_it(
    api: ApiClient, deps: Deps, settings: Settings
) -> None:
    """However long a worker may keep its copy of the list, a message accepted after a webhook's
    201 is delivered to it: the job's enqueue time says how fresh the copy must be."""
    admin = await _admin(api, deps)
    alice, _bob, cid = await api.pair()
    patient = settings.model_copy(update={"webhook_registry_refresh_seconds": 3600})
    worker = create_worker(patient, handle_signals=False)
    task = asyncio.create_task(worker.main())
    try:
        async with receiving(Receiver(script=["ok"])) as receiver:
            first = await send(api, alice, cid, "before any webhook")

            # The worker reads the (empty) list while it runs that job, before the job's events
            # reach the stream: waited for, so the webhook below comes after that read however
            # slow the machine (registered earlier, it would be in the first read and prove nothing).
            async def first_published() -> bool:
                events = await stream(deps.redis, alice.id)
                return any(isinstance(e, MessageCreated) and str(e.data.id) == first["id"] for e in events)

            await until(first_published, "the first message's event in the stream", 10)
            await _register(api, admin, receiver.url, "message.created")
            sent = await send(api, alice, cid, "right after the 201")
            async with asyncio.timeout(10):
                await receiver.arrived.wait()
            [delivery] = receiver.received
            assert delivery.json["data"]["id"] == sent["id"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()


async def test_in_a_worker_the_deliveries_wait_in_the_outbox_of_the_job_that_published(
    api: ApiClient, deps: Deps
) -> None:
    # So that they are enqueued in the MULTI/EXEC that finishes the job, or not at all.
    admin = await _admin(api, deps)
    await _register(api, admin, "http://127.0.0.1:9/hook", "message.created")
    alice, bob, _ = await api.pair()
    dispatcher = webhooks.create_dispatcher(
        deps.redis, deps.sessions, queue_name=deps.settings.webhook_queue_name, refresh_seconds=0
    )
    outbox: Outbox = []
    event = message_created(uuid.UUID(alice.id), 1, "staged")
    publisher = RedisPublisher(deps.redis, stream_maxlen=100)
    staged = webhooks.WebhookPublisher(
        publisher.staged(outbox), dispatcher, outbox=outbox, source="persist:x"
    )
    await staged.publish(event, [uuid.UUID(alice.id), uuid.UUID(bob.id)])
    queue = deps.settings.webhook_queue_name
    assert await deps.redis.zcard(queue) == 0 and len(outbox) == 2  # the event, then its delivery
    async with deps.redis.pipeline(transaction=True) as pipe:
        for stage in outbox:
            await stage(pipe)
        await pipe.execute()
    [job_id] = [j.decode() for j in await deps.redis.zrange(queue, 0, -1)]
    state = await job_state(deps.redis, queue, job_id)
    assert state.function == DELIVER_WEBHOOK
    assert state.args[0]["event"]["data"]["offline_recipient_ids"] == [bob.id]
    # The same job again (a retry after a crash) dispatches the same delivery: nothing new is queued.
    again: Outbox = []
    await webhooks.WebhookPublisher(
        publisher.staged(again), dispatcher, outbox=again, source="persist:x"
    ).publish(event, [uuid.UUID(alice.id), uuid.UUID(bob.id)])
    async with deps.redis.pipeline(transaction=True) as pipe:
        for stage in again:
            await stage(pipe)
        await pipe.execute()
    assert await deps.redis.zcard(queue) == 1


async def test_a_receiver_that_hangs_holds_up_no_message(
    api: ApiClient, deps: Deps, settings: Settings
) -> None:
    """Deliveries have slots of their own: with every one of them taken by a receiver that does
    not answer, messages are still stored at once."""
    admin = await _admin(api, deps)
    alice, _bob, cid = await api.pair()
    slow = settings.model_copy(
        update={
            "worker_max_jobs": 4,
            "webhook_max_jobs": 2,
            "webhook_timeout_seconds": 3,
            "webhook_max_tries": 1,
        }
    )
    worker = create_worker(slow, handle_signals=False, poll_delay=0.05)
    task = asyncio.create_task(worker.main())
    try:
        async with receiving(Receiver(then="hang", hang_seconds=5)) as receiver:
            await _register(api, admin, receiver.url, "message.created")
            waits = []
            for n in range(8):  # twice as many deliveries as the worker has slots in all
                sent = await send(api, alice, cid, f"message {n}")
                began = time.monotonic()
                async with asyncio.timeout(10):
                    while (await job_state(deps.redis, slow.queue_name, sent["job_id"])).status != "complete":
                        await asyncio.sleep(0.02)
                waits.append(time.monotonic() - began)
            assert max(waits) < 1.5, [round(w, 2) for w in waits]
            assert 1 <= len(receiver.received) <= 2  # the deliveries' own slots, and no more
            # What /admin/workers shows of it: the message slots idle, the delivery slots taken.
            async with asyncio.timeout(2):
                while (record := worker._record())["lanes"][1]["running"] < 2:
                    await asyncio.sleep(0.02)
            assert record["running"] == 0 and record["max_jobs"] == 4
            assert [(lane["max_jobs"], lane["running"]) for lane in record["lanes"]] == [(4, 0), (2, 2)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()
