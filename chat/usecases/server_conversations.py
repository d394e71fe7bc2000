"""The app's backend's conversations (`/server/conversations/{external_id}`): groups named by the
app's own ids, with exactly the members it says and no owner; and messages into them, sent as one
of their members or, without a sender, as system messages.

Members are named by their external ids and must exist already (made by `PUT /server/users` or a
first app token). Every membership change updates the Redis mirror and is announced as the users'
own changes are (`chat.usecases.participants.announce`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chat.domain import membership
from chat.domain.sequence import Sequencer
from chat.errors import NotFound, field_error
from chat.infra.db import Sessions, upsert_insert
from chat.infra.storage import Storage
from chat.models import Conversation, Participant, User
from chat.realtime.eventbus import Publisher
from chat.realtime.events import ConversationCreated
from chat.schemas import ConversationOut
from chat.usecases.conversations import MAX_PARTICIPANTS, announced_view, conversation_view, participant_ids
from chat.usecases.messages import Queued, Sending
from chat.usecases.participants import announce

# The server reads a conversation as no participant: no unread counts, no reactions of its own.
SERVER_VIEWER = uuid.UUID(int=0)
MEMBERS_FIELD = "body.member_ids"


@dataclass(frozen=True, slots=True)
class ServerConversations:
    """The server API's conversation writes: the collaborators each of them shares."""

    sessions: Sessions
    redis: Redis
    sequencer: Sequencer
    publisher: Publisher
    storage: Storage

    async def put(
        self, external_id: str, title: str, member_ids: Sequence[str], metadata: dict[str, Any] | None
    ) -> tuple[ConversationOut, bool]:
        """Create or update the group named `external_id` so that its members are exactly
        `member_ids`; the conversation, and whether it is new. `metadata` None keeps what it had."""
        async with self.sessions() as session:
            wanted = await _users(session, member_ids, MEMBERS_FIELD)
            cid, created = await _upsert(session, external_id, title, metadata)
            before = await participant_ids(session, cid)
            removed = [u for u in before if u not in set(wanted)]
            if removed:
                await session.execute(
                    delete(Participant).where(
                        Participant.conversation_id == cid, Participant.user_id.in_(removed)
                    )
                )
            added = await _insert_members(session, cid, wanted)
            await session.commit()
            view = await conversation_view(session, cid, SERVER_VIEWER, self.storage)
        if created:
            # As a user's new group: the mirror seeded and the counter set, so the first send needs
            # no Postgres; everyone in it hears of it.
            await membership.seed(self.redis, cid, b"0", wanted)
            await self.sequencer.raise_to(cid, 0)
            announced = ConversationCreated(conversation_id=cid, data=announced_view(view))
            await self.publisher.publish(announced, wanted)
        else:
            everyone = list(dict.fromkeys([*before, *added]))
            await announce(self.redis, self.publisher, cid, everyone, added=added, removed=removed)
        return view, created

    async def add_members(self, external_id: str, member_ids: Sequence[str]) -> ConversationOut:
        """Add members (those already in stay as they are); the conversation afterwards."""
        async with self.sessions() as session:
            cid = await conversation_id(session, external_id, lock=True)
            wanted = await _users(session, member_ids, MEMBERS_FIELD)
            added = await _insert_members(session, cid, wanted)
            await session.commit()
            view = await conversation_view(session, cid, SERVER_VIEWER, self.storage)
            everyone = await participant_ids(session, cid)
        await announce(self.redis, self.publisher, cid, everyone, added=added)
        return view

    async def remove_member(self, external_id: str, member_id: str) -> None:
        """Remove one member; 404 for an unknown conversation, or someone not in it."""
        async with self.sessions() as session:
            cid = await conversation_id(session, external_id, lock=True)
            user = await session.scalar(select(User.id).where(User.external_id == member_id))
            everyone = await participant_ids(session, cid)
            if user is None or user not in everyone:
                raise NotFound("No such member of this conversation.")
            await session.execute(
                delete(Participant).where(Participant.conversation_id == cid, Participant.user_id == user)
            )
            await session.commit()
        await announce(self.redis, self.publisher, cid, everyone, removed=[user])


async def send(
    sessions: Sessions,
    sending: Sending,
    external_id: str,
    body: str,
    client_id: str,
    sender: str | None,
) -> Queued:
    """Queue a message into the conversation `external_id`: as its member `sender` (an external
    id), or, without one, a system message. Idempotent on `client_id` either way."""
    async with sessions() as session:
        cid = await conversation_id(session, external_id)
        me: uuid.UUID | None = None
        if sender is not None:
            me = await session.scalar(
                select(User.id)
                .join(Participant, Participant.user_id == User.id)
                .where(User.external_id == sender, Participant.conversation_id == cid)
            )
            if me is None:
                raise field_error("body.sender_id", f"No such member of this conversation: {sender}.")
    return await sending.accept(me, cid, body, client_id=client_id)


async def conversation_id(session: AsyncSession, external_id: str, *, lock: bool = False) -> uuid.UUID:
    """The id of the conversation the app calls `external_id` (404 if none); `lock` takes its row
    lock to the commit, so that two membership changes of one conversation run one at a time."""
    query = select(Conversation.id).where(Conversation.external_id == external_id)
    found = await session.scalar(query.with_for_update() if lock else query)
    if found is None:
        raise NotFound("No such conversation.")
    return found


async def _users(session: AsyncSession, external_ids: Sequence[str], field: str) -> list[uuid.UUID]:
    """The users the app calls `external_ids`, in its order, once each; 422 naming the unknown."""
    wanted = list(dict.fromkeys(external_ids))
    if len(wanted) > MAX_PARTICIPANTS:
        raise field_error(field, f"A conversation has at most {MAX_PARTICIPANTS} participants.")
    rows = await session.execute(select(User.external_id, User.id).where(User.external_id.in_(wanted)))
    found: dict[str | None, uuid.UUID] = {external: uid for external, uid in rows}
    missing = [e for e in wanted if e not in found]
    if missing:
        raise field_error(field, f"No such user: {', '.join(missing)}.")
    return [found[e] for e in wanted]


async def _upsert(
    session: AsyncSession, external_id: str, title: str, metadata: dict[str, Any] | None
) -> tuple[uuid.UUID, bool]:
    """The conversation's id, created (no owner) or updated, its row locked; whether it is new.
    Two first PUTs at once make one conversation: the second updates what the first made."""
    now = datetime.now(UTC)
    values = {
        "id": uuid.uuid4(),
        "kind": "group",
        "title": title,
        "external_id": external_id,
        "app_metadata": metadata,
        "created_by": None,
        "created_at": now,
        "last_seq": 0,
        "last_activity_at": now,
    }
    inserted = await session.scalar(
        upsert_insert(session)(Conversation)
        .values(values)
        .on_conflict_do_nothing(index_elements=["external_id"])
        .returning(Conversation.id)
    )
    if inserted is not None:
        return inserted, True
    changes: dict[str, Any] = {"title": title}
    if metadata is not None:
        changes["app_metadata"] = metadata
    # The update takes the row lock to the commit, as `conversation_id(lock=True)` does.
    found = await session.scalar(
        update(Conversation)
        .where(Conversation.external_id == external_id)
        .values(changes)
        .returning(Conversation.id)
    )
    if found is None:
        raise NotFound("No such conversation.")  # deleted between the two statements
    return found, False


_INSERT_PAGE = 1_000  # rows a statement: six bind parameters each


async def _insert_members(session: AsyncSession, cid: uuid.UUID, wanted: list[uuid.UUID]) -> list[uuid.UUID]:
    """Add those of `wanted` not in yet, all as members (no one owns the app's conversations), in
    the caller's transaction; the ones added. A concurrent add of the same user is no conflict."""
    current = set(await participant_ids(session, cid))
    new = [u for u in wanted if u not in current]
    if len(current) + len(new) > MAX_PARTICIPANTS:
        raise field_error(MEMBERS_FIELD, f"A conversation has at most {MAX_PARTICIPANTS} participants.")
    if not new:
        return []
    now = datetime.now(UTC)
    rows = [
        {"conversation_id": cid, "user_id": u, "role": "member", "last_read_seq": 0, "joined_at": now}
        for u in new
    ]
    inserted: set[uuid.UUID] = set()
    # In pages: one multi-row INSERT of 10,000 rows would pass asyncpg's 32,767 bind parameters.
    for start in range(0, len(rows), _INSERT_PAGE):
        added = await session.scalars(
            upsert_insert(session)(Participant)
            .values(rows[start : start + _INSERT_PAGE])
            .on_conflict_do_nothing()
            .returning(Participant.user_id)
        )
        inserted.update(added)
    return [u for u in new if u in inserted]
