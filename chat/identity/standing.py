"""What the database says of the users tokens name: active, gone, or deactivated.

Every authenticated request asks, with no cache, so that a user deleted or deactivated a moment ago
is refused on the very next request. One read per request cost the api most of a core under load:
64 sends in flight wanted 64 connections at once, the pool's overflow opened and closed a
connection for each (1.3 ms of the api's CPU a message against 0.25 before). So the requests that
ask within one turn of the event loop share one read, `SELECT … WHERE id IN (…)`, on one
connection. A request only ever joins a read that has not been sent yet: what it is told was true
after it arrived.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from chat.infra import sharedreads
from chat.infra.failures import unavailable
from chat.models import User


class Standing(enum.Enum):
    ACTIVE = "active"
    GONE = "gone"  # no such user (deleted): the token is refused
    DEACTIVATED = "deactivated"  # deactivated or erased: refused, and told so (4403)
    UNCHECKED = "unchecked"  # Postgres is away: the token's signature alone vouches


def standing_of(deactivated_at: object, erased_at: object) -> Standing:
    return Standing.ACTIVE if deactivated_at is None and erased_at is None else Standing.DEACTIVATED


async def user_standings(engine: AsyncEngine, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Standing]:
    """One read for many users; `engine` should be an AUTOCOMMIT one (no transaction round trips)."""
    wanted = list(user_ids)
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # On the driver's own connection: SQLAlchemy's compile and result layers were most of
            # this read's CPU, and it runs for every authenticated request.
            raw: Any = (await conn.get_raw_connection()).driver_connection
            try:
                rows = await raw.fetch(_BY_IDS, wanted)
            except Exception as exc:
                if isinstance(exc, asyncpg.PostgresError) and unavailable(exc) is None:
                    raise  # the server answered, and refused: a bug, answered as one
                # A connection that broke under the read (Postgres stopped mid-query: asyncpg's
                # own InternalClientError, not one SQLAlchemy would have wrapped as a disconnect)
                # goes, and the outage is the caller's to ride out.
                await conn.invalidate()
                raise ConnectionResetError("the database connection broke during the user check") from exc
            found = {row[0]: standing_of(row[1], row[2]) for row in rows}
        else:
            query = select(User.id, User.deactivated_at, User.erased_at).where(User.id.in_(wanted))
            found = {r.id: standing_of(r.deactivated_at, r.erased_at) for r in await conn.execute(query)}
    return {user_id: found.get(user_id, Standing.GONE) for user_id in wanted}


_BY_IDS = "SELECT id, deactivated_at, erased_at FROM users WHERE id = ANY($1::uuid[])"


class SharedReads(sharedreads.SharedReads[uuid.UUID, Standing]):
    """`user_standings` for one user at a time, the asks of one event-loop turn sharing one read."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(lambda wanted: user_standings(engine, wanted))

    async def standing(self, user_id: uuid.UUID) -> Standing:
        return await self.get(user_id)
