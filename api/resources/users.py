"""The current user, user search and public profiles with presence."""

from __future__ import annotations

from dataclasses import dataclass

from falcon.asgi import Request, Response
from redis.asyncio import Redis

from api.auth import current_user
from api.http import limit_param, parse, path_uuid, send
from api.resources.auth import DisplayName
from chat.infra.db import Sessions
from chat.usecases import users


@dataclass(frozen=True, slots=True)
class Me:
    sessions: Sessions
    max_body: int

    async def on_get(self, req: Request, resp: Response) -> None:
        send(resp, await users.me(self.sessions, current_user(req)))

    async def on_patch(self, req: Request, resp: Response) -> None:
        body = await parse(req, DisplayName, self.max_body)
        send(resp, await users.rename(self.sessions, current_user(req), body.display_name))


@dataclass(frozen=True, slots=True)
class Users:
    """`GET /users?q=prefix`: case-insensitive username prefix search, paged by username."""

    sessions: Sessions

    async def on_get(self, req: Request, resp: Response) -> None:
        limit, prefix = limit_param(req), req.get_param("q") or ""
        items, cursor = await users.search(self.sessions, prefix, limit, req.get_param("cursor"))
        send(resp, {"items": items, "next_cursor": cursor})


@dataclass(frozen=True, slots=True)
class UserById:
    sessions: Sessions
    redis: Redis

    async def on_get(self, req: Request, resp: Response, user_id: str) -> None:
        send(resp, await users.profile(self.sessions, self.redis, path_uuid(user_id, "user")))
