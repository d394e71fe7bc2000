"""The user check every authenticated request makes: the asks of one event-loop turn share one
read, and none is ever answered by a read sent before it asked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from api.deps import Deps
from chat.identity import standing
from chat.identity.standing import SharedReads, Standing
from chat.models import User
from tests.support import ApiClient


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[list[uuid.UUID]]:
    reads: list[list[uuid.UUID]] = []
    read = standing.user_standings

    async def counted(engine: AsyncEngine, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Standing]:
        reads.append(list(user_ids))
        return await read(engine, reads[-1])

    monkeypatch.setattr(standing, "user_standings", counted)
    return reads


async def test_asks_at_once_share_one_read_and_a_later_ask_sees_a_later_delete(
    api: ApiClient, deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [await api.user() for _ in range(20)]
    ids = [uuid.UUID(u.id) for u in users]
    reads = SharedReads(deps.reader)
    statements = count_reads(monkeypatch)

    answers = await asyncio.gather(*(reads.standing(i) for i in ids), reads.standing(uuid.uuid4()))
    assert answers == [Standing.ACTIVE] * 20 + [Standing.GONE]
    assert len(statements) == 1

    async with deps.engine.begin() as conn:
        await conn.execute(delete(User).where(User.id == ids[0]))
    assert await reads.standing(ids[0]) is Standing.GONE
    assert await reads.standing(ids[1]) is Standing.ACTIVE
    assert len(statements) == 3


async def test_a_waiter_that_gives_up_does_not_cancel_the_read_of_the_others(
    api: ApiClient, deps: Deps
) -> None:
    user = await api.user()
    reads = SharedReads(deps.reader)
    impatient = asyncio.ensure_future(reads.standing(uuid.UUID(user.id)))
    patient = asyncio.ensure_future(reads.standing(uuid.UUID(user.id)))
    await asyncio.sleep(0)
    impatient.cancel()
    assert await patient is Standing.ACTIVE
