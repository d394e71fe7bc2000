"""Typing indicators: ephemeral, rate limited, never stored."""

from __future__ import annotations

from dataclasses import dataclass

from falcon.asgi import Request, Response
from redis.asyncio import Redis

from api.auth import current_user
from api.http import path_uuid
from chat.infra.db import Sessions
from chat.realtime.eventbus import Publisher
from chat.usecases import reading


@dataclass(frozen=True, slots=True)
class TypingIndicator:
    sessions: Sessions
    redis: Redis
    publisher: Publisher
    typing_interval: float

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        await reading.typing(self.sessions, self.redis, self.publisher, self.typing_interval, me, cid)
        resp.status = 204
