"""The process's clients, built once by `build_deps`: create_app hands each resource the ones it
uses, and closes them all at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chat.domain.ratelimit import Limiter
from chat.domain.sequence import Sequencer
from chat.identity.security import Passwords, Tokens
from chat.infra.storage import Storage
from chat.jobqueue.accept import JobQueue
from chat.jobqueue.connection import ArqRedis
from chat.realtime.eventbus import Publisher
from chat.settings import Settings


@dataclass
class Deps:
    settings: Settings
    engine: AsyncEngine
    # The same pool without transactions, for single-statement reads on hot paths.
    reader: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    publisher: Publisher
    queue: JobQueue
    passwords: Passwords
    tokens: Tokens
    limiter: Limiter
    sequencer: Sequencer
    storage: Storage

    async def aclose(self) -> None:
        """Close every client this process opened (at shutdown, and where a test built them)."""
        await self.limiter.aclose()
        await self.redis.aclose(close_connection_pool=True)
        await self.engine.dispose()
