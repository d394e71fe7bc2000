"""Conversations: create one, list mine, read one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from redis.asyncio import Redis

from api.auth import current_user
from api.fields import NoNul
from api.http import limit_param, parse, path_uuid, send, time_cursor
from chat.domain.sequence import Sequencer
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.realtime.eventbus import Publisher
from chat.usecases import conversations
from chat.usecases.conversations import MAX_PARTICIPANTS


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
    sessions: Sessions
    redis: Redis
    sequencer: Sequencer
    publisher: Publisher
    max_body: int
    storage: Storage

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, CreateBody, self.max_body)
        view, created = await conversations.create(
            self.sessions,
            self.redis,
            self.sequencer,
            self.publisher,
            self.storage,
            current_user(req),
            body.kind,
            body.title,
            body.participant_ids,
        )
        if created:
            resp.set_header("Location", f"/api/v1/conversations/{view.id}")
        send(resp, view, 201 if created else 200)

    async def on_get(self, req: Request, resp: Response) -> None:
        me, limit, after = current_user(req), limit_param(req), time_cursor(req)
        items, cursor = await conversations.list_mine(self.sessions, self.storage, me, limit, after)
        send(resp, {"items": items, "next_cursor": cursor})


@dataclass(frozen=True, slots=True)
class ConversationById:
    sessions: Sessions
    storage: Storage

    async def on_get(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        send(resp, await conversations.get(self.sessions, self.storage, current_user(req), cid))
