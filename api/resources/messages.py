"""Messages: sends, edits and deletes are parsed here and queued by `chat.usecases.messages`;
history is read from Postgres."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Annotated

import limits
from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from redis.asyncio import Redis

from api.auth import current_user
from api.fields import PG_INT_MAX, NoNul, NotBlankNoNul
from api.http import limit_param, parse, path_uuid, query_int, query_uuid, send
from chat.domain import attachments
from chat.domain.sequence import Sequencer
from chat.errors import field_error
from chat.infra.db import Reader, Sessions
from chat.infra.storage import Storage
from chat.jobqueue.accept import Enqueuer
from chat.usecases import messages, reactions
from chat.usecases.messages import Queued, Sending

MAX_BODY_CHARS = 4000

MessageText = Annotated[str, StringConstraints(max_length=MAX_BODY_CHARS), NotBlankNoNul]


class SendBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    body: MessageText
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=64), NoNul] | None = None
    reply_to: uuid.UUID | None = None
    attachments: list[uuid.UUID] = Field(default=[], max_length=attachments.MAX_ATTACHMENTS)

    @field_validator("attachments", mode="before")
    @classmethod
    def _none_is_none(cls, value: object) -> object:
        # `null` means none, as it does for reply_to and client_id.
        return [] if value is None else value


class EditBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    body: MessageText


def accepted(resp: Response, queued: Queued) -> None:
    resp.set_header("Location", f"/api/v1/messages/{queued.id}")
    send(
        resp,
        {
            "id": queued.id,
            "conversation_id": queued.conversation_id,
            "seq": queued.seq,
            "status": "queued",
            "job_id": queued.job_id,
        },
        202,
    )


@dataclass(frozen=True, slots=True)
class ConversationMessages:
    sessions: Sessions
    reader: Reader
    redis: Redis
    queue: Enqueuer
    sequencer: Sequencer
    send_limit: limits.RateLimitItem | None
    claim_seconds: int
    max_body: int
    storage: Storage
    unsent_upload_seconds: int
    # Built once from the fields above: a send allocates nothing more for it.
    sending: Sending = field(init=False, repr=False)

    def __post_init__(self) -> None:
        sending = Sending(
            self.sessions,
            self.reader,
            self.redis,
            self.queue,
            self.sequencer,
            self.storage,
            self.send_limit,
            self.claim_seconds,
            self.unsent_upload_seconds,
        )
        object.__setattr__(self, "sending", sending)  # frozen: set once, here

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, SendBody, self.max_body)
        sent = self.sending.accept(me, cid, body.body, body.client_id, body.reply_to, body.attachments)
        accepted(resp, await sent)

    async def on_get(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        if req.get_param("cursor") is not None:
            # Lists elsewhere page with cursors; history pages by seq. Silently ignoring it would
            # hand the client the newest page again, forever.
            raise field_error("query.cursor", "History pages by seq: use before=SEQ or after=SEQ.")
        thread = query_uuid(req, "thread", "a message id")
        before = query_int(req, "before", lo=0, hi=PG_INT_MAX)
        after = query_int(req, "after", lo=0, hi=PG_INT_MAX)
        limit = limit_param(req)
        items, has_more = await messages.history(
            self.sessions, self.storage, me, cid, limit=limit, before=before, after=after, thread=thread
        )
        send(resp, {"items": items, "has_more": has_more})


@dataclass(frozen=True, slots=True)
class MessageById:
    sessions: Sessions
    queue: Enqueuer
    max_body: int
    storage: Storage

    async def on_get(self, req: Request, resp: Response, message_id: str) -> None:
        mid = path_uuid(message_id, "message")
        send(resp, await messages.get(self.sessions, self.storage, current_user(req), mid))

    async def on_patch(self, req: Request, resp: Response, message_id: str) -> None:
        me = current_user(req)
        # Who may see the message comes before the body: a stranger learns nothing (404) from it.
        message, _ = await messages.find(self.sessions, me, path_uuid(message_id, "message"))
        body = await parse(req, EditBody, self.max_body)
        accepted(resp, await messages.edit(self.queue, me, message, body.body))

    async def on_delete(self, req: Request, resp: Response, message_id: str) -> None:
        mid = path_uuid(message_id, "message")
        accepted(resp, await messages.delete(self.sessions, self.queue, current_user(req), mid))


@dataclass(frozen=True, slots=True)
class MessageReaction:
    """`PUT` and `DELETE /messages/{id}/reactions/{emoji}`: idempotent, `204`; a worker stores the
    change in the order the api accepted it and announces it with `reaction.added`/`.removed`."""

    sessions: Sessions
    queue: Enqueuer

    async def on_put(self, req: Request, resp: Response, message_id: str, emoji: str) -> None:
        mid = path_uuid(message_id, "message")
        await reactions.add(self.sessions, self.queue, current_user(req), mid, emoji)
        resp.status = 204

    async def on_delete(self, req: Request, resp: Response, message_id: str, emoji: str) -> None:
        mid = path_uuid(message_id, "message")
        await reactions.remove(self.sessions, self.queue, current_user(req), mid, emoji)
        resp.status = 204
