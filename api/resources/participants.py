"""Who is in a group: add people, leave, remove someone (the owner)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from api.auth import current_user
from api.http import parse, path_uuid, send
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.realtime.eventbus import Publisher
from chat.usecases import participants
from chat.usecases.conversations import MAX_PARTICIPANTS


class AddBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_PARTICIPANTS)]


@dataclass(frozen=True, slots=True)
class Participants:
    sessions: Sessions
    redis: Redis
    publisher: Publisher
    max_body: int
    storage: Storage

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, AddBody, self.max_body)
        view = await participants.add(
            self.sessions, self.redis, self.publisher, self.storage, me, cid, body.user_ids
        )
        send(resp, view)


@dataclass(frozen=True, slots=True)
class ParticipantById:
    sessions: Sessions
    redis: Redis
    publisher: Publisher

    async def on_delete(self, req: Request, resp: Response, conversation_id: str, user_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        target = path_uuid(user_id, "participant")
        me = current_user(req)
        await participants.remove(self.sessions, self.redis, self.publisher, me, cid, target)
        resp.status = 204
