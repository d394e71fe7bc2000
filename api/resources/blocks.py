"""`/users/me/blocks`: the users I blocked (chat.usecases.blocks)."""

from __future__ import annotations

from dataclasses import dataclass

from falcon.asgi import Request, Response
from redis.asyncio import Redis

from api.auth import current_user
from api.http import limit_param, path_uuid, send, time_cursor
from chat.infra.db import Sessions
from chat.usecases import blocks


@dataclass(frozen=True, slots=True)
class Blocks:
    """`GET /users/me/blocks?limit&cursor`: `{items: [{user_id, created_at}], next_cursor}`,
    newest first."""

    sessions: Sessions

    async def on_get(self, req: Request, resp: Response) -> None:
        me, limit, after = current_user(req), limit_param(req), time_cursor(req)
        items, cursor = await blocks.list_blocked(self.sessions, me, limit, after)
        send(resp, {"items": items, "next_cursor": cursor})


@dataclass(frozen=True, slots=True)
class BlockedUser:
    """`PUT` and `DELETE /users/me/blocks/{user_id}`: `204`, idempotent."""

    sessions: Sessions
    redis: Redis

    async def on_put(self, req: Request, resp: Response, user_id: str) -> None:
        await blocks.block(self.sessions, self.redis, current_user(req), path_uuid(user_id, "user"))
        resp.status = 204

    async def on_delete(self, req: Request, resp: Response, user_id: str) -> None:
        await blocks.unblock(self.sessions, self.redis, current_user(req), path_uuid(user_id, "user"))
        resp.status = 204
