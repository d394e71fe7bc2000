"""Loads conversations as clients see them, for many at once without a query per conversation."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat import mentions, reading
from chat.errors import NotFound, Unprocessable, field_error
from chat.models import Conversation, Message, Participant, User
from chat.schemas import ConversationOut, MessageOut, ParticipantOut
from chat.storage import Storage

# A group's size cap: fan-out to this many sockets stays cheap.
MAX_PARTICIPANTS = 1000


async def require_users(session: AsyncSession, user_ids: list[uuid.UUID], field: str) -> None:
    """422 naming the users that do not exist. On the caller's session: one connection at a time."""
    found = set(await session.scalars(select(User.id).where(User.id.in_(user_ids))))
    missing = [str(u) for u in user_ids if u not in found]
    if missing:
        raise field_error(field, f"No such user: {', '.join(missing)}.")


async def conversation_of(
    session: AsyncSession, conversation_id: uuid.UUID, user_id: uuid.UUID, *, lock: bool = False
) -> Conversation:
    """A conversation the caller is in (404 otherwise); `lock` takes its row lock to the commit."""
    await require_participant(session, conversation_id, user_id)
    conversation = await session.get(Conversation, conversation_id, with_for_update=lock)
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


def require_group(conversation: Conversation, field: str, detail: str) -> None:
    """A direct conversation's participants are fixed: adding or removing is a 422."""
    if conversation.kind != "group":
        raise Unprocessable(detail, [{"field": field, "message": "This is a direct conversation."}])


async def require_participant(
    session: AsyncSession, conversation_id: uuid.UUID, user_id: uuid.UUID
) -> Participant:
    """The caller's membership; 404 otherwise, so a non-participant never learns the conversation exists."""
    participant = await session.get(Participant, (conversation_id, user_id))
    if participant is None:
        raise NotFound("No such conversation.")
    return participant


async def conversation_views(
    session: AsyncSession, conversations: Sequence[Conversation], viewer: uuid.UUID, storage: Storage
) -> list[ConversationOut]:
    if not conversations:
        return []
    ids = [c.id for c in conversations]
    members: dict[uuid.UUID, list[ParticipantOut]] = defaultdict(list)
    rows = await session.scalars(
        select(Participant).where(Participant.conversation_id.in_(ids)).order_by(Participant.joined_at)
    )
    muted: set[uuid.UUID] = set()  # the viewer's own setting, read with the participants
    for p in rows:
        members[p.conversation_id].append(ParticipantOut.model_validate(p))
        if p.user_id == viewer and p.muted:
            muted.add(p.conversation_id)

    last_messages = {
        m.conversation_id: MessageOut.model_validate(m)
        for m in await session.scalars(
            select(Message)
            .join(
                Conversation,
                and_(Message.conversation_id == Conversation.id, Message.seq == Conversation.last_seq),
            )
            .where(Conversation.id.in_(ids))
        )
    }

    mine = Participant.__table__.alias("mine")
    unread_rows = await session.execute(
        select(Message.conversation_id, func.count())
        .join(mine, and_(mine.c.conversation_id == Message.conversation_id, mine.c.user_id == viewer))
        .where(
            Message.conversation_id.in_(ids),
            Message.seq > mine.c.last_read_seq,
            Message.sender_id != viewer,
            Message.deleted.is_(False),
        )
        .group_by(Message.conversation_id)
    )
    unread = {cid: int(n) for cid, n in unread_rows.all()}
    mentioned = {
        cid: int(n) for cid, n in (await session.execute(mentions.unread_query(viewer, ids, mine))).all()
    }
    shown = await reading.as_read(session, list(last_messages.values()), viewer, storage)
    last_messages = {m.conversation_id: m for m in shown}

    return [
        ConversationOut(
            id=c.id,
            kind=c.kind,
            title=c.title,
            created_at=c.created_at,
            participants=members.get(c.id, []),
            last_seq=c.last_seq,
            last_message=last_messages.get(c.id),
            # Muted: nothing counts as unread for the viewer; events still arrive.
            unread_count=0 if c.id in muted else unread.get(c.id, 0),
            unread_mentions=0 if c.id in muted else mentioned.get(c.id, 0),
            muted=c.id in muted,
        )
        for c in conversations
    ]


async def conversation_view(
    session: AsyncSession, conversation_id: uuid.UUID, viewer: uuid.UUID, storage: Storage
) -> ConversationOut:
    conversation = await session.get(Conversation, conversation_id, populate_existing=True)
    if conversation is None:
        raise NotFound("No such conversation.")
    [view] = await conversation_views(session, [conversation], viewer, storage)
    return view


async def participant_ids(session: AsyncSession, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(Participant.user_id).where(Participant.conversation_id == conversation_id)
    )
    return list(rows)
