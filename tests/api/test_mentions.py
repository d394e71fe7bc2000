"""Mentions: @username resolved to participants when a message is stored, in its events and reads,
and counted per conversation until the mentioned user reads past them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from api.deps import Deps
from chat.domain import mentions
from chat.domain.mentions import names_in
from chat.domain.sequence import Sequencer
from chat.jobqueue.jobs import PersistMessage
from chat.realtime.events import MessageCreated
from tests.support import ApiClient, TestUser
from tests.support.messages import send, stream
from tests.support.settings import RunWorker
from workers import store


def test_names_are_read_like_a_person_writes_them() -> None:
    assert names_in("hi @Bob and @carol.") == [(3, "bob"), (12, "carol"), (12, "carol.")]
    assert names_in("mail me at bob@example.com or @@bob") == []
    assert names_in("@ab is too short, @bob twice @bob") == [(18, "bob")]
    assert names_in(None) == []


async def test_mentions_are_resolved_published_read_and_counted_until_read(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, carol, eve = [await api.user() for _ in range(4)]
    gid = (await api.conversation(alice, bob, carol))["id"]
    body = (
        f"hi @{bob.username.upper()} and @{carol.username}, "
        f"not @{eve.username}, @{alice.username} or @nobody."
    )
    sent = await send(api, alice, gid, body)
    await run_worker()

    message = (await api.get(f"/messages/{sent['id']}", carol)).json
    assert message["mentions"] == [bob.id, carol.id, alice.id]  # participants only, in the body's order
    for user in (alice, bob, carol):
        [created] = [e for e in await stream(deps.redis, user.id) if isinstance(e, MessageCreated)]
        assert [str(u) for u in created.data.mentions] == [bob.id, carol.id, alice.id]
    history = (await api.get(f"/conversations/{gid}/messages", bob)).json["items"]
    assert history[0]["mentions"] == [bob.id, carol.id, alice.id]

    async def unread(user: TestUser) -> int:
        view = (await api.get(f"/conversations/{gid}", user)).json
        assert view["last_message"]["mentions"] == [bob.id, carol.id, alice.id]
        count: int = view["unread_mentions"]
        return count

    # Alice named herself: not news to her.
    assert (await unread(bob), await unread(carol), await unread(alice)) == (1, 1, 0)
    assert (await api.post(f"/conversations/{gid}/read", bob, json={"seq": sent["seq"]})).status_code in (
        200,
        204,
    )
    assert (await unread(bob), await unread(carol)) == (0, 1)

    # The same job again (a worker died before finishing it): nothing is recorded twice.
    again = PersistMessage(
        message_id=uuid.UUID(sent["id"]),
        conversation_id=uuid.UUID(gid),
        sender_id=uuid.UUID(alice.id),
        seq=sent["seq"],
        body=body,
        client_id=None,
        created_at=datetime.now(UTC),
    )
    async with deps.sessions() as session:
        stored, _ = await store.persist_batch(session, [again], Sequencer(deps.redis))
        assert (await mentions.record(session, [m for m, _ in stored]))[uuid.UUID(sent["id"])] == [
            uuid.UUID(bob.id),
            uuid.UUID(carol.id),
            uuid.UUID(alice.id),
        ]
        await session.commit()
    assert await unread(carol) == 1
