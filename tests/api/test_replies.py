"""Replies and threads: `reply_to` on a send, `?thread=` on history, the parent's count, the events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from api.deps import Deps
from chat.domain.sequence import Sequencer
from chat.jobqueue.jobs import PersistMessage
from chat.models import Message
from tests.support import ApiClient, TestUser, assert_problem
from tests.support.messages import send, stream
from tests.support.settings import RunWorker
from tests.support.sqlite import sqlite_world
from workers import store


async def reply(api: ApiClient, user: TestUser, cid: str, body: str, parent: str) -> dict[str, Any]:
    result = await api.post(f"/conversations/{cid}/messages", user, json={"body": body, "reply_to": parent})
    assert result.status_code == 202, result.text
    answer: dict[str, Any] = result.json
    return answer


async def test_replies_are_stored_counted_threaded_and_published(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    root = await send(api, alice, cid, "lunch?")
    await send(api, alice, cid, "anyone")
    await run_worker()
    first = await reply(api, bob, cid, "yes", root["id"])
    second = await reply(api, alice, cid, "great", root["id"])
    await run_worker()

    parent = (await api.get(f"/messages/{root['id']}", bob)).json
    stored = (await api.get(f"/messages/{second['id']}", bob)).json
    assert stored["reply_to"] == root["id"] and stored["reply_count"] == 0
    assert parent["reply_to"] is None
    assert parent["reply_count"] == 2 and parent["last_reply_at"] == stored["created_at"]

    thread = await api.get(f"/conversations/{cid}/messages?thread={root['id']}", alice)
    assert thread.status_code == 200, thread.text
    assert [m["id"] for m in thread.json["items"]] == [first["id"], second["id"]]
    assert thread.json["has_more"] is False
    page = await api.get(f"/conversations/{cid}/messages?thread={root['id']}&limit=1", alice)
    assert [m["id"] for m in page.json["items"]] == [second["id"]] and page.json["has_more"] is True
    older = await api.get(f"/conversations/{cid}/messages?thread={root['id']}&before={second['seq']}", alice)
    assert [m["id"] for m in older.json["items"]] == [first["id"]]
    # The whole history still holds everything, replies included.
    history = (await api.get(f"/conversations/{cid}/messages", alice)).json["items"]
    assert [m["seq"] for m in history] == [1, 2, 3, 4]

    for user in (alice, bob):
        created = {
            str(e.data.id): e.data for e in await stream(deps.redis, user.id) if e.type == "message.created"
        }
        assert str(created[first["id"]].reply_to) == root["id"]
        assert created[root["id"]].reply_to is None


async def test_reply_to_must_name_a_stored_message_of_the_same_conversation(
    api: ApiClient, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    carol = await api.user()
    other = (await api.conversation(alice, carol, kind="direct"))["id"]
    elsewhere = await send(api, alice, other, "in another conversation")
    await run_worker()
    path = f"/conversations/{cid}/messages"
    for parent in (str(uuid.uuid4()), elsewhere["id"]):
        problem = assert_problem(await api.post(path, alice, json={"body": "x", "reply_to": parent}), 422)
        assert [e["field"] for e in problem["errors"]] == ["body.reply_to"]
    problem = assert_problem(await api.post(path, alice, json={"body": "x", "reply_to": "nope"}), 422)
    assert [e["field"] for e in problem["errors"]] == ["body.reply_to"]
    # A non-participant learns nothing, whatever the parent: the conversation does not exist for them.
    root = await send(api, alice, cid, "root")
    await run_worker()
    assert_problem(await api.post(path, carol, json={"body": "x", "reply_to": root["id"]}), 404)
    assert_problem(await api.get(f"{path}?thread={root['id']}", carol), 404)
    # Threads: a message of this conversation only; a thread id must be a UUID.
    assert_problem(await api.get(f"{path}?thread={elsewhere['id']}", alice), 404)
    assert_problem(await api.get(f"{path}?thread={uuid.uuid4()}", bob), 404)
    problem = assert_problem(await api.get(f"{path}?thread=nope", bob), 422)
    assert [e["field"] for e in problem["errors"]] == ["query.thread"]
    assert (await api.get(f"{path}?thread={root['id']}", bob)).json == {"items": [], "has_more": False}


async def test_a_reply_stored_again_is_counted_once(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    root = await send(api, alice, cid, "root")
    await run_worker()
    sent = await reply(api, bob, cid, "a reply", root["id"])
    await run_worker()
    # The same job again, as after a worker died between its commit and finishing the job.
    again = PersistMessage(
        message_id=uuid.UUID(sent["id"]),
        conversation_id=uuid.UUID(cid),
        sender_id=uuid.UUID(bob.id),
        seq=sent["seq"],
        body="a reply",
        client_id=None,
        created_at=datetime.now(UTC),
        reply_to=uuid.UUID(root["id"]),
    )
    async with deps.sessions() as session:
        [(message, existed)], _ = await store.persist_batch(session, [again], Sequencer(deps.redis))
        await session.commit()
    assert existed and str(message.reply_to) == root["id"]
    assert (await api.get(f"/messages/{root['id']}", alice)).json["reply_count"] == 1


async def test_replies_on_sqlite_count_like_on_postgres(deps: Deps) -> None:
    """The dev mode's path (SQLite, through SQLAlchemy) keeps the same counts."""
    async with sqlite_world() as world:

        def job(seq: int) -> PersistMessage:
            return PersistMessage(
                message_id=uuid.uuid4(),
                conversation_id=world.conversation,
                sender_id=world.user,
                seq=seq,
                body=f"reply {seq}",
                client_id=None,
                created_at=datetime.now(UTC),
                reply_to=world.message,
            )

        replies = [job(2), job(3)]
        sequencer = Sequencer(deps.redis)
        for batch in (replies, replies[:1]):  # the second time, a retry: nothing new to count
            async with world.sessions() as session:
                await store.persist_batch(session, batch, sequencer)
                await session.commit()
        async with world.sessions() as session:
            parent = await session.get(Message, world.message)
            assert parent is not None and parent.reply_count == 2
            assert parent.last_reply_at == replies[1].created_at
