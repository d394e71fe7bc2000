"""Which rooms (`chat.realtime.rooms`) a connecting user is in, read from Postgres.

The push process subscribes nothing per room (every process hears every room's feed); it needs to
know which of its users are in which room, to fan a room frame out to them, and a resume reads
those rooms' streams. A burst of reconnecting sockets shares one read per event-loop turn.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from chat.infra.failures import unavailable
from chat.infra.outage import Outage
from chat.infra.sharedreads import SharedReads
from chat.models import Participant

log = logging.getLogger("chat.realtime.roomlist")


async def rooms_of(engine: AsyncEngine, user_ids: set[uuid.UUID], members: int) -> dict[uuid.UUID, list[str]]:
    """Each user's conversations of `members` members or more (counted once a read, whoever asked)."""
    mine = (
        select(Participant.user_id, Participant.conversation_id)
        .where(Participant.user_id.in_(user_ids))
        .cte()
    )
    sizes = (
        select(Participant.conversation_id)
        .where(Participant.conversation_id.in_(select(mine.c.conversation_id)))
        .group_by(Participant.conversation_id)
        .having(func.count() >= members)
        .cte()
    )
    query = select(mine.c.user_id, mine.c.conversation_id).join(
        sizes, sizes.c.conversation_id == mine.c.conversation_id
    )
    found: dict[uuid.UUID, list[str]] = {user: [] for user in user_ids}
    async with engine.connect() as conn:
        for user, conversation in await conn.execute(query):
            found[user].append(str(conversation))
    return found


class RoomList:
    """`of(user)`: their rooms, or None while Postgres is away (the caller decides what then)."""

    def __init__(self, engine: AsyncEngine, members: int, timeout: float) -> None:
        self._reads: SharedReads[uuid.UUID, list[str]] = SharedReads(
            lambda wanted: rooms_of(engine, wanted, members)
        )
        self._timeout = timeout
        self._outage = Outage(log, "The database (room list)")

    async def of(self, user_id: uuid.UUID) -> list[str] | None:
        try:
            async with asyncio.timeout(self._timeout):
                rooms = await self._reads.get(user_id)
        except Exception as exc:
            if unavailable(exc) is None and not isinstance(exc, TimeoutError):
                raise
            self._outage.down(exc)
            return None
        self._outage.up()
        return rooms
