"""The users I blocked: list, block, unblock. A blocked user cannot open a direct conversation with
me or send into ours (403); each change re-seeds our conversation's members in Redis, where the
send script reads it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from chat.domain import cursors, membership
from chat.domain.blocks import direct_key
from chat.errors import NotFound, field_error
from chat.infra.db import Sessions, upsert_insert
from chat.models import Block, Conversation, User


async def list_blocked(
    sessions: Sessions, me: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of `{user_id, created_at}`, newest first, and the next page's cursor."""
    query = select(Block.blocked_id, Block.created_at).where(Block.blocker_id == me)
    if after is not None:
        query = query.where(tuple_(Block.created_at, Block.blocked_id) < after)
    query = query.order_by(Block.created_at.desc(), Block.blocked_id.desc()).limit(limit + 1)
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    page = rows[:limit]
    cursor = cursors.encode_at(page[-1][1], page[-1][0]) if len(rows) > limit else None
    return [{"user_id": user_id, "created_at": at} for user_id, at in page], cursor


async def block(sessions: Sessions, redis: Redis, me: uuid.UUID, other: uuid.UUID) -> None:
    """Idempotent."""
    async with sessions() as session:
        await _check_other(session, me, other)
        values = {"blocker_id": me, "blocked_id": other, "created_at": datetime.now(UTC)}
        await session.execute(upsert_insert(session)(Block).values(values).on_conflict_do_nothing())
        await session.commit()
    await _reseed(sessions, redis, me, other)


async def unblock(sessions: Sessions, redis: Redis, me: uuid.UUID, other: uuid.UUID) -> None:
    """Idempotent."""
    async with sessions() as session:
        await _check_other(session, me, other)
        await session.execute(delete(Block).where(Block.blocker_id == me, Block.blocked_id == other))
        await session.commit()
    await _reseed(sessions, redis, me, other)


async def _reseed(sessions: Sessions, redis: Redis, me: uuid.UUID, other: uuid.UUID) -> None:
    # After the commit: the next send into our direct conversation reads the members afresh.
    async with sessions() as session:
        cid = await session.scalar(
            select(Conversation.id).where(Conversation.direct_key == direct_key(me, other))
        )
    if cid is not None:
        await membership.changed(redis, cid)


async def _check_other(session: AsyncSession, me: uuid.UUID, other: uuid.UUID) -> None:
    """The same answers for a block and an unblock: 422 for myself, 404 for no such user."""
    if other == me:
        raise field_error("path.user_id", "You cannot block or unblock yourself.")
    if await session.get(User, other) is None:
        raise NotFound("No such user.")
