"""System messages (`kind: "system"`, no sender), accepted as the server API accepts them, stored by
a real worker, and read back as every reader sees them: history, one message, search, unread
counts, events and webhooks."""

from __future__ import annotations

import uuid

from api.deps import Deps
from chat.domain import ratelimit
from chat.realtime.events import MessageCreated
from chat.usecases.messages import Queued, Sending
from tests.support import ApiClient, assert_problem
from tests.support.messages import send, stream
from tests.support.settings import RunWorker


def sending(deps: Deps) -> Sending:
    """The accept use case as the api builds it (one send per user per second, to show a system
    message is not held to any user's limit)."""
    return Sending(
        deps.sessions,
        deps.reader,
        deps.redis,
        deps.queue,
        deps.sequencer,
        deps.storage,
        ratelimit.parse("1/second"),
        deps.settings.client_id_claim_seconds,
        deps.settings.upload_unsent_ttl_seconds,
    )


async def system(deps: Deps, cid: str, body: str, client_id: str) -> Queued:
    return await sending(deps).accept(None, uuid.UUID(cid), body, client_id=client_id)


async def test_a_system_message_is_stored_and_read_as_kind_system_without_a_sender(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    mine = await send(api, alice, cid, "from alice")
    queued = await system(deps, cid, "alice joined the game", "sys-1")
    assert queued.seq == mine["seq"] + 1
    assert await run_worker() == 2

    page = (await api.get(f"/conversations/{cid}/messages", bob)).json["items"]
    assert [(m["kind"], m["sender_id"], m["body"]) for m in page] == [
        ("user", alice.id, "from alice"),
        ("system", None, "alice joined the game"),
    ]
    one = (await api.get(f"/messages/{queued.id}", alice)).json
    assert (one["kind"], one["sender_id"], one["seq"]) == ("system", None, queued.seq)
    found = (await api.get("/search/messages", bob, query_string="q=joined")).json["items"]
    assert [(m["id"], m["kind"], m["sender_id"]) for m in found] == [(str(queued.id), "system", None)]
    # Unread for everyone, the one who just sent included: it is from others.
    unread = {u.id: (await api.get(f"/conversations/{cid}", u)).json["unread_count"] for u in (alice, bob)}
    assert unread == {alice.id: 1, bob.id: 2}
    # Everyone gets the event, in the same stream as the users' messages.
    for user in (alice, bob):
        created = [e for e in await stream(deps.redis, user.id) if isinstance(e, MessageCreated)]
        newest = created[-1].data
        assert (newest.kind, newest.sender_id, newest.seq) == ("system", None, queued.seq)


async def test_system_messages_are_idempotent_on_client_id_and_not_user_limited(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    _, _, cid = await api.pair()
    first = await system(deps, cid, "hello", "same")
    again = await system(deps, cid, "hello", "same")
    assert (again.id, again.seq) == (first.id, first.seq)
    # The same client_id in another conversation is another message.
    _, _, other = await api.pair()
    assert (await system(deps, other, "hello", "same")).id != first.id
    try:
        await system(deps, cid, "another body", "same")
    except Exception as exc:  # the api maps it to 409
        assert type(exc).__name__ == "Conflict"
    else:
        raise AssertionError("a repeated client_id with another body was accepted")
    # Far past the per-user limit of one a second: the server key has its own.
    seqs = [(await system(deps, cid, f"n{i}", f"c{i}")).seq for i in range(10)]
    assert seqs == list(range(first.seq + 1, first.seq + 11))
    assert await run_worker() == 12


async def test_users_cannot_edit_or_delete_a_system_message(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, _ = await api.pair()
    group = await api.conversation(alice, bob)  # alice owns it: even an owner may not delete it
    queued = await system(deps, group["id"], "rules changed", "r1")
    await run_worker()
    for user in (alice, bob):
        assert_problem(await api.patch(f"/messages/{queued.id}", user, json={"body": "mine now"}), 403)
        assert_problem(await api.delete(f"/messages/{queued.id}", user), 403)
