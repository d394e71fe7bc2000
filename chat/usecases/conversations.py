"""Conversations: open a direct one (or find the one there is), create a group, read one as a
member, list mine; and the membership checks and views every conversation use case shares."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis
from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat.domain import blocks, cursors, membership, mentions, reading
from chat.domain.sequence import Sequencer
from chat.errors import Forbidden, NotFound, Unprocessable, field_error
from chat.identity.authn import user_gone
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.models import Conversation, Message, Participant, User
from chat.realtime.eventbus import Publisher
from chat.realtime.events import ConversationCreated
from chat.schemas import ConversationOut, MessageOut, ParticipantOut

# A group's size cap. What a message costs grows with it (docs/design/fanout.md): up to here it
# was measured (docs/benchmarks.md, "Big groups").
MAX_PARTICIPANTS = 10_000
# From this size a group is a room (docs/design/fanout.md): its typing frames are throttled, and its
# conversation.created names only its first ANNOUNCED_PARTICIPANTS. That event is stored once per
# member, so a full list costs members x members (10,000 members: 10,000 copies of 750 KB, 7.5 GB);
# 20 keep a copy near 2 KB (20 MB for 10,000 members).
LARGE_GROUP_MEMBERS = 200
ANNOUNCED_PARTICIPANTS = 20
# A request body that names MAX_PARTICIPANTS members: 10,000 UUIDs are 390 KB of JSON, 10,000
# external ids (128 characters at most) 1.3 MB; the usual body limit (64 KB) holds about 1,600.
MEMBER_LIST_BODY_BYTES = MAX_PARTICIPANTS * 132 + 16 * 1024


async def create(
    sessions: Sessions,
    redis: Redis,
    sequencer: Sequencer,
    publisher: Publisher,
    storage: Storage,
    me: uuid.UUID,
    kind: Literal["direct", "group"],
    title: str | None,
    participant_ids: Sequence[uuid.UUID],
) -> tuple[ConversationOut, bool]:
    """The conversation, and whether it is new: a direct one that exists already is returned."""
    others = [u for u in dict.fromkeys(participant_ids) if u != me]
    if kind == "direct" and not others:
        raise field_error("body.participant_ids", "A direct conversation is with someone else.")
    if len(others) + 1 > MAX_PARTICIPANTS:
        raise field_error("body.participant_ids", f"At most {MAX_PARTICIPANTS} participants.")
    conversation, members = _new(me, kind, title if kind == "group" else None, others)
    direct_key = conversation.direct_key
    async with sessions() as session:
        if await session.get(User, me) is None:
            raise user_gone()
        await require_users(session, others, "body.participant_ids")
        refused: list[uuid.UUID] = []
        if direct_key is not None:
            [other] = others
            if await session.scalar(blocks.blocked_by(other, me)):
                raise Forbidden("This user has blocked you.")
            if await session.scalar(blocks.blocked_by(me, other)):
                refused.append(other)  # I blocked them first: they may not send here
            existing = await _direct(session, direct_key)
            if existing is not None:
                return await conversation_view(session, existing, me, storage), False
        try:
            session.add(conversation)
            await session.flush()
            # Core's executemany (pages of insertmanyvalues), not the unit of work: 10,000 ORM
            # objects cost more in bookkeeping than their INSERT does.
            await session.execute(insert(Participant), members)
            await session.commit()
        except IntegrityError:
            # Both users opened the direct conversation at once; the other request won.
            await session.rollback()
            existing = await _direct(session, direct_key) if direct_key is not None else None
            if existing is None:
                raise
            return await conversation_view(session, existing, me, storage), False
        view = await conversation_view(session, conversation.id, me, storage)
    # New: no generation yet, so the seed always lands; with the counter there too (no message
    # yet, so 0), the first send needs no Postgres (it would otherwise seed the counter from it).
    await membership.seed(redis, conversation.id, b"0", [me, *others], refused)
    await sequencer.raise_to(conversation.id, 0)
    created = ConversationCreated(conversation_id=conversation.id, data=announced_view(view))
    await publisher.publish(created, [me, *others])
    return view, True


def announced_view(view: ConversationOut) -> ConversationOut:
    """The conversation as conversation.created carries it: a room's with its first
    ANNOUNCED_PARTICIPANTS (by joining, so the owner first); GET /conversations/{id} has them all."""
    if len(view.participants) < LARGE_GROUP_MEMBERS:
        return view
    # Members who joined together tie on joined_at: the owner is put first by name.
    first = sorted(view.participants, key=lambda p: p.role != "owner")[:ANNOUNCED_PARTICIPANTS]
    return view.model_copy(update={"participants": first})


def _new(
    me: uuid.UUID, kind: str, title: str | None, others: list[uuid.UUID]
) -> tuple[Conversation, list[dict[str, Any]]]:
    """The rows of a new conversation: it, me (a group's owner) and the others."""
    now = datetime.now(UTC)
    conversation = Conversation(
        id=uuid.uuid4(),
        kind=kind,
        title=title,
        direct_key=blocks.direct_key(me, others[0]) if kind == "direct" else None,
        created_by=me,
        created_at=now,
        last_seq=0,
        last_activity_at=now,
    )
    roles = [(me, "owner" if kind == "group" else "member")] + [(u, "member") for u in others]
    members = [
        {"conversation_id": conversation.id, "user_id": u, "role": role, "last_read_seq": 0, "joined_at": now}
        for u, role in roles
    ]
    return conversation, members


async def _direct(session: AsyncSession, direct_key: str) -> uuid.UUID | None:
    return await session.scalar(select(Conversation.id).where(Conversation.direct_key == direct_key))


async def get(sessions: Sessions, storage: Storage, me: uuid.UUID, cid: uuid.UUID) -> ConversationOut:
    """One conversation as its member `me` sees it; 404 for anyone else."""
    async with sessions() as session:
        await require_participant(session, cid, me)
        return await conversation_view(session, cid, me, storage)


async def list_mine(
    sessions: Sessions,
    storage: Storage,
    me: uuid.UUID,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> tuple[list[ConversationOut], str | None]:
    """A page of my conversations, the most recently active first, and the next page's cursor."""
    query = (
        select(Conversation)
        .join(Participant, and_(Participant.conversation_id == Conversation.id, Participant.user_id == me))
        .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
        .limit(limit + 1)
    )
    if after is not None:
        at, cid = after
        query = query.where(
            or_(
                Conversation.last_activity_at < at,
                and_(Conversation.last_activity_at == at, Conversation.id < cid),
            )
        )
    async with sessions() as session:
        page = list(await session.scalars(query))
        more = len(page) > limit
        page = page[:limit]
        items = await conversation_views(session, page, me, storage)
    cursor = cursors.encode_at(page[-1].last_activity_at, page[-1].id) if more else None
    return items, cursor


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


async def participant_ids(session: AsyncSession, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(Participant.user_id).where(Participant.conversation_id == conversation_id)
    )
    return list(rows)


async def conversation_view(
    session: AsyncSession, conversation_id: uuid.UUID, viewer: uuid.UUID, storage: Storage
) -> ConversationOut:
    conversation = await session.get(Conversation, conversation_id, populate_existing=True)
    if conversation is None:
        raise NotFound("No such conversation.")
    [view] = await conversation_views(session, [conversation], viewer, storage)
    return view


async def conversation_views(
    session: AsyncSession, conversations: Sequence[Conversation], viewer: uuid.UUID, storage: Storage
) -> list[ConversationOut]:
    """Conversations as `viewer` sees them, a few queries for the whole page, not per conversation."""
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
    newest = await _last_messages(session, ids)
    mine = Participant.__table__.alias("mine")
    unread = await _unread(session, ids, viewer, mine)
    mentioned = {
        cid: int(n) for cid, n in (await session.execute(mentions.unread_query(viewer, ids, mine))).all()
    }
    last = {m.conversation_id: m for m in await reading.as_read(session, newest, viewer, storage)}
    return [
        ConversationOut(
            id=c.id,
            kind=c.kind,
            title=c.title,
            external_id=c.external_id,
            created_at=c.created_at,
            participants=members.get(c.id, []),
            last_seq=c.last_seq,
            last_message=last.get(c.id),
            # Muted: nothing counts as unread for the viewer; events still arrive.
            unread_count=0 if c.id in muted else unread.get(c.id, 0),
            unread_mentions=0 if c.id in muted else mentioned.get(c.id, 0),
            muted=c.id in muted,
        )
        for c in conversations
    ]


async def _last_messages(session: AsyncSession, ids: list[uuid.UUID]) -> list[MessageOut]:
    newest = and_(Message.conversation_id == Conversation.id, Message.seq == Conversation.last_seq)
    found = await session.scalars(select(Message).join(Conversation, newest).where(Conversation.id.in_(ids)))
    return [MessageOut.model_validate(m) for m in found]


async def _unread(
    session: AsyncSession, ids: list[uuid.UUID], viewer: uuid.UUID, mine: Any
) -> dict[uuid.UUID, int]:
    """Per conversation, the others' messages past the viewer's read marker."""
    rows = await session.execute(
        select(Message.conversation_id, func.count())
        .join(mine, and_(mine.c.conversation_id == Message.conversation_id, mine.c.user_id == viewer))
        .where(
            Message.conversation_id.in_(ids),
            Message.seq > mine.c.last_read_seq,
            # A system message (no sender) is from others, to everyone.
            or_(Message.sender_id.is_(None), Message.sender_id != viewer),
            Message.deleted.is_(False),
        )
        .group_by(Message.conversation_id)
    )
    return {cid: int(n) for cid, n in rows.all()}
