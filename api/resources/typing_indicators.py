"""Typing indicators: ephemeral, rate limited, never stored."""

from __future__ import annotations

import math
from dataclasses import dataclass

from falcon.asgi import Request, Response
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.http import path_uuid
from api.views import participant_ids, require_participant
from chat import blocks, presence
from chat.blocks import BLOCKED
from chat.errors import Forbidden, TooManyRequests
from chat.eventbus import Publisher
from chat.events import Typing, UserRef


@dataclass(frozen=True, slots=True)
class TypingIndicator:
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    publisher: Publisher
    typing_interval: float

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        async with self.sessions() as session:
            await require_participant(session, cid, me)
            if await session.scalar(blocks.refused(cid, me)):
                raise Forbidden(BLOCKED)
            recipients = [u for u in await participant_ids(session, cid) if u != me]
        wait_ms = await presence.typing_slot(self.redis, cid, me, self.typing_interval)
        if wait_ms is not None:
            raise TooManyRequests(
                "Typing notifications are limited to one per interval per conversation.",
                retry_after=math.ceil(max(wait_ms, 1) / 1000),
            )
        await self.publisher.publish_ephemeral(
            Typing(conversation_id=cid, data=UserRef(user_id=me)), recipients
        )
        resp.status = 204
