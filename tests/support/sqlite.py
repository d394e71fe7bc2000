"""The dev mode's database for store-level tests: an in-memory SQLite with one user, one group
and one message in it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from chat.models import Base, Conversation, Message, User


@dataclass(frozen=True)
class SqliteWorld:
    sessions: async_sessionmaker[AsyncSession]
    user: uuid.UUID
    conversation: uuid.UUID
    message: uuid.UUID  # seq 1, sent by `user`
    now: datetime


@asynccontextmanager
async def sqlite_world() -> AsyncIterator[SqliteWorld]:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    user, cid, mid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with sessions() as session:
        session.add(User(id=user, username="u", username_key="u", display_name="u", password_hash="-"))
        session.add(Conversation(id=cid, kind="group", created_by=user, created_at=now, last_activity_at=now))
        session.add(Message(id=mid, conversation_id=cid, seq=1, sender_id=user, body="first", created_at=now))
        await session.commit()
    try:
        yield SqliteWorld(sessions, user, cid, mid, now)
    finally:
        await engine.dispose()
