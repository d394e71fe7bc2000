"""Erasing a user (`chat.usecases.erasure`, the `erase_user` job) through the real api, worker,
Postgres and Redis: what the other participant reads afterwards, and a second run changing nothing."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from api.deps import Deps
from chat.cli import set_admin
from chat.domain import membership
from chat.domain.webhooks import create_dispatcher
from chat.jobqueue.jobs import erase_job_id
from chat.jobqueue.state import job_state
from chat.models import Block, Message, Participant, Reaction, RefreshToken, Upload, User
from chat.realtime import events
from chat.realtime.events import MessageCreated
from chat.schemas import MessageOut
from chat.settings import Settings
from chat.usecases.erasure import request_erasure
from tests.support import ApiClient, TestUser
from tests.support.messages import send, stream
from tests.support.settings import RunWorker
from tests.support.uploads import put_signed
from tests.support.webhooks import Receiver, receiving


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"webhook_registry_refresh_seconds": 0, "webhook_backoff_seconds": 0.05}
    )


async def _upload(api: ApiClient, user: TestUser) -> str:
    created = await api.post(
        "/uploads", user, json={"filename": "cat.png", "content_type": "image/png", "size": 3}
    )
    assert created.status_code == 201, created.text
    ticket: dict[str, Any] = created.json
    assert (await put_signed(api, ticket["upload_url"], b"cat", ticket["headers"])).status_code < 300
    upload_id: str = ticket["id"]
    return upload_id


async def _snapshot(deps: Deps, user_id: uuid.UUID) -> dict[str, Any]:
    async with deps.sessions() as session:
        row = await session.get(User, user_id)
        assert row is not None
        counts = {
            model.__name__: await session.scalar(
                select(func.count()).select_from(model).where(column == user_id)
            )
            for model, column in (
                (Reaction, Reaction.user_id),
                (Participant, Participant.user_id),
                (RefreshToken, RefreshToken.user_id),
                (Block, Block.blocker_id),
            )
        }
        uploads = list(await session.scalars(select(Upload.discarded_at).where(Upload.owner_id == user_id)))
        user = {c.key: getattr(row, c.key) for c in User.__mapper__.column_attrs}
    return {"user": user, "counts": counts, "uploads": uploads}


async def test_erasure_leaves_others_history_readable_and_a_second_run_changes_nothing(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    group = await api.conversation(bob, alice)
    upload_id = await _upload(api, alice)
    sent = await api.post(
        f"/conversations/{cid}/messages", alice, json={"body": "pineapple secret", "attachments": [upload_id]}
    )
    assert sent.status_code == 202, sent.text
    in_group = await send(api, alice, group["id"], "pineapple in the group")
    bobs = await send(api, bob, cid, "bob says pineapple")
    await run_worker()
    assert (await api.put(f"/messages/{bobs['id']}/reactions/%F0%9F%91%8D", alice)).status_code == 204
    assert (await api.put(f"/messages/{bobs['id']}/reactions/%F0%9F%91%8D", bob)).status_code == 204
    assert (await api.put(f"/users/me/blocks/{bob.id}", alice)).status_code in (200, 201, 204)
    await run_worker()

    # A delivery about alice waits on the webhook lane (a retry, deferred), as the erasure starts.
    async with receiving(Receiver()) as receiver:
        hooked = await api.post(
            "/admin/webhooks",
            admin,
            json={"url": receiver.url, "events": ["message.created", "message.deleted"]},
        )
        assert hooked.status_code == 201, hooked.text
        async with deps.sessions() as session:
            row = await session.get(Message, uuid.UUID(in_group["id"]))
            assert row is not None
            created = MessageCreated(conversation_id=row.conversation_id, data=MessageOut.model_validate(row))
        lane = deps.settings.webhook_queue_name
        dispatcher = create_dispatcher(deps.redis, deps.sessions, queue_name=lane, refresh_seconds=0)
        assert await dispatcher.dispatch(created, [uuid.UUID(bob.id)]) == 1
        # Due in a moment, as a retry would be: the erasure runs first.
        [(pending, _)] = await deps.redis.zrange(lane, 0, -1, withscores=True)
        await deps.redis.zadd(lane, {pending: int((time.time() + 1.5) * 1000)}, xx=True)

        job_id = await request_erasure(deps.sessions, deps.redis, deps.queue, uuid.UUID(alice.id))
        assert job_id == erase_job_id(uuid.UUID(alice.id), "")
        # Asked twice: one job.
        assert await request_erasure(deps.sessions, deps.redis, deps.queue, uuid.UUID(alice.id)) == job_id
        await run_worker()
        assert (await job_state(deps.redis, deps.settings.queue_name, job_id)).status == "complete"
        assert await deps.redis.zcard(lane) == 0  # the pending delivery ran (and was dropped)

    # Nothing about alice's message left, the message.deleted events (body null) did.
    delivered = [r.json for r in receiver.received]
    assert all(d["type"] == "message.deleted" for d in delivered), delivered
    assert {d["data"]["id"] for d in delivered} == {sent.json["id"], in_group["id"]}
    assert all(d["data"]["body"] is None for d in delivered)

    history = await api.get(f"/conversations/{cid}/messages", bob)
    assert history.status_code == 200, history.text
    by_id = {m["id"]: m for m in history.json["items"]}
    gone = by_id[sent.json["id"]]
    assert gone["deleted"] and gone["body"] is None and gone["attachments"] == []
    assert gone["sender_id"] == alice.id
    assert by_id[bobs["id"]]["reactions"] == [{"emoji": "👍", "count": 1, "me": True}]
    found = await api.get("/search/messages?q=pineapple", bob)
    assert [m["id"] for m in found.json["items"]] == [bobs["id"]]
    assert (await api.get(f"/users/{alice.id}", bob)).json["display_name"] == "Deleted user"

    # Bob heard of it live: deleted messages, the reaction gone, alice out of both conversations.
    heard = [
        e
        for e in await stream(deps.redis, bob.id)
        if e.type in {"message.deleted", "reaction.removed", "participant.removed"}
    ]
    assert {e.type for e in heard} == {"message.deleted", "reaction.removed", "participant.removed"}
    assert {e.conversation_id for e in heard if isinstance(e, events.ParticipantRemoved)} == {
        uuid.UUID(cid),
        uuid.UUID(group["id"]),
    }
    assert not await deps.redis.exists(membership.members_key(cid, ""))

    after = await _snapshot(deps, uuid.UUID(alice.id))
    user = after["user"]
    assert user["username"] == user["username_key"] == f"deleted-{uuid.UUID(alice.id).hex[:12]}"
    assert user["password_hash"] is None and user["external_id"] is None and user["app_metadata"] is None
    assert user["erased_at"] is not None and user["deactivated_at"] is not None
    assert after["counts"] == {"Reaction": 0, "Participant": 0, "RefreshToken": 0, "Block": 0}
    assert after["uploads"] and all(at is not None for at in after["uploads"])
    # The group is bob's now.
    members = (await api.get(f"/conversations/{group['id']}", bob)).json["participants"]
    assert [(p["user_id"], p["role"]) for p in members] == [(bob.id, "owner")]

    # The job again: nothing changes, nothing is published.
    events_before = len(await stream(deps.redis, bob.id))
    await deps.redis.delete(f"arq:result:{job_id}")
    assert await request_erasure(deps.sessions, deps.redis, deps.queue, uuid.UUID(alice.id)) == job_id
    await run_worker()
    assert await _snapshot(deps, uuid.UUID(alice.id)) == after
    assert len(await stream(deps.redis, bob.id)) == events_before
