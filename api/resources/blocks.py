"""`/users/me/blocks`: the users I blocked. A blocked user cannot open a direct conversation with
me or send into ours (403); each change re-seeds our conversation's members in Redis, where the
send script reads it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from falcon.asgi import Request, Response
from redis.asyncio import Redis
from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.http import limit_param, path_uuid, send, time_cursor
from chat import cursors, membership
from chat.blocks import direct_key
from chat.db import upsert_insert
from chat.errors import NotFound, field_error
from chat.models import Block, Conversation, User


@dataclass(frozen=True, slots=True)
class Blocks:
    """`GET /users/me/blocks?limit&cursor`: `{items: [{user_id, created_at}], next_cursor}`,
    newest first."""

    sessions: async_sessionmaker[AsyncSession]

    async def on_get(self, req: Request, resp: Response) -> None:
        me = current_user(req)
        limit = limit_param(req)
        query = select(Block.blocked_id, Block.created_at).where(Block.blocker_id == me)
        after = time_cursor(req)
        if after is not None:
            query = query.where(tuple_(Block.created_at, Block.blocked_id) < after)
        query = query.order_by(Block.created_at.desc(), Block.blocked_id.desc()).limit(limit + 1)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        page = rows[:limit]
        cursor = cursors.encode_at(page[-1][1], page[-1][0]) if len(rows) > limit else None
        items = [{"user_id": user_id, "created_at": at} for user_id, at in page]
        send(resp, {"items": items, "next_cursor": cursor})


@dataclass(frozen=True, slots=True)
class BlockedUser:
    """`PUT` and `DELETE /users/me/blocks/{user_id}`: `204`, idempotent."""

    sessions: async_sessionmaker[AsyncSession]
    redis: Redis

    async def on_put(self, req: Request, resp: Response, user_id: str) -> None:
        me, other = current_user(req), path_uuid(user_id, "user")
        async with self.sessions() as session:
            await _check_other(session, me, other)
            values = {"blocker_id": me, "blocked_id": other, "created_at": datetime.now(UTC)}
            await session.execute(upsert_insert(session)(Block).values(values).on_conflict_do_nothing())
            await session.commit()
        await self._reseed(me, other)
        resp.status = 204

    async def on_delete(self, req: Request, resp: Response, user_id: str) -> None:
        me, other = current_user(req), path_uuid(user_id, "user")
        async with self.sessions() as session:
            await _check_other(session, me, other)
            await session.execute(delete(Block).where(Block.blocker_id == me, Block.blocked_id == other))
            await session.commit()
        await self._reseed(me, other)
        resp.status = 204

    async def _reseed(self, me: uuid.UUID, other: uuid.UUID) -> None:
        # After the commit: the next send into our direct conversation reads the members afresh.
        async with self.sessions() as session:
            cid = await session.scalar(
                select(Conversation.id).where(Conversation.direct_key == direct_key(me, other))
            )
        if cid is not None:
            await membership.changed(self.redis, cid)


async def _check_other(session: AsyncSession, me: uuid.UUID, other: uuid.UUID) -> None:
    """The same answers for a block and an unblock: 422 for myself, 404 for no such user."""
    if other == me:
        raise field_error("path.user_id", "You cannot block or unblock yourself.")
    if await session.get(User, other) is None:
        raise NotFound("No such user.")
