"""Conversations: create one, list mine, read one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from redis.asyncio import Redis
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.fields import NoNul
from api.http import limit_param, parse, path_uuid, send, time_cursor
from api.views import (
    MAX_PARTICIPANTS,
    conversation_view,
    conversation_views,
    require_participant,
    require_users,
)
from chat import blocks, cursors, membership
from chat.errors import Forbidden, Unauthorized, field_error
from chat.eventbus import Publisher
from chat.events import ConversationCreated
from chat.models import Conversation, Participant, User
from chat.sequence import Sequencer
from chat.storage import Storage


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: Literal["direct", "group"]
    title: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul] | None
    ) = None
    participant_ids: Annotated[list[uuid.UUID], Field(max_length=MAX_PARTICIPANTS)]

    @model_validator(mode="after")
    def _shape(self) -> CreateBody:
        if self.kind == "direct" and len(set(self.participant_ids)) != 1:
            raise ValueError("a direct conversation takes exactly one other participant")
        if self.kind == "group" and self.title is None:
            raise ValueError("a group conversation needs a title")
        return self


@dataclass(frozen=True, slots=True)
class Conversations:
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    sequencer: Sequencer
    publisher: Publisher
    max_body: int
    storage: Storage

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, CreateBody, self.max_body)
        me = current_user(req)
        others = [u for u in dict.fromkeys(body.participant_ids) if u != me]
        if body.kind == "direct" and not others:
            raise field_error("body.participant_ids", "A direct conversation is with someone else.")
        if len(others) + 1 > MAX_PARTICIPANTS:
            raise field_error("body.participant_ids", f"At most {MAX_PARTICIPANTS} participants.")
        now = datetime.now(UTC)
        direct_key = blocks.direct_key(me, others[0]) if body.kind == "direct" else None
        conversation = Conversation(
            id=uuid.uuid4(),
            kind=body.kind,
            title=body.title if body.kind == "group" else None,
            direct_key=direct_key,
            created_by=me,
            created_at=now,
            last_seq=0,
            last_activity_at=now,
        )
        members = [
            Participant(
                conversation_id=conversation.id,
                user_id=me,
                role="owner" if body.kind == "group" else "member",
                last_read_seq=0,
                joined_at=now,
            )
        ]
        members += [
            Participant(
                conversation_id=conversation.id, user_id=u, role="member", last_read_seq=0, joined_at=now
            )
            for u in others
        ]
        async with self.sessions() as session:
            if await session.get(User, me) is None:
                raise Unauthorized("The user of this token no longer exists.", invalid_token=True)
            await require_users(session, others, "body.participant_ids")
            refused: list[uuid.UUID] = []
            if direct_key is not None:
                [other] = others
                if await session.scalar(blocks.blocked_by(other, me)):
                    raise Forbidden("This user has blocked you.")
                if await session.scalar(blocks.blocked_by(me, other)):
                    refused.append(other)  # I blocked them first: they may not send here
                existing = await session.scalar(
                    select(Conversation.id).where(Conversation.direct_key == direct_key)
                )
                if existing is not None:
                    send(resp, await conversation_view(session, existing, me, self.storage), 200)
                    return
            try:
                session.add(conversation)
                await session.flush()
                session.add_all(members)
                await session.commit()
            except IntegrityError:
                # Both users opened the direct conversation at once; the other request won.
                await session.rollback()
                existing = await session.scalar(
                    select(Conversation.id).where(Conversation.direct_key == direct_key)
                )
                if direct_key is None or existing is None:
                    raise
                send(resp, await conversation_view(session, existing, me, self.storage), 200)
                return
            view = await conversation_view(session, conversation.id, me, self.storage)
        # New: no generation yet, so the seed always lands; with the counter there too (no message
        # yet, so 0), the first send needs no Postgres (it would otherwise seed the counter from it).
        await membership.seed(self.redis, conversation.id, b"0", [me, *others], refused)
        await self.sequencer.raise_to(conversation.id, 0)
        await self.publisher.publish(
            ConversationCreated(conversation_id=conversation.id, data=view), [me, *others]
        )
        resp.set_header("Location", f"/api/v1/conversations/{conversation.id}")
        send(resp, view, 201)

    async def on_get(self, req: Request, resp: Response) -> None:
        me = current_user(req)
        limit = limit_param(req)
        after = time_cursor(req)
        query = (
            select(Conversation)
            .join(
                Participant, and_(Participant.conversation_id == Conversation.id, Participant.user_id == me)
            )
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
        async with self.sessions() as session:
            page = list(await session.scalars(query))
            more = len(page) > limit
            page = page[:limit]
            items = await conversation_views(session, page, me, self.storage)
        cursor = cursors.encode_at(page[-1].last_activity_at, page[-1].id) if more else None
        send(resp, {"items": items, "next_cursor": cursor})


@dataclass(frozen=True, slots=True)
class ConversationById:
    sessions: async_sessionmaker[AsyncSession]
    storage: Storage

    async def on_get(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        async with self.sessions() as session:
            await require_participant(session, cid, me)
            send(resp, await conversation_view(session, cid, me, self.storage))
