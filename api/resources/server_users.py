"""The server API's users, tokens and jobs: parsed here, done by `chat.usecases.server_users`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from redis.asyncio import Redis

from api.fields import NoNul
from api.http import parse, query_int, send
from api.operations.base import PREFIX
from api.resources.server_conversations import ExternalId, Metadata
from chat.errors import field_error
from chat.identity.security import Tokens
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.jobqueue.accept import Enqueuer
from chat.jobqueue.lanes import Queues
from chat.schemas import MessageOut
from chat.usecases import jobs, server_users
from chat.usecases.export import DEFAULT_LIMIT, MAX_LIMIT, export_user

DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), NoNul]


class PutUserBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    display_name: DisplayName | None = None
    username: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{3,32}$")] | None = None
    metadata: Metadata = None


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    external_id: ExternalId
    display_name: DisplayName | None = None
    ttl_seconds: Annotated[int, Field(ge=1)] = 3600


class ErasureJob(BaseModel):
    job_id: str


class UserExport(BaseModel):
    """`GET /server/users/{external_id}/export`: the user's profile (with `metadata` and the times
    they were deactivated and erased), their conversations with their part in each, the users they
    block, and a page of the messages they sent."""

    user: dict[str, Any]
    conversations: list[dict[str, Any]]
    blocks: list[dict[str, Any]]
    messages: list[MessageOut]
    next_cursor: str | None


class ServerToken(BaseModel):
    access_token: str
    token_type: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class ServerUser:
    sessions: Sessions
    redis: Redis
    queue: Enqueuer
    max_body: int

    async def on_put(self, req: Request, resp: Response, external_id: str) -> None:
        body = await parse(req, PutUserBody, self.max_body)
        user, created = await server_users.put(
            self.sessions, external_id, body.display_name, body.username, body.metadata
        )
        if created:
            resp.set_header("Location", f"{PREFIX}/server/users/{quote(external_id, safe='')}")
        send(resp, user, 201 if created else 200)

    async def on_get(self, req: Request, resp: Response, external_id: str) -> None:
        send(resp, server_users.server_view(await server_users.find(self.sessions, external_id)))

    async def on_delete(self, req: Request, resp: Response, external_id: str) -> None:
        job_id = await server_users.erase(self.sessions, self.redis, self.queue, external_id)
        resp.set_header("Location", f"{PREFIX}/server/jobs/{quote(job_id, safe='')}")
        send(resp, ErasureJob(job_id=job_id), 202)


@dataclass(frozen=True, slots=True)
class ServerUserActive:
    """`/deactivate` and `/reactivate`: one resource per path, told apart by `active`."""

    sessions: Sessions
    redis: Redis
    active: bool

    async def on_post(self, req: Request, resp: Response, external_id: str) -> None:
        await server_users.set_active(self.sessions, self.redis, external_id, self.active)
        resp.status = 204


@dataclass(frozen=True, slots=True)
class ServerUserExport:
    sessions: Sessions
    storage: Storage

    async def on_get(self, req: Request, resp: Response, external_id: str) -> None:
        user = await server_users.find(self.sessions, external_id)
        limit = query_int(req, "limit", default=DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT)
        cursor = req.get_param("cursor") or None
        send(resp, await export_user(self.sessions, user.id, cursor, limit, storage=self.storage))


@dataclass(frozen=True, slots=True)
class ServerTokens:
    sessions: Sessions
    tokens: Tokens
    max_ttl_seconds: int
    max_body: int

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, TokenBody, self.max_body)
        if body.ttl_seconds > self.max_ttl_seconds:
            raise field_error(
                "body.ttl_seconds", f"At most {self.max_ttl_seconds} (APP_JWT_MAX_TTL_SECONDS)."
            )
        ttl = timedelta(seconds=body.ttl_seconds)
        send(
            resp,
            await server_users.token(self.sessions, self.tokens, body.external_id, body.display_name, ttl),
        )


@dataclass(frozen=True, slots=True)
class ServerJob:
    sessions: Sessions
    redis: Redis
    queues: Queues

    async def on_get(self, req: Request, resp: Response, job_id: str) -> None:
        send(resp, await jobs.state_for(self.sessions, self.redis, self.queues, None, job_id))
