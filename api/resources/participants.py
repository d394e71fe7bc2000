"""Who is in a group: add people, leave, remove someone (the owner)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.http import parse, path_uuid, send
from api.views import (
    MAX_PARTICIPANTS,
    conversation_of,
    conversation_view,
    participant_ids,
    require_group,
    require_users,
)
from chat import membership
from chat.errors import Forbidden, NotFound, ServiceUnavailable, field_error
from chat.eventbus import Publisher
from chat.events import ParticipantAdded, ParticipantRemoved, UserRef
from chat.models import Participant
from chat.storage import Storage


class AddBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_PARTICIPANTS)]


@dataclass(frozen=True, slots=True)
class Participants:
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    publisher: Publisher
    max_body: int
    storage: Storage

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, AddBody, self.max_body)
        async with self.sessions() as session:
            conversation = await conversation_of(session, cid, me)
            require_group(
                conversation, "body.user_ids", "Participants can only be added to group conversations."
            )
            wanted = list(dict.fromkeys(body.user_ids))
            await require_users(session, wanted, "body.user_ids")
            new: list[uuid.UUID] = []
            for _ in range(3):
                current = set(await participant_ids(session, cid))
                new = [u for u in wanted if u not in current]
                if len(current) + len(new) > MAX_PARTICIPANTS:
                    raise field_error(
                        "body.user_ids", f"A conversation has at most {MAX_PARTICIPANTS} participants."
                    )
                now = datetime.now(UTC)
                session.add_all(
                    Participant(conversation_id=cid, user_id=u, role="member", last_read_seq=0, joined_at=now)
                    for u in new
                )
                try:
                    await session.commit()
                    break
                except IntegrityError:
                    # A concurrent request added some of them first; adding is idempotent: look again.
                    await session.rollback()
            else:
                raise ServiceUnavailable("The participants kept changing; try again.", retry_after=1)
            view = await conversation_view(session, cid, me, self.storage)
            recipients = await participant_ids(session, cid)
        if new:
            await membership.changed(self.redis, cid)
        for user in new:
            await self.publisher.publish(
                ParticipantAdded(conversation_id=cid, data=UserRef(user_id=user)), recipients
            )
        send(resp, view)


@dataclass(frozen=True, slots=True)
class ParticipantById:
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    publisher: Publisher

    async def on_delete(self, req: Request, resp: Response, conversation_id: str, user_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        target = path_uuid(user_id, "participant")
        me = current_user(req)
        async with self.sessions() as session:
            # Removals from one conversation take its row lock and run one at a time, each seeing
            # the last one's result: two removals of the same participant would otherwise both
            # delete the row (and announce it), and the owner and the heir leaving together would
            # leave the group without an owner.
            conversation = await conversation_of(session, cid, me, lock=True)
            require_group(conversation, "path.user_id", "Participants of a direct conversation are fixed.")
            # Read again under the lock: the caller may have left, or become the owner, meanwhile.
            mine = await session.get(Participant, (cid, me), populate_existing=True)
            if mine is None:
                raise NotFound("No such conversation.")
            if target != me and mine.role != "owner":
                raise Forbidden("Only the owner can remove other participants.")
            member = await session.get(Participant, (cid, target), populate_existing=True)
            if member is None:
                raise NotFound("No such participant.")
            recipients = await participant_ids(session, cid)
            await session.delete(member)
            if member.role == "owner":
                # The group keeps an owner: the longest-standing remaining member inherits it.
                heir = await session.scalar(
                    select(Participant)
                    .where(Participant.conversation_id == cid, Participant.user_id != target)
                    .order_by(Participant.joined_at, Participant.user_id)
                    .limit(1)
                )
                if heir is not None:
                    heir.role = "owner"
            await session.commit()
        await membership.changed(self.redis, cid)
        await self.publisher.publish(
            ParticipantRemoved(conversation_id=cid, data=UserRef(user_id=target)), recipients
        )
        resp.status = 204
