"""The server API's conversations and messages: the app's backend names conversations and users by
its own ids; parsed here, done by `chat.usecases.server_conversations`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from falcon.asgi import Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from api.fields import NoNul, Printable
from api.http import parse, send
from api.resources.messages import MessageText, accepted
from chat.infra.db import Sessions
from chat.usecases import server_conversations
from chat.usecases.conversations import MAX_PARTICIPANTS
from chat.usecases.messages import Sending
from chat.usecases.server_conversations import ServerConversations

MAX_METADATA_BYTES = 4096
# As an app token's `sub` and a path's external id (api.serverauth): else no path could reach it.
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=128), Printable]


def _small(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(orjson.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


# What the app's backend keeps with a user or a conversation: a JSON object of at most 4 KiB.
Metadata = Annotated[dict[str, Any] | None, AfterValidator(_small)]
MemberIds = Annotated[list[ExternalId], Field(max_length=MAX_PARTICIPANTS)]


class PutBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]
    member_ids: MemberIds
    metadata: Metadata = None


class MembersBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    member_ids: Annotated[list[ExternalId], Field(min_length=1, max_length=MAX_PARTICIPANTS)]


class ServerSendBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    body: MessageText
    # Required: the app's backend retries, and each retry must be the same message.
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=64), NoNul]
    sender_id: ExternalId | None = None


@dataclass(frozen=True, slots=True)
class ServerConversation:
    conversations: ServerConversations
    max_body: int

    async def on_put(self, req: Request, resp: Response, external_id: str) -> None:
        body = await parse(req, PutBody, self.max_body)
        view, created = await self.conversations.put(external_id, body.title, body.member_ids, body.metadata)
        send(resp, view, 201 if created else 200)


@dataclass(frozen=True, slots=True)
class ServerMembers:
    conversations: ServerConversations
    max_body: int

    async def on_post(self, req: Request, resp: Response, external_id: str) -> None:
        body = await parse(req, MembersBody, self.max_body)
        send(resp, await self.conversations.add_members(external_id, body.member_ids))


@dataclass(frozen=True, slots=True)
class ServerMember:
    conversations: ServerConversations

    async def on_delete(
        self, req: Request, resp: Response, external_id: str, member_external_id: str
    ) -> None:
        await self.conversations.remove_member(external_id, member_external_id)
        resp.status = 204


@dataclass(frozen=True, slots=True)
class ServerMessages:
    sessions: Sessions
    # The users' own accept use case: a member's send keeps that member's send limit.
    sending: Sending
    max_body: int

    async def on_post(self, req: Request, resp: Response, external_id: str) -> None:
        body = await parse(req, ServerSendBody, self.max_body)
        queued = await server_conversations.send(
            self.sessions, self.sending, external_id, body.body, body.client_id, body.sender_id
        )
        accepted(resp, queued)
