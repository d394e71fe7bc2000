"""Who is in a group: add people, leave, remove someone (the owner)."""

from __future__ import annotations

import uuid
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
from api.views import MAX_PARTICIPANTS, conversation_view, participant_ids, require_participant, require_users
from chat import membership
from chat.errors import Forbidden, NotFound, ServiceUnavailable, Unprocessable, field_error
from chat.eventbus import Publisher
from chat.events import ParticipantAdded, ParticipantRemoved, UserRef
from chat.models import Conversation, Participant


class AddBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_PARTICIPANTS)]


class Participants:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        publisher: Publisher,
        max_body: int,
    ) -> None:
        self._sessions = sessions
        self._redis = redis
        self._publisher = publisher
        self._max_body = max_body

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, AddBody, self._max_body)
        async with self._sessions() as session:
            await require_participant(session, cid, me)
            conversation = await session.get(Conversation, cid)
            if conversation is None:
                raise NotFound("No such conversation.")
            if conversation.kind != "group":
                raise Unprocessable(
                    "Participants can only be added to group conversations.",
                    [{"field": "body.user_ids", "message": "This is a direct conversation."}],
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
            view = await conversation_view(session, cid, me)
            recipients = await participant_ids(session, cid)
        if new:
            await membership.changed(self._redis, cid)
        for user in new:
            await self._publisher.publish(
                ParticipantAdded(conversation_id=cid, data=UserRef(user_id=user)), recipients
            )
        send(resp, view)


class ParticipantById:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        publisher: Publisher,
    ) -> None:
        self._sessions = sessions
        self._redis = redis
        self._publisher = publisher

    async def on_delete(self, req: Request, resp: Response, conversation_id: str, user_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        target = path_uuid(user_id, "participant")
        me = current_user(req)
        async with self._sessions() as session:
            await require_participant(session, cid, me)
            # Removals from one conversation take its row lock and run one at a time, each seeing
            # the last one's result: two removals of the same participant would otherwise both
            # delete the row (and announce it), and the owner and the heir leaving together would
            # leave the group without an owner.
            conversation = await session.get(Conversation, cid, with_for_update=True)
            if conversation is None:
                raise NotFound("No such conversation.")
            if conversation.kind != "group":
                raise Unprocessable(
                    "Participants of a direct conversation are fixed.",
                    [{"field": "path.user_id", "message": "This is a direct conversation."}],
                )
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
        await membership.changed(self._redis, cid)
        await self._publisher.publish(
            ParticipantRemoved(conversation_id=cid, data=UserRef(user_id=target)), recipients
        )
        resp.status = 204
